"""Walkthrough: one GroupQueryAttention forward pass, step by step, for the Playground's settings.

Axis letters: B batch, T query length, S key/value length, N query heads, K kv heads,
G = N // K, H head_dim, D model dim. The sidebar holds the same controls as the Playground
(``settings_controls``), so this page follows its current settings; a selectbox picks the
query head that every figure follows. The numbers are the real intermediates of
:func:`gqa_viz.playground.run` (an :class:`~gqa_viz.core.AttentionTrace`).
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from app_pages._controls import compute_key, settings_controls
from gqa_viz import codegen, playground, theme
from gqa_viz.figures import steps as F
from gqa_viz.settings import WALKTHROUGH_MAX_LEN, Settings

HEAD_KEY = "walkthrough_head"

AXES = (
    ("B", "batch"),
    ("T", "query length"),
    ("S", "key/value length"),
    ("N", "query heads"),
    ("K", "KV heads"),
    ("G", "query heads per KV head"),
    ("H", "head_dim"),
    ("D", "model dim"),
)


def _run(settings: Settings) -> playground.Result:
    with st.spinner("Running the forward pass…", show_time=True):
        return playground.cached_run(compute_key(settings))


def _plot(fig, key: str) -> None:
    st.plotly_chart(fig, key=key, theme=None, config={"displaylogo": False})


def _shapes(lines: list[tuple[str, str]], d: dict[str, int]) -> None:
    """A short list ``name: [letters] = [values]`` for the step's tensors."""
    st.markdown("\n".join(f"- `{name}` : `{F.shape_text(letters, d)}`" for name, letters in lines))


def _step(number: int, title: str):
    st.subheader(f"{number}. {title}", divider="gray")
    return st.columns([5, 7], gap="large")


def _rows_text(rows: np.ndarray, labels: list[str], limit: int = 8) -> str:
    shown = ", ".join(f"'{labels[i]}' (t={i})" for i in rows[:limit])
    return shown + (f", ... ({rows.size} in all)" if rows.size > limit else "")


def _mask_parts(s: Settings, T: int, S: int) -> list[str]:
    parts = []
    if s.causal:
        text = "**causal** (`use_causal_mask=True`): query t sees keys s ≤ t"
        if T != S:
            text += " (aligned top-left: with T < S the last keys are never seen)"
        parts.append(text)
    if s.window:
        parts.append(
            f"**sliding window** (`sliding_window={s.window}`): |t − s| < {s.window}, "
            f"i.e. {s.window - 1} key(s) on each side"
        )
    if s.pad:
        parts.append(
            "**query padding** (`query_mask`): a padded query attends to nothing (its whole row)"
        )
    key_pad = s.kpad if s.cross else s.pad
    if key_pad:
        parts.append(
            "**key padding** (`value_mask`): a padded key is hidden from every query (its column)"
        )
    return parts


# ---------------------------------------------------------------------------------------------

st.title("Walkthrough: one forward pass")
st.markdown(
    "One call of `keras.layers.GroupQueryAttention` with the **Playground's settings** "
    "(the sidebar), step by step: every shape below is the real shape, and every figure "
    "shows the real numbers for the query head you pick."
)

settings = settings_controls()
_, T_in, S_in = playground.input_shape(settings)
if max(T_in, S_in) > WALKTHROUGH_MAX_LEN:
    st.error(
        f"The Walkthrough draws every step at full resolution, for up to {WALKTHROUGH_MAX_LEN} "
        f"positions per axis; this input has T = {T_in}, S = {S_in}. Lower the query length T "
        "(and S) in the sidebar; the Playground shows lengths up to 2048.",
        icon="🚫",
    )
    st.stop()
try:
    result = _run(settings)
except ValueError as error:
    st.error(f"These settings cannot run: {error}", icon="🚫")
    st.stop()
s = result.settings
d = F.dims(result)
B, T, S, N, K, G, H, D = (d[c] for c in "BTSNKGHD")
item = s.item
q_labels, k_labels = result.q_labels, result.k_labels

for note in result.notes:
    if "no key to attend" not in note:  # explained at the mask and softmax steps
        st.info(note)

if st.session_state.get(HEAD_KEY, 0) >= N:
    st.session_state[HEAD_KEY] = 0
