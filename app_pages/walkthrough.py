"""Walkthrough: one GroupQueryAttention forward pass, step by step, for the Playground's settings.

Axis letters: B batch, T query length, S key/value length, N query heads, K kv heads,
G = N // K, H head_dim, D model dim. The sidebar holds the same controls as the Playground
(``settings_controls``), so this page follows its current settings; a selectbox picks the
query head that every figure follows. The numbers are the real intermediates of
:func:`gqa_viz.app.playground.run` (an :class:`~gqa_viz.core.AttentionTrace`), through
:func:`gqa_viz.app.walkthrough.run`; the prose is in ``assets/text/walkthrough.md``.
"""

from __future__ import annotations

import streamlit as st

from app_pages._chart import chart
from app_pages._controls import compute_key, settings_controls
from app_pages._layout import wrapping_row
from gqa_viz.app import codegen
from gqa_viz.app import walkthrough as wt
from gqa_viz.figures import steps as F
from gqa_viz.figures import theme

HEAD_KEY = "walkthrough_head"
TEXT = wt.text()

AXES = (
    ("B", "batch"),
    ("T", "query length"),
    ("S", "key/value length"),
    ("N", "query heads"),
    ("K", "K/V heads"),
    ("G", "query heads per K/V head"),
    ("H", "head_dim"),
    ("D", "model dim"),
)


def _step_figure(name: str) -> None:  # drawn once for every session showing this view
    chart(wt.figure(walk, name, head), key=f"wt_{name}")


def _shapes(lines: list[tuple[str, str]], d: dict[str, int]) -> None:
    """A short list ``name: [letters] = [values]`` for the step's tensors."""
    st.markdown("\n".join(f"- `{name}` : `{F.shape_text(letters, d)}`" for name, letters in lines))


def _step(number: int, title: str):
    st.subheader(f"{number}. {title}", divider="gray")
    return wrapping_row(f"wt_step_{number}", (5, 300), (7, 400), gap="large")  # text, figure


# ---------------------------------------------------------------------------------------------

st.title("Walkthrough: one forward pass")
st.markdown(TEXT["intro"])

settings = settings_controls()
try:
    with st.spinner("Running the forward pass…", show_time=True):
        walk = wt.run(compute_key(settings))
except wt.TooLong as error:
    st.error(str(error), icon="🚫")
    st.stop()
except ValueError as error:
    st.error(f"These settings cannot run: {error}", icon="🚫")
    st.stop()
s = walk.settings
d = F.dims(walk.result)
B, T, S, N, K, G, H, D = (d[c] for c in "BTSNKGHD")
q_labels, k_labels = walk.result.q_labels, walk.result.k_labels
empty_rows = walk.empty_rows

for note in walk.notes:
    st.info(note)

if st.session_state.get(HEAD_KEY, 0) not in range(N):  # also a value the box never offered
    st.session_state[HEAD_KEY] = 0
pick, axes = wrapping_row("wt_axes", (2, 260), (5, 560), gap="large", align="bottom")
with pick:
    head = st.selectbox(
        "Query head to follow",
        list(range(N)),
        key=HEAD_KEY,
        format_func=lambda n: f"query head {n}  (reads K/V head {n // G})",
        help="Every figure below shows this query head; K and V figures show the K/V head it reads.",
    )
one = walk.follow(head)
kv = one.kv
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
    f"<b style='color:{color}'>K/V head {kv}</b>, shared with query heads "
    f"{', '.join(map(str, one.group))} (G = {G})."
    + (f" Batch item {s.item} of {B}." if B > 1 else ""),
    unsafe_allow_html=True,
)
n_step = 0


def next_step(title: str):
    global n_step
    n_step += 1
    return _step(n_step, title)


def layer_step(step: wt.Step) -> None:
    """A step a real layer adds to Keras' (QK-norm, RoPE, soft-cap): wt.layer_steps."""
    text, fig = next_step(step.title)
    with text:
        st.markdown(step.text)
        _shapes(step.shapes, d)
        st.latex(step.latex)
    with fig:
        for i, figure in enumerate(step.figures):
            chart(figure, key=f"wt_{step.key}_{i}")


# 1. Inputs -------------------------------------------------------------------------------------
text, fig = next_step("Inputs")
with text:
    if s.weights == "real":
        st.markdown(TEXT["inputs_real"].format(layer=s.layer, model=s.model))
    elif s.mode == "sentence":
        pad = s.pad or (s.cross and s.kpad)
        st.markdown(TEXT["inputs_sentence"] + (" " + TEXT["inputs_pad"] if pad else ""))
    else:
        st.markdown(TEXT["inputs_random"])
    st.markdown(TEXT["inputs_cross"] if s.cross else TEXT["inputs_self"])
    _shapes([("query", "BTD")] + ([("value", "BSD")] if s.cross else []), d)
    st.code(
        "layer(query, value)  # key defaults to value"
        if s.cross
        else "layer(query, query)  # self-attention: value (and key) = query",
        language="python",
        wrap_lines=True,
    )
with fig:
    _step_figure("inputs")

# 2. Projections --------------------------------------------------------------------------------
text, fig = next_step("Q, K, V projections")
with text:
    real_steps = " " + TEXT["projections_real"] if walk.stages else ""
    st.markdown(TEXT["projections"].format(N=N, K=K, G=G) + real_steps)
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
    _step_figure("q")
    _step_figure("kv")
for extra in wt.layer_steps(walk, one):  # a real layer's QK-norm and RoPE
    layer_step(extra)

