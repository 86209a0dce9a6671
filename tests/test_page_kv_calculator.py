"""The KV calculator page under Streamlit's AppTest, run through app.py's st.navigation.

Every number the page shows is checked against :mod:`gqa_viz.kv_cache` (and, for the models the
issue names, against the bytes worked out by hand).
"""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from gqa_viz import kv_cache as kv
from gqa_viz.app import kv_calculator as kvc
from gqa_viz.app.limits import MAX_CONFIG_BYTES
from gqa_viz.figures.shipping import array_of, trace_meta
from gqa_viz.models import PRESETS
from tests.apptest_pages import assert_ok, open_page

PAGE = "app_pages/kv_calculator.py"
TIMEOUT = 60
UPLOAD = "your config.json"
GB = kv.GB

# Falcon-7B's published config (RW remote code), the fields that matter: one kv head
# (multi_query), head_dim 4544 / 71 = 64, 32 layers: 2 x 1 x 64 x 2 B x 32 = 8 KiB per token.
FALCON_7B = {
    "model_type": "RefinedWebModel", "n_layer": 32, "n_head": 71, "hidden_size": 4544,
    "multi_query": True, "parallel_attn": True, "bias": False, "alibi": False,
    "vocab_size": 65024, "_name_or_path": "tiiuae/falcon-7b",
}  # fmt: skip


def _app(**query) -> AppTest:
    return open_page(PAGE, TIMEOUT, **query)


_ok = assert_ok


def _text(element) -> str:
    """What the visitor reads: the page escapes markdown in messages that quote a file."""
    return element.value.replace("\\", "")


def _metrics(at: AppTest) -> dict[str, tuple[str, str]]:
    return {m.label: (m.value, m.delta) for m in at.metric}


def _charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def _array(a) -> list[float]:
    return array_of(a).tolist()


def _traces(at: AppTest, role: str) -> list[dict]:
    return [t for spec in _charts(at) for t in spec["data"] if trace_meta(t).get("role") == role]


def _paste(at: AppTest, config) -> AppTest:
    if at.radio(key="kvc_source").value != UPLOAD:
        at.radio(key="kvc_source").set_value(UPLOAD).run()
    text = config if isinstance(config, str) else json.dumps(config)
    return at.text_area(key="kvc_paste").input(text).run()


def test_default_preset_shows_the_librarys_numbers():
    at = _app()
    model = PRESETS["Llama 3.1 8B"]
    assert at.selectbox(key="kvc_preset").value == "Llama 3.1 8B"
    assert at.query_params == {}  # defaults: a clean link
    gpu = 80 * GB  # H100 SXM
    cache = kv.kv_cache_bytes(model, tokens=8192)
    weights = kv.weights_bytes(model)
    m = _metrics(at)
    # 2 (K and V) x 8 kv heads x 128 x 2 B x 32 layers = 131,072 B per token.
    assert m["KV cache per token"] == ("131,072 B", "128 KiB")
    assert m["KV cache (K = 8)"] == (kvc.gb(cache.total), kvc.gib(cache.total))
    assert m["KV cache (K = 8)"] == ("1.07 GB", "1.00 GiB")
    mha = kv.kv_cache_bytes(model, tokens=8192, kv_heads=32).total
    assert m["KV cache as MHA (K = 32)"] == (kvc.gb(mha), kvc.gib(mha)) == ("4.29 GB", "4.00 GiB")
    assert m["KV cache as MQA (K = 1)"][0] == kvc.gb(
        kv.kv_cache_bytes(model, tokens=8192, kv_heads=1).total
    )
    assert m["weights (bf16)"] == (kvc.gb(weights), kvc.gib(weights)) == ("16.06 GB", "14.96 GiB")
    assert m["max context at batch 1"][0] == f"{kv.max_context(model, gpu):,} tokens"
    assert m["max batch at 8,192 tokens"][0] == f"{kv.max_batch(model, gpu, 8192):,} sequences"
    decode = kv.decode_time_lower_bound(model, 8192, bandwidth_bytes_per_s=3350e9)
    assert m["decode step, at least"][0] == f"{1e3 * decode:,.2f} ms"
    assert [c.value for c in at.code] == [kv.formula(model, tokens=8192)]
    # The source of the preset: the published file, linked, with the day it was read.
    caption = "\n".join(c.value for c in at.caption)
    assert "[meta-llama/Llama-3.1-8B](https://huggingface.co/" in caption
    assert f"read {kvc.SOURCES['Llama 3.1 8B'].read}" in caption
    # The textbook formula, 2 L D, is four times too much here.
    assert any(
        "4.0× too much" in i.value and "K = 8 K/V heads, not N = 32" in i.value for i in at.info
    )
    assert len(_charts(at)) == 2