pick, axes = st.columns([2, 5], gap="large", vertical_alignment="bottom")
with pick:
    head = st.selectbox(
        "Query head to follow",
        list(range(N)),
        key=HEAD_KEY,
        format_func=lambda n: f"query head {n}  (reads KV head {n // G})",
        help="Every figure below shows this query head; K and V figures show the KV head it reads.",
    )
kv = head // G
group = list(range(kv * G, kv * G + G))
with axes:
    st.markdown(
        "| " + " | ".join(f"**{c}** = {d[c]}" for c, _ in AXES) + " |\n"
        "|" + " :-: |" * len(AXES) + "\n"
        "| " + " | ".join(f"<small>{m}</small>" for _, m in AXES) + " |",
        unsafe_allow_html=True,
    )
color = theme.group_color(kv)
st.markdown(
    f"Following <b style='color:{color}'>query head {head}</b>: it reads "
    f"<b style='color:{color}'>KV head {kv}</b>, shared with query heads "
    f"{', '.join(map(str, group))} (G = {G})." + (f" Batch item {item} of {B}." if B > 1 else ""),
    unsafe_allow_html=True,
)

query_in, value_in, *_ = playground.build_inputs(s, [])
mask = result.mask  # [T, S] for the shown item
empty_rows = np.flatnonzero(~mask.any(axis=1))
dropout_active = s.training and s.dropout > 0
n_step = 0


def next_step(title: str):
    global n_step
    n_step += 1
    return _step(n_step, title)


# 1. Inputs -------------------------------------------------------------------------------------
text, fig = next_step("Inputs")
with text:
    if s.mode == "sentence":
        st.markdown(
            "Each token is a D-dimensional vector: here one seeded random embedding per distinct "
            "word (no positions), so equal words have equal vectors. "
            + (
                "`<pad>` tokens are zero vectors, marked as padding. "
                if (s.pad or (s.cross and s.kpad))
                else ""
            )
        )
    else:
        st.markdown("Each position is a seeded random D-dimensional vector.")
    st.markdown(
        "In cross-attention the keys and values come from a second sequence of length S."
        if s.cross
        else "Self-attention: the same sequence supplies the queries, keys and values (S = T)."
    )
    shapes = [("query", "BTD")] + ([("value", "BSD")] if s.cross else [])
    _shapes(shapes, d)
    st.code(
        "layer(query, value)  # key defaults to value"
        if s.cross
        else "layer(query, query)  # self-attention: value (and key) = query",
        language="python",
        wrap_lines=True,
    )
with fig:
    _plot(
        F.inputs_figure(query_in[item], q_labels, value_in[item] if s.cross else None, k_labels),
        "wt_inputs",
    )

# 2. Projections --------------------------------------------------------------------------------
text, fig = next_step("Q, K, V projections")
with text:
    st.markdown(
        f"Three learned linear maps. The queries get **N = {N}** heads, but the keys and values "
        f"only **K = {K}**: that is the saving of grouped-query attention. K and V (and the "
        f"K/V cache when decoding) are G = {G} times smaller than with one per query head."
    )
    _shapes([("Q", "BTNH"), ("K", "BSKH"), ("V", "BSKH")], d)
    b = " + b" if s.bias else ""
    st.code(
        f'Q = einsum("btd,dnh->btnh", query, W_q){b}_q  # W_q [D, N, H]\n'
        f'K = einsum("bsd,dkh->bskh", key, W_k){b}_k    # W_k [D, K, H]\n'
        f'V = einsum("bsd,dkh->bskh", value, W_v){b}_v  # W_v [D, K, H]',
        language="python",
        wrap_lines=True,
    )
with fig:
    _plot(F.query_head_figure(result.item("query")[:, head, :], q_labels, head, kv), "wt_q")
    _plot(
        F.kv_figure(
            result.item("key")[:, kv, :], result.item("value")[:, kv, :], k_labels, kv, group
        ),
        "wt_kv",
    )

# 3. Sharing ------------------------------------------------------------------------------------
text, fig = next_step("Sharing: G query heads read one KV head")
with text:
    kind = (
        " (K = N: ordinary multi-head attention)"
        if K == N
        else (" (K = 1: multi-query attention)" if K == 1 else "")
    )
    st.markdown(
        f"Query head n reads KV head ⌊n / G⌋{kind}: heads 0..{G - 1} share KV head 0, and so "
        f"on. Keras repeats each K/V head G times (`ops.repeat`, the order of torch's "
        f"`repeat_interleave`); gqa_viz views Q as [B, T, K, G, H] instead, so nothing is "
        "copied."
    )
    _shapes([("Q viewed", "BTKGH"), ("K, V", "BSKH")], d)
    st.latex(rf"\mathrm{{kv}}(n) = \left\lfloor n / G \right\rfloor,\qquad G = {N} / {K} = {G}")