# 3. Sharing ------------------------------------------------------------------------------------
text, fig = next_step("Sharing: G query heads read one K/V head")
with text:
    kind = (
        " (K = N: ordinary multi-head attention)"
        if K == N
        else (" (K = 1: multi-query attention)" if K == 1 else "")
    )
    st.markdown(TEXT["sharing"].format(kind=kind, last=G - 1))
    _shapes([("Q viewed", "BTKGH"), ("K, V", "BSKH")], d)
    st.latex(rf"\mathrm{{kv}}(n) = \left\lfloor n / G \right\rfloor,\qquad G = {N} / {K} = {G}")
with fig:
    _step_figure("sharing")

# 4. Logits -------------------------------------------------------------------------------------
scaled, latex, _, by = wt.logits_text(walk.result.spec)
text, fig = next_step("Logits: Q·Kᵀ / √H" if not scaled else "Logits: Q·Kᵀ × s")
with text:
    st.markdown(TEXT["logits"] + (" " + scaled if scaled else ""))
    _shapes([("logits", "BNTS")], d)
    st.latex(latex)
    st.code(
        f'L = einsum("btkgh,bskh->bkgts", Q.reshape(B, T, K, G, H) {by}, K)\n'
        "L = L.reshape(B, N, T, S)",
        language="python",
        wrap_lines=True,
    )
with fig:
    _step_figure("logits")
if (softcap := wt.softcap_step(walk, one)) is not None:
    layer_step(softcap)

# 5. Mask ---------------------------------------------------------------------------------------
text, fig = next_step("Mask")
with text:
    parts = wt.mask_parts(s, T, S)
    if parts:
        st.markdown(TEXT["mask"] + "\n\n" + "\n".join(f"- {p}" for p in parts))
    else:
        st.markdown(TEXT["mask_none"])
    if walk.mask_shape is not None:
        shape = ", ".join(map(str, walk.mask_shape))
        st.markdown(f"- `mask` : `[B or 1, T, S] = [{shape}]` (True = attend)")
    latex = wt.mask_latex(s)
    if latex:
        st.latex(latex)
    if empty_rows.size:
        rows = wt.rows_text(empty_rows, q_labels)
        st.info(TEXT["mask_empty_rows"].format(count=empty_rows.size, rows=rows))
with fig:
    _step_figure("mask")

# 6. Softmax ------------------------------------------------------------------------------------
text, fig = next_step("Softmax")
with text:
    st.markdown(TEXT["softmax"])
    _shapes([("probs", "BNTS")], d)
    st.latex(  # two lines (cases): one line is wider than the text column
        r"P_{n,t,s} = \begin{cases} \dfrac{e^{L_{n,t,s}}}{\sum_{s' : M_{t,s'}} e^{L_{n,t,s'}}}"
        r" & \text{if } M_{t,s} \\ 0 & \text{otherwise} \end{cases}"
    )
    if empty_rows.size:
        rows = wt.rows_text(empty_rows, q_labels, 4)
        st.warning(TEXT["softmax_empty_rows"].format(rows=rows))
    if not walk.dropout_active:
        why = (
            f"`dropout={s.dropout:g}` acts only with training on"
            if s.dropout > 0
            else "`dropout=0`"
        )
        st.caption(
            f"No dropout step here ({why}): the probabilities go straight to the weighted sum."
        )
with fig:
    _step_figure("probs")

# 7. Dropout ------------------------------------------------------------------------------------
if walk.dropout_active:
    text, fig = next_step("Dropout")
    with text:
        st.markdown(TEXT["dropout"].format(p=f"{s.dropout:g}"))
        _shapes([("dropped probs", "BNTS")], d)
        st.latex(
            r"\tilde P = \frac{P \odot \xi}{1 - p},\quad \xi_{n,t,s} \sim "
            rf"\mathrm{{Bernoulli}}(1 - p),\ p = {s.dropout:g}"
        )
        st.caption("gqa_viz draws ξ from JAX's PRNG (seeded); Keras' own draws differ.")
    with fig:
        _step_figure("dropout")

# 8. Weighted sum -------------------------------------------------------------------------------
p_name = r"\tilde P" if walk.dropout_active else "P"
text, fig = next_step("Weighted sum of values" + (", then the gate" if s.gate else ""))
with text:
    st.markdown(TEXT["weighted_sum"] + (" " + TEXT["gate"] if s.gate else ""))
    _shapes([("context", "BTNH")] + ([("gate", "BTNH")] if s.gate else []), d)
    st.latex(rf"C_{{t,n}} = \sum_{{s}} {p_name}_{{n,t,s}}\, V_{{s,\mathrm{{kv}}(n)}}")
    if s.gate:
        st.latex(
            r"C \leftarrow C \odot \sigma(\mathrm{query}\, W_g" + (" + b_g)" if s.bias else ")")
        )
with fig:
    _step_figure("context")

# 9. Output -------------------------------------------------------------------------------------
text, fig = next_step("Output projection")
with text:
    st.markdown(TEXT["output"].format(N=N, H=H, NH=N * H, D=D))
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
    _step_figure("output")

# The same call in code -------------------------------------------------------------------------
st.header("The same call in code", divider="gray")
st.markdown(TEXT["code"])
tab_keras, tab_jax, tab_torch = st.tabs(["Keras", "JAX", "PyTorch"])
with tab_keras:
    st.code(codegen.keras_snippet(s), language="python")
with tab_jax:
    st.code(codegen.jax_snippet(s), language="python")
with tab_torch:
    st.code(codegen.torch_snippet(s), language="python")