def test_gemma_2_9b_at_8192_tokens():
    at = _app(preset="gemma-2-9b", tokens="8192")
    assert at.selectbox(key="kvc_preset").value == "Gemma 2 9B"
    # 21 global layers x 8,192 tokens + 21 local layers x 4,096 tokens, 8,192 B per token each.
    assert "total = 2,113,929,216 B = 2.11 GB = 1.97 GiB" in at.code[0].value
    assert _metrics(at)["KV cache (K = 8)"][0] == "2.11 GB"
    layers = {trace_meta(t)["kind"]: t for t in _traces(at, "layer")}
    assert len(layers["full"]["x"]) == 21 and len(layers["sliding"]["x"]) == 21
    unit = trace_meta(layers["full"])["unit"]
    assert [y * unit for y in _array(layers["full"]["y"])] == pytest.approx([67_108_864] * 21)
    assert [y * unit for y in _array(layers["sliding"]["y"])] == pytest.approx([33_554_432] * 21)
    assert any("21 of 42 layers" in i.value and "capped at 4,096" in i.value for i in at.info)
    # Defaulted fields are said to be defaulted.
    notes = "\n".join(m.value for m in at.markdown)
    assert "**Defaulted**" in notes and "`tie_word_embeddings` = True" in notes


def test_deepseek_v2_lite_mla_has_no_mha_or_mqa_variant():
    at = _app(preset="deepseek-v2-lite")
    model = PRESETS["DeepSeek-V2-Lite"]
    m = _metrics(at)
    # 27 layers x (512 + 64) elements x 2 B = 31,104 B per token.
    assert m["KV cache per token"][0] == "31,104 B"
    assert not any("MHA" in label or "MQA" in label for label in m)
    assert "KV cache (MLA latent)" in m
    assert kv.mla_reason(model) in [w.value for w in at.warning]
    assert any("latent attention" in w.value for w in at.warning)
    # Said once: no second copy of the explanation in a caption or another message.
    shown = [e.value for e in [*at.caption, *at.warning, *at.info]]
    assert sum("latent attention" in text for text in shown) == 1
    (layers,) = _traces(at, "layer")
    assert trace_meta(layers)["kind"] == "mla" and len(layers["x"]) == 27


def test_pasted_falcon_7b_config_gives_8_kib_per_token():
    at = _paste(_app(), FALCON_7B)
    _ok(at)
    m = _metrics(at)
    assert m["KV cache per token"] == ("8,192 B", "8 KiB")
    assert "KV cache (MQA, K = 1)" in m and "KV cache as MHA (K = 71)" in m
    assert not any("Source:" in c.value for c in at.caption)  # not a preset
    notes = "\n".join(_text(x) for x in at.markdown)
    assert "multi_query" in notes  # how the file was read
    assert "**Defaulted**" in notes and "`max_position_embeddings` = 2048" in notes
    # The config is not in the link; the other settings are.
    assert "preset" not in at.query_params and at.query_params == {}
    # Back to a preset and to the config again: the config read is kept in the session.
    at.radio(key="kvc_source").set_value("a preset").run()
    assert _metrics(at)["KV cache per token"][0] == "131,072 B"
    at.radio(key="kvc_source").set_value(UPLOAD).run()
    assert _metrics(at)["KV cache per token"][0] == "8,192 B"