with fig:
    _plot(F.sharing_figure(N, K, head), "wt_sharing")

# 4. Logits -------------------------------------------------------------------------------------
text, fig = next_step("Logits: Q·Kᵀ / √H")
with text:
    st.markdown(
        "Every query of the head is compared with every key of its KV head by a dot product, "
        "divided by √H so the logits' spread does not grow with the head size. The mask is "
        "not applied yet."
    )
    _shapes([("logits", "BNTS")], d)
    st.latex(
        r"L_{n,t,s} = \frac{Q_{t,n} \cdot K_{s,\mathrm{kv}(n)}}{\sqrt{H}}"
        rf",\qquad \sqrt{{H}} = \sqrt{{{H}}} = {np.sqrt(H):.3g}"
    )
    st.code(
        'L = einsum("btkgh,bskh->bkgts", Q.reshape(B, T, K, G, H) / sqrt(H), K)\n'
        "L = L.reshape(B, N, T, S)",
        language="python",
        wrap_lines=True,
    )
with fig:
    _plot(F.logits_figure(result.item("logits")[head], q_labels, k_labels, head), "wt_logits")

# 5. Mask ---------------------------------------------------------------------------------------
text, fig = next_step("Mask")
with text:
    parts = _mask_parts(s, T, S)
    if parts:
        st.markdown(
            "Which (query, key) pairs may attend. Keras ANDs every mask of the call into one "
            "[T, S] mask per batch item, shared by all N heads:\n\n"
            + "\n".join(f"- {p}" for p in parts)
        )
    else:
        st.markdown("Nothing masks with these settings: every query sees all S keys.")
    m = result.trace.mask
    if m is not None:
        st.markdown(
            f"- `mask` : `[B or 1, T, S] = [{', '.join(map(str, np.shape(m)))}]` (True = attend)"
        )
    latex_parts = []
    if s.causal:
        latex_parts.append(r"[\,s \le t\,]")
    if s.window:
        latex_parts.append(rf"[\,|t - s| < {s.window}\,]")
    if s.pad:
        latex_parts.append(r"m^{q}_{t}")
    if s.kpad if s.cross else s.pad:
        latex_parts.append(r"m^{v}_{s}")
    if latex_parts:
        st.latex(r"M_{t,s} = " + r" \wedge ".join(latex_parts))
    if empty_rows.size:
        st.info(
            f"{empty_rows.size} query row(s) have **no allowed key**: "
            f"{_rows_text(empty_rows, q_labels)}. See the softmax step for what they return."
        )
with fig:
    _plot(F.mask_figure(mask, q_labels, k_labels), "wt_mask")

# 6. Softmax ------------------------------------------------------------------------------------
text, fig = next_step("Softmax")
with text:
    st.markdown(
        "Masked logits are replaced by −10⁹ and each row goes through a softmax, so masked "
        "keys "
        "get probability 0 and a row's allowed probabilities sum to 1. These are the `scores` "
        "Keras returns with `return_attention_scores=True`."
    )
    _shapes([("probs", "BNTS")], d)
    st.latex(
        r"P_{n,t,s} = \frac{e^{L_{n,t,s}}}{\sum_{s' : M_{t,s'}} e^{L_{n,t,s'}}}"
        r"\ \text{ if } M_{t,s},\quad 0 \text{ otherwise}"
    )
    if empty_rows.size:
        st.warning(
            f"**Rows with no allowed key** ({_rows_text(empty_rows, q_labels, 4)}): there is "
            "nothing to normalize over. Keras with `return_attention_scores=True` (or with "
            "dropout > 0) gives them probabilities 0, so their context is 0 and their output is "
            "just the output bias; this page shows that. Keras' fused path (no scores, dropout "
            "0) instead averages **all** S values, masked ones included."
        )
    if not dropout_active:
        why = (
            f"`dropout={s.dropout:g}` acts only with training on"
            if s.dropout > 0
            else "`dropout=0`"
        )
        st.caption(
            f"No dropout step here ({why}): the probabilities go straight to the weighted sum."
        )
