"""The Trained heads page under Streamlit's AppTest, run through app.py's st.navigation."""

from __future__ import annotations

import html
import io
import json
import os

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")  # before keras is imported (the Makefile sets it)

import keras  # noqa: E402
import pytest  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from gqa_viz import tasks, trained  # noqa: E402
from gqa_viz.app import trained_heads as page  # noqa: E402
from gqa_viz.figures.heads import head_maps  # noqa: E402
from gqa_viz.figures.shipping import trace_meta
from gqa_viz.figures.trained import experiment_summary  # noqa: E402
from tests.apptest_pages import assert_ok, open_page  # noqa: E402

PAGE = "app_pages/trained.py"
TIMEOUT = 120


def _app() -> AppTest:
    return open_page(PAGE, TIMEOUT)


_ok = assert_ok


def _specs(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def _with_role(at: AppTest, role: str) -> list[dict]:
    return [s for s in _specs(at) if any(trace_meta(d).get("role") == role for d in s["data"])]


def _prompt_shown(at: AppTest) -> list[str]:
    (fig,) = _with_role(at, "prompt")
    texts = next(d for d in fig["data"] if trace_meta(d)["role"] == "prompt")["text"]
    return [html.unescape(t) for t in texts]  # Plotly text is HTML: ">" arrives as "&gt;"


def _heads_titles(at: AppTest) -> list[str]:
    return [s["layout"]["title"]["text"] for s in _with_role(at, "right key")]


def _kv_frames(spec: dict) -> int:
    return sum(1 for s in spec["layout"].get("shapes", []) if s.get("name", "").startswith("kv"))


# ---------------------------------------------------------------------------------------------
# Rendering and the choices.


def test_renders_every_section():
    at = _app()
    assert [h.value for h in at.header] == [
        "What the model predicts",
        "Every layer and head",
        "The GQA paper in miniature",
        "Your own Keras layer",
    ]
    assert at.title[0].value == "Trained heads"
    assert len(_with_role(at, "right key")) == 3  # two layers, and the live conversion's layer
    assert len(_with_role(at, "right key bars")) == 3
    assert len(_with_role(at, "conversion")) == 1
    # The default model (recall, K = 8) answers its prompt, and the card's number is shown.
    metrics = {m.label: m.value for m in at.metric}
    answers = int((tasks.answer_keys("recall", trained.prompt("recall", 0)) >= 0).sum())
    assert metrics["right on this prompt"] == f"{answers} of {answers}"
    held = trained.load("recall-k8").card["eval"]["token"]
    assert metrics["held-out answer tokens right"] == f"{100 * held:.1f}%"
    assert len(at.sidebar.get("number_input")) == 0  # the page's widgets are in its body


def test_switching_task_model_and_seed_changes_the_figures():
    at = _app()
    prompt, titles = _prompt_shown(at), _heads_titles(at)
    assert len(prompt) == tasks.seq_len("recall")

    at.segmented_control(key="tr_task").set_value("sort").run()
    _ok(at)
    sort_prompt = _prompt_shown(at)
    assert len(sort_prompt) == tasks.seq_len("sort") and sort_prompt != prompt
    assert any("sort" in t for t in _heads_titles(at))

    at.segmented_control(key="tr_k").set_value(2).run()
    _ok(at)
    assert _heads_titles(at) != titles
    layer0 = _with_role(at, "right key")[0]
    assert "K = 2" in layer0["layout"]["title"]["text"] and _kv_frames(layer0) == 2
    assert _prompt_shown(at) == sort_prompt  # the prompt stays with the model change

    at.number_input(key="tr_seed").set_value(5).run()
    _ok(at)
    names = tasks.token_names("sort")
    assert _prompt_shown(at) == [names[t] for t in trained.prompt("sort", 5)]
    at.button(key="tr_new").click().run()
    _ok(at)
    assert not at.warning
    assert at.number_input(key="tr_seed").value == 6
    assert _prompt_shown(at) == [names[t] for t in trained.prompt("sort", 6)]


def test_a_typed_prompt_is_used_and_a_bad_one_is_refused():
    at = _app()
    before = _prompt_shown(at)
    box = at.text_input(key="tr_text_recall")
    assert box.value.split() == before  # the box holds the current prompt
    edited = list(before)
    edited[3] = "9" if edited[3] != "9" else "8"  # another value for the second key
    box.set_value(" ".join(edited)).run()
    _ok(at)
    assert _prompt_shown(at) == edited and not at.warning
    assert any("typed prompt" in c.value for c in at.caption)

    for bad, says in (
        ("a b c d e f g", "recall prompts are 22 tokens of a..p, 0..9, =, separated by spaces; got 7"),
        (" ".join(["a"] * 21 + ["zz"]), "'zz' is not among them"),
    ):  # fmt: skip
        at.text_input(key="tr_text_recall").set_value(bad).run()
        assert not at.exception
        assert len(at.warning) == 1 and says in at.warning[0].value, at.warning[0].value
        assert _prompt_shown(at) == edited  # the previous prompt is kept

    # A new seed replaces the typed prompt and clears the warning.
    at.number_input(key="tr_seed").set_value(1).run()
    _ok(at)
    assert not at.warning
    names = tasks.token_names("recall")
    assert _prompt_shown(at) == [names[t] for t in trained.prompt("recall", 1)]


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("0 1 2 3 4 5 6 7 8 9 > 0 1 2 3 4 5 6 7 8", True),
        ("0 1 2 3 4 5 6 7 8 9 > 0 1 2 3 4 5 6 7 8 9", False),
        ("0 1 2 3 4 5 6 7 8 99 > 0 1 2 3 4 5 6 7 8", False),
    ],
)
def test_parse_prompt(text, ok):
    tokens, message = page.parse_prompt("sort", text)
    assert (tokens is not None) == ok
    if ok:
        assert message is None and tokens.shape == (tasks.seq_len("sort"),)
    else:
        assert message.startswith("sort prompts are 20 tokens of 0..15, >")