BAD_PASTES = [
    ("not-json", '{"num_hidden_layers": 32,', "The pasted text is not valid JSON"),
    ("nan", '{"num_hidden_layers": NaN}', "The pasted text has NaN"),
    (  # the text box takes one character more than the limit, so it is refused, not cut
        "over-256-KiB",
        json.dumps({**FALCON_7B, "pad": "x" * MAX_CONFIG_BYTES})[: MAX_CONFIG_BYTES + 1],
        f"longer than {MAX_CONFIG_BYTES:,} characters; a config.json may be at most "
        f"{MAX_CONFIG_BYTES:,} bytes (256 KiB)",
    ),
    (  # fewer characters than the limit, more bytes
        "over-256-KiB-of-utf8",
        json.dumps({**FALCON_7B, "pad": "é" * 140_000}, ensure_ascii=False),
        f"a config may be at most {MAX_CONFIG_BYTES:,} bytes (256 KiB)",
    ),
    (
        "over-1024-layers",
        {**FALCON_7B, "n_layer": 1025},
        "n_layer is 1,025; at most 1,024 layers are read",
    ),
    (
        "layer-types-length",
        {
            "model_type": "gemma2",
            "num_hidden_layers": 4,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "head_dim": 2,
            "hidden_size": 16,
            "layer_types": ["full_attention"] * 3,
        },
        "layer_types lists 3 layers but num_hidden_layers is 4",
    ),  # fmt: skip
    (
        "no-attention-heads",
        {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 8},
        "The config has no num_attention_heads",
    ),
    (  # it used to pass and overflow a float in the parameter count: refused, by its field
        "integer-over-2**53",
        {
            "model_type": "llama",
            "num_hidden_layers": 2,
            "num_attention_heads": 1,
            "hidden_size": 10**400,
            "vocab_size": 10,
        },
        "The pasted text has hidden_size = an integer of 401 digits; a config's integers may "
        "be at most 9,007,199,254,740,992",
    ),
    (
        "integer-just-over-2**53",
        {**FALCON_7B, "vocab_size": 2**53 + 1},
        "vocab_size = 9,007,199,254,740,993; a config's integers may be at most",
    ),
    (  # shown back in messages and notes: a model family's name only
        "model-type-markdown",
        {**FALCON_7B, "model_type": "x` ![x](http://example.com/x.png) `"},
        "model_type must be a string of 1 to 64 letters, digits, '_', '.' or '-'",
    ),
]


@pytest.mark.parametrize(
    ("paste", "fragment"), [c[1:] for c in BAD_PASTES], ids=[c[0] for c in BAD_PASTES]
)
def test_a_bad_paste_says_why_and_keeps_the_previous_model(paste, fragment):
    at = _paste(_app(), FALCON_7B)
    _ok(at)
    at = _paste(at, paste)
    assert not at.exception
    (error,) = at.error
    assert fragment in _text(error) and "Still showing tiiuae/falcon-7b" in _text(error)
    assert "](http" not in error.value  # the file's text quoted as text, never a live image
    assert _metrics(at)["KV cache per token"][0] == "8,192 B"  # the previous model
    assert len(_charts(at)) == 2
    # A good paste afterwards clears the message.
    at = _paste(at, {**FALCON_7B, "n_layer": 16})
    _ok(at)
    assert _metrics(at)["KV cache per token"][0] == "4,096 B"


def test_a_bad_first_paste_keeps_the_preset():
    at = _paste(_app(preset="gemma-2-9b"), '{"num_hidden_layers": Infinity}')
    assert "must be finite" in _text(at.error[0])
    assert any("this shows the preset **Gemma 2 9B**" in i.value for i in at.info)
    assert _metrics(at)["KV cache (K = 8)"][0] == "2.11 GB"


