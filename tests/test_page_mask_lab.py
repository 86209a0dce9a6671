"""The Mask Lab page under Streamlit's AppTest, run through app.py's st.navigation.

app.py runs once before ``switch_page``: the page's url_path ("mask-lab") differs from its
file name, which AppTest resolves only after st.navigation has registered the pages.
Figures are read back from the charts' protos (arrays in them are base64).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from gqa_viz.app.limits import MAX_UPLOAD_BYTES
from gqa_viz.figures.heads import head_maps
from gqa_viz.figures.shipping import array_of as _array
from gqa_viz.figures.shipping import trace_meta
from tests.apptest_pages import open_page

PAGE = "app_pages/mask_lab.py"
TIMEOUT = 90
T = 11  # tokens of the default sentence


def _app(**query) -> AppTest:
    at = open_page(PAGE, TIMEOUT, **query)
    _ok(at)
    return at


def _ok(at: AppTest, errors: bool = False) -> None:
    assert not at.exception, [e.value for e in at.exception]
    if not errors:
        assert not at.error, [e.value for e in at.error]
    assert at.title[0].value == "Mask Lab"


def _chart(at: AppTest, title_part: str) -> dict:
    found = [
        json.loads(c.proto.spec)
        for c in at.get("plotly_chart")
        if title_part in json.loads(c.proto.spec)["layout"]["title"]["text"]
    ]
    assert len(found) == 1, (
        title_part,
        [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")],
    )
    return found[0]


def _titles(at: AppTest) -> list[str]:
    return [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]


def _badges(fig: dict) -> list[str]:
    return [
        a["text"].replace("<b>", "").replace("</b>", "").replace("<br>", " ")
        for a in fig["layout"]["annotations"]
        if str(a.get("name", "")).startswith("panel ")
    ]


def _panel(fig: dict, i: int) -> np.ndarray:
    """Panel i of a mask figure as a bool [T, S] (its 'attend' cells, code 1)."""
    cells = {
        trace_meta(d)["code"]: _array(d["z"])
        for d in fig["data"]
        if trace_meta(d).get("role") == "cells" and trace_meta(d)["panel"] == i
    }
    assert cells, f"no panel {i}"
    if 1 not in cells:
        return np.zeros(next(iter(cells.values())).shape, bool)
    return ~np.isnan(cells[1])


def _text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def _npy(array, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


CAUSAL = np.tril(np.ones((T, T), bool))


def test_defaults_render():
    at = _app()
    titles = _titles(at)
    assert titles == [
        "Your mask, piece by piece",
        "Attention probabilities with the final mask",
        "What a block-sparse kernel sees",
        "Causal alignment with T = 4 queries and S = 7 keys",
        "One window, w = 3: what each library makes of it",
        "How Keras merges the masks of this call",
    ]  # no padding: no implicit-mask figure
    fig = _chart(at, "piece by piece")
    assert _badges(fig) == ["sidebar: causal", "document(split every 4)", "final mask"]
    doc = np.kron(np.eye(3, dtype=bool), np.ones((4, 4), bool))[:T, :T]
    np.testing.assert_array_equal(_panel(fig, 0), CAUSAL)
    np.testing.assert_array_equal(_panel(fig, 1), doc)
    np.testing.assert_array_equal(_panel(fig, 2), CAUSAL & doc)
    # The scores use the final mask: masked cells are NaN in head 0's scores.
    heads = _chart(at, "with the final mask")
    panels = head_maps(heads)
    assert list(panels) == list(range(8))
    np.testing.assert_array_equal(~np.isnan(panels[0].z), CAUSAL & doc)
    metrics = {m.label: m.value for m in at.metric}
    allowed = int((CAUSAL & doc).sum())
    assert metrics["allowed pairs"] == f"{allowed} / {T * T}"
    assert metrics["fully masked rows"] == "0" and metrics["single-key rows"] == "3"
    assert "skippable" in " ".join(metrics)
    text = _text(at)
    assert "3 row(s) with a single key" in text and "`the`@0 → `the`@0" in text
    assert "no fully masked rows" in text
    assert "| `use_causal_mask` | `True` | `[1, T, S] = [1, 11, 11]` |" in text
    assert "| `attention_mask` |" in text
    assert "use_causal_mask=True" in at.code[0].value
    assert "attention_mask=attention_mask" in at.code[0].value
    assert [b.label for b in at.get("download_button")] == [
        "final mask (.npy)",
        "final mask (.csv)",
    ]
    assert "T = S = 11, so the two coincide" in text
    assert "No mask uploaded yet" in " ".join(c.value for c in at.caption)
    assert any("No padding on this input" in i.value for i in at.info)


def test_a_second_visitor_gets_the_figures_drawn_for_the_first():
    from gqa_viz.app.figure_cache import FIGURES

    first = _app()
    built = FIGURES.misses
    second = _app()
    assert FIGURES.misses == built  # the same view: every figure comes from the shared cache
    specs = [c.proto.spec for c in second.get("plotly_chart")]
    assert specs == [c.proto.spec for c in first.get("plotly_chart")]
    tiles = second.selectbox(key="ml_block")
    tiles.set_value(next(o for o in tiles.options if o != tiles.value)).run()
    _ok(second)
    assert FIGURES.misses == built + 1  # only the block figure depends on the tile size
    assert _chart(second, "block-sparse") != _chart(first, "block-sparse")


@pytest.mark.parametrize(
    ("kind", "params", "badge"),
    [
        ("prefix_lm", {"ml_prefix": 5}, "prefix_lm(5)"),
        ("document", {"ml_doc_every": 3}, "document(split every 3)"),
        ("causal_window", {"ml_cw_window": 2}, "causal_window(2)"),
        ("dilated_window", {"ml_dil_dilation": 3}, "dilated_window(2, 3)"),
        ("block_sparse", {"ml_bs_global": 2}, "block_sparse(4, local_blocks=1, global_tokens=2)"),
        (
            "causal_bottom_right",
            {"ml_neg_causal_bottom_right": True},
            '~causal(align="bottom_right")',
        ),
    ],
)
def test_each_component_once(kind, params, badge):
    at = _app()
    at.multiselect(key="ml_components").set_value([kind]).run()
    _ok(at)
    for key, value in params.items():
        widget = at.checkbox(key=key) if key.startswith("ml_neg") else at.number_input(key=key)
        widget.set_value(value).run()
        _ok(at)
    fig = _chart(at, "piece by piece")
    assert _badges(fig) == ["sidebar: causal", badge, "final mask"]
    np.testing.assert_array_equal(_panel(fig, 2), CAUSAL & _panel(fig, 1))


def test_negated_bottom_right_causal_leaves_fully_masked_rows():
    # causal & ~causal = nothing: every row is fully masked; the page explains what that means.
    at = _app()
    at.multiselect(key="ml_components").set_value(["causal_bottom_right"]).run()
    at.checkbox(key="ml_neg_causal_bottom_right").check().run()
    _ok(at)
    assert {m.label: m.value for m in at.metric}["fully masked rows"] == str(T)
    text = _text(at)
    assert f"{T} fully masked row(s)" in text and "uniform average over all S keys" in text
    assert "checked: the rows below equal the bias" in text
    table = at.dataframe[0].value
    assert len(table) == T and "‖output‖ Keras fused (uniform)" in table.columns
    fig = _chart(at, "piece by piece")
    rows = [d for d in fig["data"] if trace_meta(d).get("role") == "rows"]
    fully = [d for d in rows if trace_meta(d)["what"] == "fully"][0]
    assert len(fully["y"]) == T


def test_two_components_or_and_document_ids():
    at = _app()
    at.multiselect(key="ml_components").set_value(["prefix_lm", "document"]).run()
    at.radio(key="ml_combine").set_value("or").run()
    _ok(at)
    fig = _chart(at, "piece by piece")
    ops = [a["text"] for a in fig["layout"]["annotations"] if str(a.get("name")).startswith("op ")]
    assert ops == ["<b>&</b>", "<b>|</b>", "<b>=</b>"]
    np.testing.assert_array_equal(_panel(fig, 3), CAUSAL & (_panel(fig, 1) | _panel(fig, 2)))
    # Document ids as text: a wrong count is an error naming T; the page keeps running.
    at.radio(key="ml_doc_mode").set_value("ids").run()
    _ok(at)
    assert at.text_input(key="ml_doc_ids").value == "0,0,0,0,1,1,1,1,2,2,2"
    at.text_input(key="ml_doc_ids").input("0,0,1").run()
    _ok(at, errors=True)
    assert len(at.error) == 1 and "T = 11" in at.error[0].value
    assert _badges(_chart(at, "piece by piece")) == ["sidebar: causal", "final mask"]
    at.text_input(key="ml_doc_ids").input("0 0 0 0 0 1 1 1 1 1 1").run()
    _ok(at)
    assert "document(0,0,0,0,0,1,1,1,1,1,1)" in _badges(_chart(at, "piece by piece"))[2]


def test_components_survive_a_page_switch():
    # Streamlit drops the state of widgets a page stops drawing (and a browser may send a
    # stale value back): the page keeps its own copy. Checked in Chromium as well.
    at = _app()
    at.multiselect(key="ml_components").set_value(["prefix_lm", "block_sparse"]).run()
    at.number_input(key="ml_prefix").set_value(6).run()
    at.switch_page("app_pages/home.py").run()
    at.switch_page(PAGE).run()
    _ok(at)
    badges = _badges(_chart(at, "piece by piece"))
    assert badges[1] == "prefix_lm(6)" and badges[2].startswith("block_sparse(")
    assert at.number_input(key="ml_prefix").value == 6


# ---------------------------------------------------------------------------------------------
# Uploads.

GOOD = np.triu(np.ones((T, T), bool), 1)  # torch's causal: True = ignore
BAD = {
    "pickled object array": (
        "bad.npy",
        _npy(np.array([[1] * T] * T, dtype=object), allow_pickle=True),
        "pickled",
    ),
    "wrong shape": ("bad.npy", _npy(np.ones((T, T + 1), bool)), "expected shape"),
    "non-0/1 values": ("bad.npy", _npy(np.full((T, T), 0.5)), "0/1"),
    "non-numeric csv": ("bad.csv", ("1," * (T - 1) + "x\n").encode() * T, "not a number"),
    "too large": ("big.npy", b"\x93NUMPY" + bytes(MAX_UPLOAD_BYTES), "the limit is 2"),
}


def _upload(at: AppTest, name: str, data: bytes) -> None:
    at.file_uploader(key="ml_file").set_value((name, data, "application/octet-stream")).run()


def test_good_upload_shows_both_readings():
    at = _app()
    _upload(at, "torch_causal.npy", _npy(GOOD))
    _ok(at)
    radio = [r for r in at.radio if str(r.key).startswith("ml_conv_")][0]
    assert radio.value == "ignore_bool"  # the all-0 diagonal
    assert any("Auto-detected **ignore_bool**" in c.value for c in at.caption)
    fig = _chart(at, "read two ways")
    assert _badges(fig) == ["read as ignore_bool", "read as keep_bool (inverted)"]
    np.testing.assert_array_equal(_panel(fig, 0), ~GOOD)
    np.testing.assert_array_equal(_panel(fig, 1), GOOD)
    bars = [d for d in fig["data"] if trace_meta(d).get("role") == "side"]
    assert len(bars) == 1 and _array(bars[0]["x"]).shape == (T,)
    assert "the layer's output changes on" in _text(at)
    table = at.table[0].value
    assert "torch nn.MultiheadAttention (need_weights=True, the default)" in list(
        table["framework"]
    )
    # Read the other way, the last query has no key left: listed for each framework.
    radio.set_value("keep_bool").run()
    _ok(at)
    assert "leaves 1 query row(s) with no key: `tired`@10" in _text(at)
    # The uploaded mask as a component, read as keep_bool now.
    at.multiselect(key="ml_components").set_value(["uploaded"]).run()
    _ok(at)
    fig = _chart(at, "piece by piece")
    assert _badges(fig)[1] == "uploaded [11×11]"
    np.testing.assert_array_equal(_panel(fig, 1), GOOD)


@pytest.mark.parametrize("case", BAD)
def test_bad_upload_errors_and_keeps_the_previous_mask(case):
    at = _app()
    _upload(at, "good.npy", _npy(GOOD))
    _ok(at)
    name, data, message = BAD[case]
    _upload(at, name, data)
    _ok(at, errors=True)
    assert len(at.error) == 1 and message in at.error[0].value, at.error[0].value
    assert any("Still using the previous mask, **good.npy**" in c.value for c in at.caption)
    assert at.session_state["ml_upload"]["name"] == "good.npy"
    fig = _chart(at, "read two ways")
    np.testing.assert_array_equal(_panel(fig, 0), ~GOOD)
    # The error stays while the bad file sits in the uploader; another rerun does not clear it.
    at.run()
    assert len(at.error) == 1


def test_download_uploads_back():
    at = _app()
    csv = at.get("download_button")[1]
    assert csv.proto.HasField("deferred_file_id") or csv.proto.url
    from gqa_viz.app import mask_lab

    data = mask_lab.matrix_csv(CAUSAL)
    _upload(at, "mask.csv", data)
    _ok(at)
    radio = [r for r in at.radio if str(r.key).startswith("ml_conv_")][0]
    assert radio.value == "keep_bool"


# ---------------------------------------------------------------------------------------------
# T != S, padding.


def test_cross_attention_shows_the_alignment_comparison():
    at = _app(attn="cross")  # 11 queries, 7 keys
    fig = _chart(at, "Causal alignment with T = 11 queries and S = 7 keys")
    assert _badges(fig)[:2] == ["top-left: j ≤ i (Keras)", "bottom-right: j ≤ i − 4"]
    tl = np.tril(np.ones((11, 7), bool))
    br = np.tril(np.ones((11, 7), bool), k=-4)
    np.testing.assert_array_equal(_panel(fig, 0), tl)
    np.testing.assert_array_equal(_panel(fig, 1), br)
    only_tl = [
        d for d in fig["data"] if trace_meta(d).get("panel") == 2 and trace_meta(d).get("code") == 1
    ][0]
    np.testing.assert_array_equal(~np.isnan(_array(only_tl["z"])), tl & ~br)
    assert "KV-cache decoding" in _text(at)
    assert "bottom-right leaves the first 4 queries with no key" in _text(at)
    rows = [d for d in fig["data"] if trace_meta(d).get("role") == "rows"]
    fully = [d for d in rows if trace_meta(d)["what"] == "fully"][0]
    assert [y.split(" @")[1] for y in fully["y"]] == ["0", "1", "2", "3"]


def test_padding_and_embedding_masks():
    at = _app(pad="2")
    text = _text(at)
    assert "2 fully masked row(s)" in text and "`<pad>`@11, `<pad>`@12" in text
    assert "Padding makes **2 fully masked row(s)**" in text
    ids = at.dataframe[-1].value
    assert list(ids["id"])[-3:] == [8, 0, 0]
    assert list(ids["query_mask"])[-3:] == [True, False, False]
    assert "query_mask=query_mask" in at.code[0].value
    fig = _chart(at, "derives from the token ids")
    assert _badges(fig) == ["query_mask → [T, 1]", "value_mask → [1, S]", "implicit mask"]
    assert _badges(_chart(at, "piece by piece"))[0] == "sidebar: padding & causal"
    rows = [d for d in fig["data"] if trace_meta(d).get("role") == "rows"]
    assert [d["y"] for d in rows if trace_meta(d)["what"] == "fully"] == [
        ["'&lt;pad&gt;' @11", "'&lt;pad&gt;' @12"]
    ]
