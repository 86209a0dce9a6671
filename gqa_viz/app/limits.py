"""Every limit of the app, in one place: sizes a visitor can ask for, uploads, memory.

Pages show these numbers in their widgets and messages; library and figure functions that
need a cap take it as an argument and are called with these. A limit is named ``MAX_*`` (or
``*_MAX_*`` for one page's own), and no other module defines one (a test checks).
"""

from __future__ import annotations

import os


def _env_int(name: str, default: int) -> int:
    """A positive integer the operator set in the environment, else ``default``."""
    raw = os.environ.get(name, "").strip().replace("_", "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else default


# --- The Playground's controls (gqa_viz/app/settings.py clamps URL values into these) -------
MAX_QUERY_HEADS = 64
MAX_HEAD_DIM = 256
MAX_MODEL_DIM = 4096
MAX_LEN = 2048  # T and S (random inputs)
MAX_TOKENS = 64  # words in a sentence input
MAX_TEXT_CHARS = 1000
MAX_BATCH = 8
MAX_DROPOUT = 0.9
MAX_SEED = 2**31 - 1

# --- Work per request -------------------------------------------------------------------
# Scores one forward pass may hold, B x N x T x S: 32 heads at T = S = 2048. The trace keeps
# logits and probabilities of this size (512 MiB each in float32).
MAX_SCORE_CELLS = 32 * 2048 * 2048
# Above this many scores a computation is "heavy": it waits for the server's one heavy-work
# slot (gqa_viz/app/cache.py), so several large requests run one after another while small
# ones (the classroom's usual 10-300 tokens) never queue behind them. 16 heads at T = S = 512.
HEAVY_SCORE_CELLS = 16 * 512 * 512
MASK_LAB_MAX_LEN = 512  # T and S on the Mask Lab, whose per-pair tools scale with T x S
WALKTHROUGH_MAX_LEN = 256  # T and S on the Walkthrough, whose step figures are full-resolution
# Scores on the KV sharing page, B x N x T x S: it runs the layer twice for every K dividing N
# and keeps every probability map (64 heads at T = S = 256: about 5 s and 220 MiB on 2 cores).
KV_SHARING_MAX_SCORE_CELLS = 64 * 256 * 256
MASK_LAB_MAX_DOCUMENT_TEXT = 4000  # Mask Lab: characters of a document-ids text
# The KV calculator's controls (gqa_viz/app/kv_calculator.py clamps URL values into these):
# arithmetic only, so generous. 16M tokens is beyond every published context window; 1,000 TB
# of memory and 1,000 TB/s hold a rack of GPUs; 100,000B parameters any model published.
KV_CALCULATOR_MAX_TOKENS = 2**24
KV_CALCULATOR_MAX_BATCH = 65_536
KV_CALCULATOR_MAX_GPU_GB = 1_000_000.0
KV_CALCULATOR_MAX_BANDWIDTH_GB_S = 1_000_000.0
KV_CALCULATOR_MAX_PARAMS_BILLION = 100_000.0
# A model typed in on the KV sharing page (its layers are bounded by MAX_CONFIG_LAYERS): the
# largest published models have 128 query heads and heads of 256.
KV_CALCULATOR_MAX_HEADS = 512
KV_CALCULATOR_MAX_HEAD_DIM = 1024
# The Decode page (gqa_viz/app/decode.py clamps URL values into these). The shipped tiny models
# learned 20-24 positions, so a run is shorter still (prompt + new tokens - 1 <= the model's
# position table); these bound what a URL may ask of a longer model. A run of the tiny models
# is a few hundred kB and, once its programs are compiled, a few ms. A run compiles one step
# program per prefill chunk length C and one for its C = 1 steps, for its model and cache
# capacity (a full cache's is the model's position table; a bounded one's sinks + window), and
# shares them with every run of the same model, C and capacity: new tokens, window and sinks
# are data. They count toward MAX_PROGRAMS_IN_MEMORY.
MAX_DECODE_NEW_TOKENS = 64
MAX_DECODE_PROMPT_TOKENS = 64  # prompt length and prefill chunk
MAX_DECODE_CAPACITY = 128  # cache slots of a bounded cache: window (+ sinks)

# --- Figures ------------------------------------------------------------------------------
# Cells one figure draws (all heads or panels together); bigger maps are downsampled, and a
# zoomed region must fit at full resolution.
MAX_DRAWN_CELLS = 250_000
MAX_BLOCK_TILES = 1024  # Mask Lab's block figure outlines each tile up to this many
# Playground downloads: the long-format CSV has N x T x S rows; beyond this, .npy only. A
# bigger .npy is refused (the server builds it in memory).
MAX_CSV_ROWS = 2_000_000
MAX_NPY_BYTES = 256 * 2**20

# --- Uploads ------------------------------------------------------------------------------
# In MB. Streamlit enforces it first: .streamlit/config.toml's server.maxUploadSize must say
# the same (a test checks).
MAX_UPLOAD_MB = 2
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 2**20
MAX_MASK_ELEMENTS = 512 * 512 * 8  # B * T * S of an uploaded mask
# Uploaded weights: values per array, in all, and attention layers per file. A 2 MB file can
# unpack to far more (compression, aliases), so these bound what reading it may allocate.
MAX_UPLOAD_ARRAY_VALUES = 4 * 2**20
MAX_UPLOAD_VALUES = 16 * 2**20
MAX_UPLOAD_LAYERS = 16
UPLOAD_VIEW_MAX_LEN = 128  # Trained heads: length of the random input an uploaded layer is shown on
MAX_PROMPT_CHARS = 400  # Trained heads: a typed prompt
# An uploaded config.json (KV-cache calculator): real ones are a few KiB; the largest real
# decoders have ~130 layers, so 1,024 layers bounds what reading one may build.
MAX_CONFIG_BYTES = 256 * 2**10
MAX_CONFIG_LAYERS = 1024
# Any integer in an uploaded config, either way: 2**53 (floats count integers exactly up to
# it) is beyond every real field, yet small enough that the calculator's products of a few of
# them (parameters, bytes) stay far inside a float.
MAX_CONFIG_INT = 2**53

# --- Server memory ------------------------------------------------------------------------
# The results cache shared by every session and page of one server process: all results
# together stay within 1.5 GiB, which holds one run at the size limit (logits and
# probabilities, 512 MiB each) beside many small ones. The last result over the budget is
# kept apart, beside it (gqa_viz/app/cache.py), so its own reruns do not compute it again.
# One of several workers (`make run`, scripts/serve.py, sets GQA_VIZ_WORKERS) gets 256 MiB, so
# that each stays under 1.5 GiB in all while a class explores views of the usual sizes (one
# large view adds itself on top). GQA_VIZ_RESULT_MEMORY_BYTES, when the operator sets it, wins.
WORKERS = _env_int("GQA_VIZ_WORKERS", 1)
MAX_RESULT_BYTES = _env_int(
    "GQA_VIZ_RESULT_MEMORY_BYTES", int(1.5 * 2**30) if WORKERS == 1 else 256 * 2**20
)
# Frozen figures shared by every session (gqa_viz/app/figure_cache.py): their arrays and
# strings together, least recently used dropped first. 64 MiB holds the Walkthrough's figures
# for a few hundred views of the usual sizes; a worker of several gets half.
MAX_FIGURE_BYTES = _env_int("GQA_VIZ_FIGURE_MEMORY_BYTES", (64 if WORKERS == 1 else 32) * 2**20)
# Compiled programs held in memory (the bucketed attention programs and the Decode page's
# step programs, gqa_viz.buckets.note_program), about 6 MB each on a CPU. Many visitors
# exploring many head counts and lengths would otherwise keep adding programs for as long as
# the server runs; past the limit JAX's in-memory caches are emptied and programs load again
# from the persistent compilation cache (tens of ms each) as they are used. Prewarming
# makes 116. A real checkpoint's forward pass is one program per model, K', chosen layers
# and 16-token length bucket (gqa_viz/checkpoints/model.py), counted here too.
MAX_PROGRAMS_IN_MEMORY = 160
# JAX's persistent compilation cache on disk; least recently used programs are evicted.
MAX_COMPILATION_CACHE_BYTES = 512 * 2**20

# --- Real checkpoints (gqa_viz/checkpoints, gqa_viz/app/checkpoint_cache.py) ----------------
# The operator may raise or lower the parameter cap with GQA_VIZ_MAX_PARAMS (an integer); the
# default admits Llama-3.2-1B and Qwen2.5-1.5B in float32 on a 16 GB machine.
MAX_CHECKPOINT_PARAMS = _env_int("GQA_VIZ_MAX_PARAMS", 2_000_000_000)
MAX_CHECKPOINT_LAYERS = 128
# Loaded checkpoints kept in memory, shared by all sessions: one model by default (a second
# pick replaces the first), and never more than these bytes of weights together.
MAX_RESIDENT_CHECKPOINTS = _env_int("GQA_VIZ_RESIDENT_MODELS", 1)
MAX_RESIDENT_CHECKPOINT_BYTES = _env_int("GQA_VIZ_MODEL_MEMORY_BYTES", 8 * 2**30)
# A prompt on the Real models page: tokens, and the characters typed. Every layer's
# probabilities are kept, L x N x T x T of them, at most MAX_REAL_SCORE_CELLS (128 MiB in
# float32): SmolLM2-135M (30 x 9 heads) and Llama-3.2-1B (16 x 32) both run 128 tokens.
MAX_REAL_PROMPT_TOKENS = 128
MAX_REAL_PROMPT_CHARS = 2000
MAX_REAL_SCORE_CELLS = 32 * 2**20
# A model name read from the URL: longer than any listed one (a repo id is at most 96), so a
# longer value is not looked up at all.
MAX_REAL_MODEL_NAME_CHARS = 200
# The Real models page's shipped passage (assets/text/passage_alice.txt): its loss is measured
# on its first tokens, at most this many (a forward pass without probabilities for every K'; at
# 256 tokens about 1 s each for SmolLM2-135M on 2 cores).
REAL_PASSAGE_MAX_TOKENS = 256

# --- Shipped assets -----------------------------------------------------------------------
# The tiny trained models in assets/trained, all files together (`make train` refuses more):
# they live in the repository and in every image.
MAX_TRAINED_ASSET_BYTES = 4 * 2**20