def test_parameter_count_asked_for_when_not_derivable():
    config = {"model_type": "my_arch", "num_hidden_layers": 4, "num_attention_heads": 8,
              "num_key_value_heads": 2, "hidden_size": 512}  # fmt: skip
    at = _paste(_app(), config)
    _ok(at)
    assert any("cannot be derived here (model type `my_arch`)" in i.value for i in at.info)
    assert not any(label.startswith("weights") for label in _metrics(at))
    assert any("Give the parameter count" in i.value for i in at.info)
    at.number_input(key="kvc_params").set_value(7.0).run()
    _ok(at)
    m = _metrics(at)
    assert m["weights (bf16)"][0] == "14.00 GB"  # 7e9 x 2 B
    model = kv.with_params(kvc.uploaded_model(json.dumps(config)), 7_000_000_000)
    assert m["max context at batch 1"][0] == f"{kv.max_context(model, 80 * GB):,} tokens"


def test_url_round_trip():
    query = {
        "preset": "qwen2.5-7b", "tokens": "32768", "batch": "4", "dtype": "fp8",
        "wdtype": "int4", "gpu": "custom", "gpu_gb": "192", "bw": "1234.5",
    }  # fmt: skip
    at = _app(**query)
    assert at.query_params == query
    assert at.selectbox(key="kvc_preset").value == "Qwen2.5 7B"
    assert at.number_input(key="kvc_gpu_gb").value == 192.0
    model = PRESETS["Qwen2.5 7B"]
    cache = kv.kv_cache_bytes(model, tokens=32768, batch=4, dtype="fp8").total
    assert _metrics(at)["KV cache (K = 4)"][0] == kvc.gb(cache)
    decode = kv.decode_time_lower_bound(model, 32768, 4, "fp8", "int4", 1234.5e9)
    assert _metrics(at)["decode step, at least"][0] == f"{1e3 * decode:,.2f} ms"
    # A GPU from the list brings its bandwidth; the link drops what it no longer needs.
    at.selectbox(key="kvc_gpu").set_value("h200").run()
    _ok(at)
    assert at.number_input(key="kvc_bw").value == 4800.0
    assert at.query_params == {
        "preset": "qwen2.5-7b", "tokens": "32768", "batch": "4", "dtype": "fp8",
        "wdtype": "int4", "gpu": "h200",
    }  # fmt: skip
    again = _app(**at.query_params)
    assert _metrics(again) == _metrics(at)


def test_max_context_beyond_max_position_is_flagged():
    model = PRESETS["Llama 3.1 8B"]
    at = _app()  # H100: room for 487,819 tokens, beyond max_position_embeddings 131,072
    ctx = kv.max_context(model, 80 * GB)
    assert ctx > model.max_position_embeddings
    # A note, not a warning: nothing the visitor set is wrong (the context they chose is).
    assert not at.warning and kvc.position_note(model, ctx) in [i.value for i in at.info]
    (mark,) = _traces(at, "max_position")
    assert mark["x"] == [131072, 131072]
    # On a 24 GB GPU, 60k tokens fit: nothing to flag.
    at = _app(gpu="l4")
    ctx = kv.max_context(model, 24 * GB)
    assert _metrics(at)["max context at batch 1"][0] == f"{ctx:,} tokens" and ctx < 131072
    assert not any("max_position_embeddings" in b.value for b in [*at.warning, *at.info])
    # A context beyond it, chosen by the visitor, is a warning.
    at = _app(preset="gemma-2-9b", tokens="16384", gpu="l4")
    assert any(w.value == kvc.position_note(PRESETS["Gemma 2 9B"], 16384) for w in at.warning)


def test_every_preset_renders_its_own_numbers():
    at = _app()
    for name, model in PRESETS.items():
        at.selectbox(key="kvc_preset").set_value(name).run()
        _ok(at)
        per_token = kv.kv_cache_bytes(model, tokens=1).total
        assert _metrics(at)["KV cache per token"][0] == f"{per_token:,} B", name
        assert at.code[0].value == kv.formula(model, tokens=8192), name
        layers = _traces(at, "layer")
        assert sum(len(t["x"]) for t in layers) == model.num_layers, name