with fig:
    _plot(F.probs_figure(result.item("probs")[head], mask, q_labels, k_labels, head), "wt_probs")

# 7. Dropout ------------------------------------------------------------------------------------
if dropout_active:
    text, fig = next_step("Dropout")
    with text:
        st.markdown(
            f"Training with `dropout={s.dropout:g}`: each probability is dropped with "
            f"probability {s.dropout:g} and the kept ones are scaled by 1 / (1 − {s.dropout:g}), "
            "so whole (query, key) links disappear. A row no longer sums to 1, only on average."
        )
        _shapes([("dropped probs", "BNTS")], d)
        st.latex(
            r"\tilde P = \frac{P \odot \xi}{1 - p},\quad \xi_{n,t,s} \sim "
            rf"\mathrm{{Bernoulli}}(1 - p),\ p = {s.dropout:g}"
        )
        st.caption("gqa_viz draws ξ from JAX's PRNG (seeded); Keras' own draws differ.")
    with fig:
        _plot(
            F.dropout_figure(
                result.item("dropped_probs")[head],
                result.item("probs")[head],
                mask,
                q_labels,
                k_labels,
                head,
                s.dropout,
            ),
            "wt_dropout",
        )

# 8. Weighted sum -------------------------------------------------------------------------------
p_name = r"\tilde P" if dropout_active else "P"
text, fig = next_step("Weighted sum of values" + (", then the gate" if s.gate else ""))
with text:
    st.markdown(
        "Each query's context is the probability-weighted average of its KV head's value "
        "vectors: the G query heads of a group mix the same values with different weights."
        + (
            " With `use_gate=True` a sigmoid gate computed from the query input scales the "
            "context elementwise."
            if s.gate
            else ""
        )
    )
    _shapes([("context", "BTNH")] + ([("gate", "BTNH")] if s.gate else []), d)
    st.latex(rf"C_{{t,n}} = \sum_{{s}} {p_name}_{{n,t,s}}\, V_{{s,\mathrm{{kv}}(n)}}")
    if s.gate:
        st.latex(
            r"C \leftarrow C \odot \sigma(\mathrm{query}\, W_g" + (" + b_g)" if s.bias else ")")
        )
with fig:
    context = result.item("context")[:, head, :]
    gate = ungated = None
    if s.gate:
        gate = result.item("gate")[:, head, :]
        weights = result.item("dropped_probs")[head].astype(np.float64)
        ungated = weights @ result.item("value")[:, kv, :].astype(np.float64)
    _plot(F.context_figure(context, q_labels, head, kv, gate, ungated), "wt_context")

# 9. Output -------------------------------------------------------------------------------------
text, fig = next_step("Output projection")
with text:
    st.markdown(
        f"The N = {N} head contexts ({N} × {H} = {N * H} features per position) are projected "
        f"back to the model dim D = {D} and summed over heads: the output has the query's shape."
    )
    _shapes([("W_O", "NHD"), ("output", "BTD")], d)
    st.code(
        'out = einsum("btnh,nhd->btd", C, W_O)' + (" + b_O" if s.bias else "") + "  # [B, T, D]",
        language="python",
        wrap_lines=True,
    )
    if empty_rows.size:
        st.caption(
            "Rows with no allowed key have context 0, so their output is "
            + ("the output bias b_O." if s.bias else "0 (use_bias=False).")
        )
with fig:
    _plot(F.output_figure(result.item("output"), q_labels), "wt_output")

# The same call in code -------------------------------------------------------------------------
st.header("The same call in code", divider="gray")
st.markdown(
    "Three snippets generated for these settings. Each runs as it is once its NumPy arrays "
    "are defined: `query`, `value` [B, T or S, D], `query_mask` / `value_mask` (True = real "
    "token) and `weights` (Keras' `get_weights()` order) for Keras; the projected `q` "
    "[B, T, N, H] and `k`, `v` [B, S, K, H] for JAX and PyTorch. "
    "`gqa_viz.codegen.snippet_inputs(gqa_viz.playground.run(settings))` builds them; the "
    "tests run every snippet against this page's numbers."
)
tab_keras, tab_jax, tab_torch = st.tabs(["Keras", "JAX", "PyTorch"])
with tab_keras:
    st.code(codegen.keras_snippet(s), language="python")
with tab_jax:
    st.code(codegen.jax_snippet(s), language="python")
with tab_torch:
    st.code(codegen.torch_snippet(s), language="python")
