"""What the Decode page computes: a tiny trained model generating its task's answer step by step
with a KV cache. No Streamlit here.

Axis letters as in :mod:`gqa_viz.decode`: C new tokens of a step (the chunk), S_max cache slots,
N query heads, K kv heads, G = N // K, H head_dim, L layers.

* :class:`DecodeSettings`: everything the page's URL holds (model, prompt seed and length, new
  tokens, prefill chunk, cache policy, window, sinks, layer shown, step, bandwidth), with its URL
  form (:func:`from_query_params`, :func:`to_query_params`) and the check of widget values
  (:func:`sanitize`), like the KV calculator's.
* :func:`plan`: the settings resolved against the chosen model (its position table bounds the
  prompt and the new tokens; its layers bound the layer), plus one message per value changed.
* :func:`run`: the :class:`~gqa_viz.decode.Generation` of a plan (and, for a bounded cache, the
  full cache's, to show where they part), through the server's shared, bounded results cache
  (:data:`gqa_viz.app.playground.RESULTS`). Sessions keep no cache of their own: every step
  shown is read from the run of the URL's state; moving the step, the layer or the bandwidth
  computes nothing new.
* :func:`step_view`: what the page shows of one step; :func:`bytes_table`: the bytes every step
  reads (:func:`gqa_viz.decode.step_bytes`, :mod:`gqa_viz.kv_cache`'s formulas: one source);
  :func:`cache_history`: which position every slot holds after every step, and how much each
  K/V head's query heads read it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from gqa_viz import decode, tasks, trained
from gqa_viz.app import url_state
from gqa_viz.app.figure_cache import shared
from gqa_viz.app.kv_calculator import GPUS
from gqa_viz.app.limits import (
    KV_CALCULATOR_MAX_BANDWIDTH_GB_S,
    MAX_DECODE_CAPACITY,
    MAX_DECODE_NEW_TOKENS,
    MAX_DECODE_PROMPT_TOKENS,
    MAX_DRAWN_CELLS,
    MAX_SEED,
)
from gqa_viz.app.playground import RESULTS
from gqa_viz.figures import decode as figures
from gqa_viz.figures.decode import CODE_NAMES
from gqa_viz.figures.shipping import FrozenFigure

__all__ = [
    "CODES",
    "DEFAULTS",
    "POLICY_NAMES",
    "VARIANTS",
    "CacheHistory",
    "DecodeRun",
    "DecodeSettings",
    "Plan",
    "StepView",
    "bytes_table",
    "cache_history",
    "cache_text",
    "default_prompt_length",
    "from_query_params",
    "mask_history",
    "parting",
    "plan",
    "run",
    "sanitize",
    "step_text",
    "step_view",
    "to_query_params",
    "tokens_text",
]

POLICY_NAMES = {
    "full": "full: keep every token",
    "rolling": "rolling: the last w tokens",
    "sink": "sink: the first s and the last w",
}
# The kv-head counts step_bytes compares, in the order the page lists them.
VARIANTS = {"mha": "MHA", "configured": "this model", "mqa": "MQA"}
# What a cell of a step's mask is, by absolute key position (the mask figure's codes).
FUTURE, DROPPED, OUTSIDE, ATTENDED = range(4)
CODES = dict(enumerate(CODE_NAMES))  # as the mask figure names them


def _default_model() -> str:
    names = trained.names()
    return "copy-k2" if "copy-k2" in names else (names[0] if names else "")


@dataclass(frozen=True)
class DecodeSettings:
    """What the Decode page's URL holds. Field names are the URL parameters.

    ``prompt`` 0 and ``new`` 0 mean "the default for this model" (the task's question, and as
    many new tokens as its position table allows); ``chunk`` 0 the whole prompt in one step;
    ``step`` 0 the first decode step. ``step`` counts from 1 over the run's steps (prefill
    chunks, then decode steps). ``window`` counts for the rolling and sink caches, ``sinks``
    for the sink cache only. ``bw`` is the memory bandwidth in GB/s.
    """

    model: str = _default_model()
    seed: int = 0
    prompt: int = 0
    new: int = 0
    chunk: int = 0
    policy: str = "full"
    window: int = 8
    sinks: int = 2
    layer: int = 1  # the attention layer shown (every shipped model has 2)
    step: int = 0
    bw: float = GPUS["h100"].bandwidth_gb_s  # an H100 SXM's, as decode.step_bytes assumes


DEFAULTS = DecodeSettings()

# Numeric fields: (lowest, highest, the name messages use).
RANGES: dict[str, tuple[Any, Any, str]] = {
    "seed": (0, MAX_SEED, "prompt seed (seed)"),
    "prompt": (0, MAX_DECODE_PROMPT_TOKENS, "prompt length (prompt)"),
    "new": (0, MAX_DECODE_NEW_TOKENS, "new tokens (new)"),
    "chunk": (0, MAX_DECODE_PROMPT_TOKENS, "prefill chunk (chunk)"),
    "window": (1, MAX_DECODE_CAPACITY, "window w (window)"),
    "sinks": (1, MAX_DECODE_CAPACITY - 1, "sinks s (sinks)"),
    "layer": (0, None, "layer"),  # the model's layers bound it (plan)
    "step": (1, MAX_DECODE_PROMPT_TOKENS + MAX_DECODE_NEW_TOKENS, "step"),
    "bw": (1.0, KV_CALCULATOR_MAX_BANDWIDTH_GB_S, "memory bandwidth in GB/s (bw)"),
}


# Defaults that stand for "automatic", as a message names them when a URL value is ignored.
DEFAULT_MEANINGS = {
    "prompt": "0 (the task's question)",
    "new": "0 (as many as the model's positions allow)",
    "chunk": "0 (the whole prompt at once)",
    "step": "the first decode step",
}


def _check(name: str, value: Any) -> tuple[Any, str | None]:
    """(the value as its field's type, within its limits; what was wrong with it, or None).
    Raises ValueError for a value that cannot be read as its type or choice."""
    if name == "model":
        if value not in trained.names():
            raise ValueError(f"expected a shipped model: {', '.join(trained.names())}")
        return value, None
    if name == "policy":
        if value not in POLICY_NAMES:
            raise ValueError(f"expected one of {', '.join(POLICY_NAMES)}")
        return value, None
    lo, hi, what = RANGES[name]
    return url_state.clamp(url_state.number(float if name == "bw" else int, value), lo, hi, what)


def _capacity_check(values: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A sink cache of s + w slots within MAX_DECODE_CAPACITY: the window gives way."""
    s, w = values["sinks"], values["window"]
    if values["policy"] != "sink" or s + w <= MAX_DECODE_CAPACITY:
        return {}, None
    fixed = MAX_DECODE_CAPACITY - s
    return {"window": fixed}, (
        f"a sink cache holds sinks + window = {s} + {w} = {s + w} slots, more than "
        f"{MAX_DECODE_CAPACITY}; using window {fixed}"
    )


def from_query_params(params: dict[str, Any]) -> tuple[DecodeSettings, list[str]]:
    """Settings from URL parameters (a list per name, or one value), plus one message per value
    that was changed or ignored. Parameters of other pages are ignored without a message."""
    names = [f.name for f in fields(DecodeSettings)]
    values, messages = url_state.read_params(params, DEFAULTS, names, _check, DEFAULT_MEANINGS)
    settings = replace(DEFAULTS, **values)
    changed, why = _capacity_check(asdict(settings))
    if why:
        messages.append(f"{why}.")
    return replace(settings, **changed), messages


def to_query_params(s: DecodeSettings) -> dict[str, str]:
    """The URL form of ``s``: the step always, the rest where it differs from the defaults."""
    out = {}
    for name, value in asdict(s).items():
        if name != "step" and value == getattr(DEFAULTS, name):
            continue
        if isinstance(value, float):
            out[name] = str(int(value)) if value.is_integer() else repr(value)
        else:
            out[name] = str(value)
    return out


def sanitize(values: dict[str, Any], current: DecodeSettings) -> tuple[dict[str, Any], list[str]]:
    """Widget values checked like URL values (:func:`gqa_viz.app.url_state.sanitize`), then the
    sink cache's capacity."""
    changed, messages = url_state.sanitize(values, current, _check)
    merged = {**asdict(current), **values, **changed}
    more, why = _capacity_check(merged)
    if why:
        changed.update(more)
        messages.append(f"{why}.")
    return changed, messages


# ---------------------------------------------------------------------------------------------
# The run a view needs.


def default_prompt_length(task: str, tokens: np.ndarray) -> int:
    """The task's question: its tokens up to and including the first answer position (where
    the model's next token is the first one the task determines), e.g. 13 for copy (12
    symbols and '|')."""
    answers = np.nonzero(tasks.answer_keys(task, tokens) >= 0)[0]
    return int(answers[0]) + 1 if answers.size else len(tokens)


@dataclass(frozen=True)
class Plan:
    """The settings resolved against a model: what :func:`run` computes (hashable: its key)."""

    model: str
    seed: int
    prompt_len: int  # T
    new_tokens: int
    chunk: int  # C of the prefill, 1 .. T
    policy: decode.CachePolicy | None  # None: full, its capacity the model's position table
    layer: int
    step: int  # 1-based, within the run's steps
    positions: int  # the model's learned positions (its position table's rows)

    @property
    def prefill_steps(self) -> int:
        return -(-self.prompt_len // self.chunk)

    @property
    def steps(self) -> int:
        return self.prefill_steps + self.new_tokens - 1

    @property
    def key(self) -> tuple:
        return ("decode", self.model, self.seed, self.prompt_len, self.new_tokens, self.chunk,
                self.policy)  # fmt: skip


def _policy(s: DecodeSettings) -> decode.CachePolicy | None:
    if s.policy == "rolling":
        return decode.CachePolicy.of("rolling", window=s.window)
    if s.policy == "sink":
        return decode.CachePolicy.of("sink", window=s.window, sinks=s.sinks)
    return None


def plan(s: DecodeSettings, quiet_step: bool = False) -> tuple[Plan, list[str]]:
    """``s`` resolved against its model, and one message per value it changed (a prompt
    longer than the model's position table, a layer or a step the run does not have).

    ``quiet_step``: a step past the run's last becomes the last without a message (the step
    of a run the visitor has just made shorter, not a value the URL asked for).
    """
    messages = []
    model = trained.load(s.model)
    cfg = model.cfg
    rows = int(model.params["position_embedding"].shape[0])
    drawn = trained.prompt(cfg.task, s.seed)  # [seq_len]
    T = s.prompt or default_prompt_length(cfg.task, drawn)
    longest = min(rows, len(drawn))
    if T > longest:
        messages.append(
            f"prompt length must be between 1 and {longest} for {s.model} (it learned {rows} "
            f"positions); got {T}, using {longest}."
        )
        T = longest
    room = rows - T + 1  # the last new token is not fed back
    new = s.new or min(room, MAX_DECODE_NEW_TOKENS)
    if new > room:
        messages.append(
            f"new tokens must be between 1 and {room} after a {T}-token prompt: {s.model} "
            f"learned {rows} positions and the last new token is not fed back; got {new}, "
            f"using {room}."
        )
        new = room
    chunk = T if s.chunk == 0 else min(s.chunk, T)
    layers = cfg.num_layers
    layer = s.layer
    if layer >= layers:
        messages.append(
            f"layer must be between 0 and {layers - 1} for {s.model}; got {layer}, using "
            f"{layers - 1}."
        )
        layer = layers - 1
    p = Plan(s.model, s.seed, T, new, chunk, _policy(s), layer, 1, rows)
    step = s.step or min(p.prefill_steps + 1, p.steps)
    if step > p.steps and not quiet_step:
        messages.append(
            f"step must be between 1 and {p.steps} for this run ({p.prefill_steps} prefill "
            f"and {p.steps - p.prefill_steps} decode steps); got {step}, using {p.steps}."
        )
    step = min(step, p.steps)
    return replace(p, step=step), messages


@dataclass(frozen=True)
class DecodeRun:
    """A run's steps, and the full cache's run of the same prompt for a bounded cache."""

    generation: decode.Generation
    reference: decode.Generation | None  # the full cache's, when the policy is bounded
    model: str
    task: str
    vocab: tuple[str, ...]

    @property
    def tokens(self) -> np.ndarray:
        """[T + new] the prompt and the generated tokens."""
        return self.generation.tokens[0]

    def names(self, tokens) -> list[str]:
        return [self.vocab[t] for t in np.asarray(tokens).tolist()]


def _compute(p: Plan) -> DecodeRun:
    model = trained.load(p.model)
    prompt = trained.prompt(model.cfg.task, p.seed)[: p.prompt_len]
    gen = decode.generate(
        model.params, model.cfg, prompt, p.new_tokens, chunk=p.chunk,
        policy=p.policy if p.policy is not None else "full",
    )  # fmt: skip
    ref = None
    if p.policy is not None:
        ref = decode.generate(model.params, model.cfg, prompt, p.new_tokens, chunk=p.chunk)
    return DecodeRun(gen, ref, p.model, model.cfg.task, tuple(tasks.token_names(model.cfg.task)))


def run(p: Plan) -> DecodeRun:
    """The run of ``p`` through the server's shared results cache (treat it as read-only):
    every session asking for the same run reads one copy, computed once."""
    return RESULTS.get(p.key, lambda: _compute(p), heavy=False)


# ---------------------------------------------------------------------------------------------
# One step, as the page shows it.


@dataclass(frozen=True)
class StepView:
    """Step ``index`` (1-based) of a run, at one layer. Positions are absolute."""

    index: int
    count: int
    kind: str  # "prefill" or "decode"
    offset: int  # the position of the step's first token: query i sits at offset + i
    chunk: int  # C
    length: int  # tokens seen after the step
    q_tokens: list[str]  # [C] the tokens fed
    k_tokens: list[str]  # [length] the tokens at positions 0 .. length - 1
    probs: np.ndarray  # [N, C, length] the layer's attention of the step's queries
    codes: np.ndarray  # [C, length] a CODES key per cell
    prediction: str  # the argmax after the step's last position
    generated: bool  # whether that prediction is a generated token (else the prompt goes on)
    cache_before: list[int]  # [S_max] position per slot before the step, -1 empty
    cache_after: list[int]  # [S_max] after it
    kept: list[int]  # positions held after the step (CachePolicy.kept)
    dropped: list[int]  # positions seen and no longer held (CachePolicy.dropped)
    cached_tokens: int  # tokens the step reads from the cache (before it; capped at capacity)

    @property
    def query_positions(self) -> list[int]:
        return list(range(self.offset, self.offset + self.chunk))

    @property
    def mask(self) -> np.ndarray:
        """[C, length] True where the step attended."""
        return self.codes == ATTENDED


def _codes(st: decode.Step) -> np.ndarray:
    """[C, length] what the step did with each key position, for each of its queries."""
    out = st.out
    C, length = st.tokens.shape[1], st.length
    key_pos = np.asarray(out.key_positions)
    allowed = decode.probs_by_position(np.asarray(out.allowed, np.float32), key_pos, length) > 0
    held = np.zeros(length, bool)  # a key column of the step holds it (a slot or the chunk)
    held[key_pos[key_pos >= 0]] = True
    q = length - C + np.arange(C)[:, None]  # [C, 1] query i sits at offset + i
    p = np.arange(length)[None, :]  # [1, length]
    codes = np.where(p > q, FUTURE, np.where(~held, DROPPED, np.where(allowed, ATTENDED, OUTSIDE)))
    return codes.astype(np.int8)


def mask_history(r: DecodeRun) -> np.ndarray:
    """[Q, Q] every query row of the run (Q = tokens fed) by key position, each computed by
    its own step: :data:`CODES` keys (later positions are FUTURE)."""
    steps = r.generation.steps
    Q = steps[-1].length
    out = np.full((Q, Q), FUTURE, np.int8)
    for st in steps:
        C = st.tokens.shape[1]
        out[st.length - C : st.length, : st.length] = _codes(st)
    return out


def step_view(r: DecodeRun, index: int, layer: int) -> StepView:
    """What step ``index`` (1-based) fed, attended and kept, at layer ``layer``."""
    gen = r.generation
    steps = gen.steps
    if not 1 <= index <= len(steps):
        raise ValueError(f"step must be between 1 and {len(steps)}; got {index}.")
    st = steps[index - 1]
    out = st.out
    C = st.tokens.shape[1]
    offset = st.length - C
    length = st.length
    probs = decode.probs_by_position(out.probs[layer][0], out.key_positions, length)
    before = [-1] * gen.policy.capacity if index == 1 else steps[index - 2].cache_positions
    prefill = sum(s.kind == "prefill" for s in steps)
    nxt = int(np.argmax(out.logits[0, -1]))
    cap = gen.policy.capacity if gen.policy.bounded else offset
    return StepView(
        index=index,
        count=len(steps),
        kind=st.kind,
        offset=offset,
        chunk=C,
        length=length,
        q_tokens=r.names(st.tokens[0]),
        k_tokens=r.names(r.tokens[:length]),
        probs=probs,
        codes=_codes(st),
        prediction=r.vocab[nxt],
        generated=index >= prefill,
        cache_before=[int(x) for x in np.asarray(before).tolist()],
        cache_after=[int(x) for x in st.cache_positions.tolist()],
        kept=gen.policy.kept(length),
        dropped=gen.policy.dropped(length),
        cached_tokens=min(offset, cap),
    )


def bytes_table(r: DecodeRun, bandwidth_gb_s: float) -> list[dict]:
    """:func:`gqa_viz.decode.step_bytes` of every step (1 sequence, fp32 like the models), the
    cache as it was before the step: a chunk of C tokens reads the weights and that cache once
    for all C. Each row adds ``step`` (1-based), ``offset`` and ``cumulative`` (variant ->
    total bytes of steps 1 .. this one)."""
    gen = r.generation
    cfg = trained.load(r.model).cfg
    rows, running = [], {}
    for i, st in enumerate(gen.steps, start=1):
        offset = st.length - st.tokens.shape[1]
        row = decode.step_bytes(
            cfg, offset, policy=gen.policy, bandwidth_bytes_per_s=float(bandwidth_gb_s) * 1e9
        )
        for name in VARIANTS:
            running[name] = running.get(name, 0) + row[name]["total"]
        rows.append({**row, "step": i, "offset": offset, "cumulative": dict(running)})
    return rows


@dataclass(frozen=True)
class CacheHistory:
    """Every slot after every step, and how much each K/V head's query heads read it then."""

    positions: np.ndarray  # [S_max, steps] position held after each step, -1 empty
    attention: np.ndarray  # [K, S_max, steps] mean over the group's G query heads, last query
    evicted: np.ndarray  # [S_max, steps] the position the step overwrote there, -1 none
    sinks: int  # slots 0 .. sinks - 1 hold the sinks for good


def cache_history(r: DecodeRun, layer: int, kv_heads: int) -> CacheHistory:
    """The cache's slots over the run: what :func:`gqa_viz.decode.step` wrote where, and the
    attention each K/V head's group gave the position a slot holds, at the step's last query
    (0 for a position the step did not attend)."""
    gen = r.generation
    S, n = gen.policy.capacity, len(gen.steps)
    positions = np.stack([s.cache_positions for s in gen.steps], axis=1)  # [S_max, steps]
    previous = np.concatenate([np.full((S, 1), -1), positions[:, :-1]], axis=1)
    evicted = np.where((previous >= 0) & (previous != positions), previous, -1)
    attention = np.zeros((kv_heads, S, n), np.float32)
    for t, st in enumerate(gen.steps):
        by_pos = decode.probs_by_position(
            st.out.probs[layer][0, :, -1], st.out.key_positions, st.length
        )  # [N, length]
        groups = by_pos.reshape(kv_heads, -1, st.length).mean(axis=1)  # [K, length]
        held = positions[:, t] >= 0
        attention[:, held, t] = groups[:, positions[held, t]]
    return CacheHistory(positions, attention, evicted, gen.policy.sinks)


# ---------------------------------------------------------------------------------------------
# Words.


def _code(tokens) -> str:
    """Tokens as one markdown code span (the tasks' tokens are letters, digits, | = >)."""
    return "`" + " ".join(tokens) + "`" if tokens else "(none)"


def _ranges(positions: list[int]) -> str:
    """``[0, 1, 5, 6, 7]`` -> "0–1, 5–7"."""
    parts, start = [], None
    for i, p in enumerate(positions):
        if start is None:
            start = p
        if i + 1 == len(positions) or positions[i + 1] != p + 1:
            parts.append(str(start) if start == p else f"{start}–{p}")
            start = None
    return ", ".join(parts) if parts else "none"


def tokens_text(r: DecodeRun, p: Plan) -> str:
    """The prompt and what the model generated (and, for a bounded cache, what the full cache
    generates, and where the two part)."""
    names = r.names(r.tokens)
    T = p.prompt_len
    text = f"Prompt ({T} tokens): {_code(names[:T])}  \nGenerated: {_code(names[T:])}"
    if r.reference is not None:
        ref = r.names(r.reference.tokens[0])
        apart = parting(r)
        where = "the same tokens" if apart is None else f"they part at position {apart}"
        text += f"  \nWith a full cache: {_code(ref[T:])} ({where})."
    return text


def parting(r: DecodeRun) -> int | None:
    """The first position where a bounded cache's tokens differ from the full cache's."""
    if r.reference is None:
        return None
    apart = np.nonzero(r.tokens != r.reference.tokens[0])[0]
    return int(apart[0]) if apart.size else None


def step_text(v: StepView) -> str:
    """What step ``v`` feeds, where its queries sit, and what it predicts."""
    last = v.offset + v.chunk - 1
    where = f"position {v.offset}" if v.chunk == 1 else f"positions {v.offset}–{last}"
    what = (
        f"a prefill chunk of C = {v.chunk} prompt token{'s' if v.chunk > 1 else ''}"
        if v.kind == "prefill"
        else "a decode step: one generated token fed back"
    )
    nxt = "generates" if v.generated else "predicts (the prompt goes on regardless)"
    return (
        f"**Step {v.index} of {v.count}**: {what}, {_code(v.q_tokens)} at {where} "
        f"(offset {v.offset}: query i sits at {v.offset} + i). It reads {v.cached_tokens} cached "
        f"token{'s' if v.cached_tokens != 1 else ''} and {nxt} {_code([v.prediction])} for "
        f"position {last + 1}."
    )


def cache_text(v: StepView, policy: decode.CachePolicy) -> str:
    """The policy in a sentence, and the positions kept and dropped after step ``v``."""
    return (
        f"{policy.describe()}  \nAfter step {v.index} ({v.length} tokens seen): kept "
        f"{_ranges(v.kept)}; dropped {_ranges(v.dropped)}."
    )


# ---------------------------------------------------------------------------------------------
# The step's figures, each drawn once for every session showing it (gqa_viz.app.figure_cache):
# keyed by the run (the plan's key), the step and what else the figure follows.


def rows_chart(p: Plan, v: StepView, layer: int) -> FrozenFigure:
    """The step's new query rows in ``layer``: their attention, one row of panels per head."""

    def draw():
        title = f"Step {v.index}: the new query row{'s' if v.chunk > 1 else ''}, layer {layer}"
        kv_heads = trained.load(p.model).cfg.num_key_value_heads
        return figures.rows_figure(
            v.probs, v.mask, v.q_tokens, v.k_tokens, kv_heads, offset=v.offset, title=title,
            max_cells=MAX_DRAWN_CELLS,
        )  # fmt: skip

    return shared(("decode", "rows", p.key, v.index, layer), draw)


def mask_chart(p: Plan, r: DecodeRun, v: StepView) -> FrozenFigure:
    """Every query row of the run by key position, the step's rows marked."""

    def draw():
        first, end = v.offset, v.offset + v.chunk - 1
        rows = f"row: position {first}" if first == end else f"rows: positions {first}–{end}"
        return figures.mask_figure(
            mask_history(r), r.names(r.tokens), (first, end),
            title="Every query row of the run, by key position",
            subtitle=f"This step's {rows} (offset {v.offset}).",
        )  # fmt: skip

    return shared(("decode", "mask", p.key, v.index), draw)


def cache_chart(p: Plan, r: DecodeRun, v: StepView, layer: int) -> FrozenFigure:
    """The cache's slots after each step, shaded by ``layer``'s attention."""

    def draw():
        kv_heads = trained.load(p.model).cfg.num_key_value_heads
        hist, policy = cache_history(r, layer, kv_heads), r.generation.policy
        return figures.cache_figure(
            hist.positions, hist.attention, hist.evicted, r.names(r.tokens), v.index,
            sinks=hist.sinks, title=f"{policy.capacity} slots per K/V head, after each step",
            subtitle=f"Each of the K = {kv_heads} K/V heads of every layer keeps its own keys "
            f"and values of these positions; shade: layer {layer}.",
        )  # fmt: skip

    return shared(("decode", "cache", p.key, v.index, layer), draw)


def bytes_chart(p: Plan, r: DecodeRun, v: StepView, bandwidth_gb_s: float) -> FrozenFigure:
    """The bytes each step reads, the configured model against MHA and MQA."""

    def draw():
        table = bytes_table(r, bandwidth_gb_s)
        title = f"Bytes each step reads: {VARIANTS['configured']} against MHA and MQA"
        return figures.bytes_figure(
            table, v.index, title=title, subtitle=table[v.index - 1]["note"]
        )

    return shared(("decode", "bytes", p.key, v.index, bandwidth_gb_s), draw)


def first_visit() -> None:
    """Compute the run the page's first visit shows with the default settings, and draw the
    figures of its first step (prewarming)."""
    p = plan(DEFAULTS)[0]
    r = run(p)
    v = step_view(r, p.step, p.layer)
    rows_chart(p, v, p.layer)
    mask_chart(p, r, v)
    cache_chart(p, r, v, p.layer)
    bytes_chart(p, r, v, DEFAULTS.bw)
