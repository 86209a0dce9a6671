# gqa-viz on CPU: the Streamlit app with JAX's compilation cache filled at build time.
#
#   docker build -t gqa-viz .          (or `make docker`)
#   docker run --rm -p 8501:8501 gqa-viz
#
# The GPU image is deploy/Dockerfile.gpu; Kubernetes manifests and notes are in deploy/.
FROM python:3.11.14-slim-bookworm

# PYTHONDONTWRITEBYTECODE: the app's files belong to root and Kubernetes mounts the root
# filesystem read-only, so there is nowhere to write .pyc files at run time.
# No file watcher: the code never changes inside a running container.
# MALLOC_ARENA_MAX=2: every Streamlit session runs its script in a thread of its own, and
# glibc's per-thread heaps kept freed memory (about a fifth of the resident memory in
# bench/load.py's measurements).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STREAMLIT_SERVER_FILE_WATCHER_TYPE=none \
    MALLOC_ARENA_MAX=2 \
    GQA_VIZ_JAX_CACHE_DIR=/opt/gqa-viz/jax-cache

# A fixed UID/GID, so Kubernetes' runAsUser/fsGroup and volume ownership can name it.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app \
    && mkdir -p /opt/gqa-viz/jax-cache \
    && chown app:app /opt/gqa-viz/jax-cache

WORKDIR /app

# Runtime pins only (requirements-dev.txt is for tests). A layer of its own, so editing the
# app does not reinstall JAX.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

# The app's files stay owned by root: the app user can read them, not change them.
COPY app.py ./
COPY app_pages/ app_pages/
COPY gqa_viz/ gqa_viz/
COPY assets/ assets/
COPY .streamlit/ .streamlit/

USER 10001:10001

# Compile the programs the app prewarms (about 190 XLA executables, ~3 MB) into
# GQA_VIZ_JAX_CACHE_DIR, so a fresh container loads them from disk in seconds instead of
# compiling for ~40 s on 2 cores.
# Caveat: XLA compiles CPU programs for the CPU of the machine that runs this build. JAX's
# cache key includes the CPU features XLA targets (through the CPU topology fingerprint),
# so on a host whose CPU differs the keys simply do not match: JAX compiles those programs
# again at run time and adds them to the cache, and the image still works, only without
# the head start. (An entry that cannot be loaded is a warning and a recompile, not an error.)
# The key also includes the cache directory's path, so the container must use the cache at
# this same path (deploy/k8s mounts its writable copy here).
RUN python -m gqa_viz.app.warm

EXPOSE 8501

# slim has no curl; python's urllib does the request. Exit 0 only on HTTP 200 "ok".
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; r = urllib.request.urlopen('http://localhost:8501/_stcore/health', timeout=4); sys.exit(0 if r.read().strip() == b'ok' else 1)"]

CMD ["streamlit", "run", "app.py", "--server.port=8501", "--server.address=0.0.0.0", "--server.headless=true"]