# ---------------------------------------------------------------------------------------------
# The GQA paper in miniature.


def _json_before(task: str, method: str, K: int) -> dict:
    """The seed-0 run's accuracy right after conversion (the live conversion's draw)."""
    row = next(
        r
        for r in trained.experiment()["rows"]
        if (r["task"], r["method"], r["K"]) == (task, method, K)
    )
    return next(run["before"] for run in row["runs"] if run["seed"] == 0)


def _paper_chart(at: AppTest) -> dict:
    (spec,) = _with_role(at, "conversion")
    return spec


@pytest.mark.parametrize("task", ["recall", "induction"])
def test_paper_chart_shows_every_run_and_the_summary_their_spread(task):
    at = _app()
    if task != "recall":
        at.segmented_control(key="tr_task").set_value(task).run()
        _ok(at)
    exp = trained.experiment()
    seeds = exp["uptraining"]["seeds"]
    rows = {(r["method"], r["K"]): r for r in exp["rows"] if r["task"] == task}
    spec = _paper_chart(at)
    assert task in spec["layout"]["title"]["text"]
    assert spec["layout"]["xaxis"]["ticktext"] == ["8 (MHA)", "4", "2", "1 (MQA)"]
    dots = [d for d in spec["data"] if trace_meta(d).get("role") == "runs"]
    lines = [d for d in spec["data"] if trace_meta(d).get("role") == "conversion"]
    assert len(dots) == len(lines) == 6  # 3 methods x (right after conversion, uptrained)
    for d in dots:
        m, phase = trace_meta(d)["method"], trace_meta(d)["phase"]
        want = [run[phase]["token"] for K in (4, 2, 1) for run in rows[(m, K)]["runs"]]
        assert d["y"] == pytest.approx(want, abs=1e-12)
        assert trace_meta(d)["seeds"] == seeds * 3
    for line in lines:
        m, phase = trace_meta(line)["method"], trace_meta(line)["phase"]
        err = line["error_y"]
        for i, K in enumerate((4, 2, 1), start=1):
            runs = [run[phase]["token"] for run in rows[(m, K)]["runs"]]
            assert line["y"][i] + err["array"][i] == pytest.approx(max(runs), abs=1e-9)
            assert line["y"][i] - err["arrayminus"][i] == pytest.approx(min(runs), abs=1e-9)
    # Beside the chart, the sentences computed from the runs.
    summary = experiment_summary(exp, task)
    shown = [m.value for m in at.markdown]
    assert summary in shown
    assert f"{len(seeds)} runs per method" in summary
    for K in (4, 2, 1):
        c = trained.compare(exp, task, K, "after")
        assert ("is best: its worst run" in summary.split(f"**K = {K}**")[1].split("\n")[0]) == (
            c.best is not None
        )


@pytest.mark.parametrize(("task", "method", "K"), [("recall", "mean", 2), ("copy", "random", 1)])
def test_live_conversion_equals_the_experiment(task, method, K):
    acc = page.evaluate(*page.convert(task, method, K))
    want = _json_before(task, method, K)
    # Same batch, same weights: equal up to the 6 decimals experiment.json keeps.
    assert abs(round(acc.token, 6) - want["token"]) < 1e-9
    assert abs(round(acc.sequence, 6) - want["sequence"]) < 1e-9


def test_live_conversion_on_the_page():
    at = _app()
    at.segmented_control(key="tr_task").set_value("induction").run()
    at.radio(key="tr_live_method").set_value("first").run()
    at.segmented_control(key="tr_live_k").set_value(2).run()
    _ok(at)
    metrics = {m.label: m.value for m in at.metric}
    want = _json_before("induction", "first", 2)["token"]
    assert metrics["measured now"] == metrics["experiment.json, right after conversion"]
    assert metrics["measured now"] == f"{100 * want:.2f}%"
    assert any("**the same**" in c.value for c in at.caption)
    live = _with_role(at, "right key")[-1]
    assert "K = 2 by first head" in live["layout"]["title"]["text"] and _kv_frames(live) == 2


