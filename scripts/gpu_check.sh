#!/usr/bin/env bash
# make gpu-check: does this checkout run right, and how fast, on the machine's accelerator?
#
# Installs nothing: it runs with the python3 on PATH (or $PYTHON), i.e. whatever JAX and CUDA
# plugin the machine already carries (e.g. a GPU image with jax 0.11 and cuda13, no network).
# Needs jax, numpy, pytest and, for a few tests, h5py/optax; Keras-parity tests skip where
# Keras is absent. float32 matmuls are pinned to "highest", as the tests expect (GPUs default
# to TF32). Prints the device, runs the core tests, then bench.core --quick.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
export JAX_DEFAULT_MATMUL_PRECISION=highest XLA_PYTHON_CLIENT_PREALLOCATE=false
export KERAS_BACKEND=jax GQA_VIZ_PREWARM=0 PYTHONUNBUFFERED=1
"$PY" - <<'PY'
import platform, sys
import jax, numpy
try:
    import keras
    k = f"keras {keras.__version__}"
except ImportError:
    k = "no keras (parity tests skip)"
print(f"gpu-check: Python {platform.python_version()}, jax {jax.__version__}, numpy {numpy.__version__}, {k}")
print(f"gpu-check: backend {jax.default_backend()}, devices {[d.device_kind for d in jax.devices()]}")
if jax.default_backend() == "cpu":
    print("gpu-check: no accelerator found; running on the CPU", file=sys.stderr)
PY
"$PY" -m pytest -q -p no:cacheprovider -o addopts="" \
  tests/test_core.py tests/test_masks.py tests/test_buckets.py tests/test_decode.py \
  tests/test_reference.py tests/test_keras_parity.py ${GPU_CHECK_TESTS:-}
keras_flag=$("$PY" -c "import keras" 2>/dev/null && echo "" || echo "--no-keras")
"$PY" -m bench.core --quick $keras_flag