# ---------------------------------------------------------------------------------------------
# Your own Keras layer.


def _keras_weights_h5(tmp_path, n=4, k=2, layers=1) -> bytes:
    keras.utils.set_random_seed(0)
    x = inp = keras.Input((6, 16))
    for _ in range(layers):
        x = keras.layers.GroupQueryAttention(head_dim=8, num_query_heads=n, num_key_value_heads=k)(
            x, x
        )
    path = tmp_path / "mine.weights.h5"
    keras.Model(inp, x).save_weights(str(path))
    return path.read_bytes()


def test_accept_upload_stores_layers_or_the_error(tmp_path):
    state: dict = {}
    assert (
        page.accept_upload("mine.weights.h5", _keras_weights_h5(tmp_path, layers=2), state) is None
    )
    layers = state[page.UPLOAD]["layers"]
    assert len(layers) == 2 and (
        layers[0].spec.num_query_heads,
        layers[0].spec.num_key_value_heads,
    ) == (4, 2)
    message = page.accept_upload("bad.npz", b"not a zip", state)
    assert "not a valid .npz" in message and state[page.UPLOAD_ERROR] == message
    assert state[page.UPLOAD]["layers"] is layers  # the good upload is kept
    assert page.accept_upload("x.npz", page.example_npz(), state) is None
    assert (
        page.UPLOAD_ERROR not in state
        and state[page.UPLOAD]["layers"][0].spec.num_key_value_heads == 4
    )


def test_upload_shows_the_layer_and_a_bad_file_the_error(tmp_path):
    at = _app()
    charts = len(at.get("plotly_chart"))
    data = _keras_weights_h5(tmp_path, n=4, k=2, layers=2)
    at.file_uploader(key="tr_upload_file").upload("mine.weights.h5", data).run()
    _ok(at)
    described = page.read_upload("mine.weights.h5", data)
    text = " ".join(m.value for m in at.markdown)
    assert described[0].describe() in text and "grouped-query attention" in text
    assert at.selectbox(key="tr_upload_layer").options == [layer.name for layer in described]
    assert len(at.get("plotly_chart")) == charts + 1
    heads = _specs(at)[-1]
    assert _kv_frames(heads) == 2
    assert len(head_maps(heads)) == 4

    at.slider(key="tr_upload_len").set_value(40).run()
    at.toggle(key="tr_upload_causal").set_value(False).run()
    at.selectbox(key="tr_upload_layer").set_value(1).run()
    _ok(at)
    heads = _specs(at)[-1]
    assert (
        len(heads["data"][0]["y"]) == 40 and described[1].name in heads["layout"]["title"]["text"]
    )

    at.file_uploader(key="tr_upload_file").set_value(
        ("broken.weights.h5", b"\x89HDF\r\n garbage", "application/octet-stream")
    ).run()
    assert not at.exception
    assert len(at.error) == 1 and "broken.weights.h5 is not a valid HDF5 file" in at.error[0].value
    assert len(at.get("plotly_chart")) == charts + 1  # everything else, the old layer included
    assert any("Still showing the previous file" in c.value for c in at.caption)


def test_an_upload_whose_scores_overflow_says_so_and_draws_nothing():
    """Finite float32 weights large enough for the scores to overflow: a message, no chart of
    NaN (which would read as masked cells), no exception."""
    at = _app()
    charts = len(at.get("plotly_chart"))
    with np.load(io.BytesIO(page.example_npz()), allow_pickle=False) as npz:
        arrays = [npz[f"arr_{i}"] for i in range(len(npz.files))]
    arrays = [a * np.float32(1e30) if a.ndim == 3 else a for a in arrays]  # the kernels
    buf = io.BytesIO()
    np.savez(buf, *arrays)
    at.file_uploader(key="tr_upload_file").upload("huge.npz", buf.getvalue()).run()
    assert not at.exception
    assert len(at.error) == 1
    assert "overflow float32" in at.error[0].value and "largest weight is" in at.error[0].value
    assert len(at.get("plotly_chart")) == charts


def test_a_bad_upload_keeps_the_good_one_shown():
    """A file whose layer cannot run (an empty model dimension) is refused at upload: the error
    names it and the previous layer stays on screen."""
    at = _app()
    at.file_uploader(key="tr_upload_file").upload("good.npz", page.example_npz()).run()
    charts = len(at.get("plotly_chart"))
    empty = [np.zeros((0, 2, 4), "f4"), np.zeros((0, 1, 4), "f4"), np.zeros((0, 1, 4), "f4")]
    buf = io.BytesIO()
    np.savez(buf, *empty, np.zeros((2, 4, 0), "f4"))
    at.file_uploader(key="tr_upload_file").set_value(
        ("empty.npz", buf.getvalue(), "application/octet-stream")
    ).run()
    assert not at.exception
    assert len(at.error) == 1 and "empty.npz: " in at.error[0].value
    assert "empty axis (D, key input size, value input size = 0)" in at.error[0].value
    assert any("Still showing the previous file, good.npz" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == charts
