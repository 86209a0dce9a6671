"""KV calculator: the KV cache of any config.json, layer by layer, beside the GPU's memory.

Thin on purpose: the numbers and their wording come from :mod:`gqa_viz.app.kv_calculator`
(over :mod:`gqa_viz.kv_cache`), the results (metrics, charts, what fits) are drawn by
:mod:`app_pages._kv_results` (shared with the KV sharing page's calculator), the longer prose
comes from ``assets/text/kv_calculator.md``.

State: every setting is a field of :class:`~gqa_viz.app.kv_calculator.CalculatorSettings`, kept
in ``st.session_state`` (it survives page switches, which drop widget state) and in the URL (on
the session's first visit the URL wins; after that the widgets do). A pasted or uploaded config
is kept in the session only: the last one read stays shown when a newer one is refused.
"""

from __future__ import annotations

import streamlit as st

from app_pages import _kv_results as kvr
from app_pages import _url_settings as url_settings
from app_pages._layout import wrapping_row
from gqa_viz.app import kv_calculator as kvc
from gqa_viz.app.limits import (
    KV_CALCULATOR_MAX_BANDWIDTH_GB_S,
    KV_CALCULATOR_MAX_BATCH,
    KV_CALCULATOR_MAX_GPU_GB,
    KV_CALCULATOR_MAX_PARAMS_BILLION,
    KV_CALCULATOR_MAX_TOKENS,
    MAX_CONFIG_BYTES,
    MAX_CONFIG_LAYERS,
)
from gqa_viz.app.prose import sections

TEXT = sections("kv_calculator")
SETTINGS, MESSAGES = "kvc_settings", "kvc_messages"
CONFIG, CONFIG_ERROR = "kvc_config", "kvc_config_error"  # the last config read; why not the next
SOURCE_SAVED, PASTE_SAVED = "kvc_source_saved", "kvc_paste_saved"  # survive page switches
WIDGETS = {name: f"kvc_{name}" for name in kvc.CalculatorSettings.__dataclass_fields__}
PRESET, UPLOAD = "a preset", "your config.json"
ss = st.session_state


# ---------------------------------------------------------------------------------------------
# State.


def _gpu_changed() -> None:
    """A GPU brings its own memory bandwidth (the visitor may then change it)."""
    gpu = ss[WIDGETS["gpu"]]
    if gpu in kvc.GPUS:
        ss[WIDGETS["bw"]] = kvc.GPUS[gpu].bandwidth_gb_s


def _read(data: bytes | str, what: str) -> None:
    model, error = kvc.read_config(data, what)
    if model is None:
        ss[CONFIG_ERROR] = error  # the previous config stays shown
    else:
        ss[CONFIG] = model
        ss.pop(CONFIG_ERROR, None)


def _pasted() -> None:
    text = ss["kvc_paste"]
    ss[PASTE_SAVED] = text
    if text.strip():
        _read(text, "pasted text")
    else:
        ss.pop(CONFIG_ERROR, None)


def _uploaded() -> None:
    file = ss["kvc_file"]
    if file is not None:
        _read(file.getvalue(), f"file {file.name[:80]}")


# ---------------------------------------------------------------------------------------------
# Controls.


def _model_controls(s: kvc.CalculatorSettings):
    """The model shown, and whether it is the visitor's config (else a preset)."""
    left, right = st.columns([1, 3.2], gap="medium")
    source = left.radio("Model", [PRESET, UPLOAD], key="kvc_source")
    ss[SOURCE_SAVED] = source
    if source == PRESET:
        right.selectbox(
            "Preset: a published config.json",
            list(kvc.PRESETS),
            key=WIDGETS["preset"],
            help="Read from the file as published, like an upload; the caption below links it.",
        )
        return kvc.PRESETS[ss[WIDGETS["preset"]]], False
    with right:
        paste, upload = st.columns([1.6, 1])
        help_ = TEXT["config_help"].format(
            max_kib=MAX_CONFIG_BYTES // 2**10, max_layers=MAX_CONFIG_LAYERS
        )
        paste.text_area(
            "Paste a config.json",
            key="kvc_paste",
            height=130,
            max_chars=MAX_CONFIG_BYTES + 1,  # one over: a longer paste is refused, not cut
            on_change=_pasted,
            placeholder='{"model_type": "llama", "num_hidden_layers": 32, ...}  (Ctrl+Enter)',
            help=help_,
        )
        upload.file_uploader(
            "or upload one", type=["json"], key="kvc_file", on_change=_uploaded, help=help_
        )
        st.caption(TEXT["session"])
    if CONFIG_ERROR in ss:
        still = f" Still showing {ss[CONFIG].name}." if CONFIG in ss else ""
        st.error(kvc.plain(ss[CONFIG_ERROR]) + still, icon="🚫")
    if CONFIG in ss:
        return ss[CONFIG], True
    st.info(TEXT["no_config"].format(name=s.preset), icon="ℹ️")
    return kvc.PRESETS[s.preset], False


def _settings_controls() -> kvc.CalculatorSettings:
    least = ((1.1, 120), (0.75, 80), (0.85, 90), (0.85, 90), (1.5, 170), (0.95, 100), (1.2, 110))
    c = wrapping_row("kvc_settings", *least, gap="small", align="bottom")  # 2 lines if narrow
    c[0].number_input(
        "context (tokens)", 1, KV_CALCULATOR_MAX_TOKENS, step=1024, key=WIDGETS["tokens"],
        help="Tokens per sequence: the prompt and what has been generated so far.",
    )  # fmt: skip
    c[1].number_input("batch", 1, KV_CALCULATOR_MAX_BATCH, key=WIDGETS["batch"],
                      help="Sequences decoded together, each with its own cache.")  # fmt: skip
    c[2].selectbox("KV cache dtype", kvc.DTYPES, key=WIDGETS["dtype"])
    c[3].selectbox("weights dtype", kvc.DTYPES, key=WIDGETS["wdtype"])
    c[4].selectbox(
        "GPU",
        [*kvc.GPUS, kvc.CUSTOM_GPU],
        key=WIDGETS["gpu"],
        format_func=lambda g: kvc.GPUS[g].describe() if g in kvc.GPUS else "custom memory",
        on_change=_gpu_changed,
        help="Memory as the maker quotes it (decimal GB); it also sets the bandwidth.",
    )
    if ss[WIDGETS["gpu"]] == kvc.CUSTOM_GPU:
        c[5].number_input(
            "memory (GB)", 1.0, KV_CALCULATOR_MAX_GPU_GB, step=8.0, format="%g",
            key=WIDGETS["gpu_gb"], help="Several GPUs: their memory together.",
        )  # fmt: skip
    c[6].number_input(
        "bandwidth (GB/s)",
        1.0,
        KV_CALCULATOR_MAX_BANDWIDTH_GB_S,
        step=100.0,
        format="%g",
        key=WIDGETS["bw"],
        help="Memory bandwidth: the chosen GPU's unless you change it. Sets the decode time.",
    )
    return kvc.CalculatorSettings(**{name: ss[key] for name, key in WIDGETS.items()})


# ---------------------------------------------------------------------------------------------
# The numbers.


def _model_notes(model, from_config: bool):
    """Caption, how the config was read, the parameter count when it must be given."""
    kvr.describe(model, sourced=not from_config, expanded=from_config)
    if model.params is None:
        # from_config admits only a family's name ([\w.-]) as model_type: nothing in the code
        # span can become live Markdown, and escaping there would show the backslashes.
        st.info(TEXT["params"].format(model_type=model.model_type or "none"), icon="ℹ️")
        billions = st.number_input(
            "parameter count (billions)",
            0.001,
            KV_CALCULATOR_MAX_PARAMS_BILLION,
            value=None,
            key="kvc_params",
            placeholder="not in this config: type it",
        )
        model = kvc.given_params(model, billions)
    return model


# ---------------------------------------------------------------------------------------------

settings = url_settings.load(SETTINGS, MESSAGES, kvc.from_query_params)
ss.setdefault("kvc_source", ss.get(SOURCE_SAVED, PRESET))
ss.setdefault("kvc_paste", ss.get(PASTE_SAVED, ""))
bad_values = url_settings.seed(WIDGETS, settings, kvc.sanitize)
st.title("KV-cache calculator")
st.markdown(TEXT["intro"])
for message in ss.pop(MESSAGES, []) + bad_values:
    st.warning(message, icon="⚠️")
model, from_config = _model_controls(settings)
settings = _settings_controls()
ss[SETTINGS] = settings
st.query_params.from_dict(kvc.to_query_params(settings))
try:
    model = _model_notes(model, from_config)
    kvr.results(model, settings, key="kvc")
except ValueError as error:  # a config the arithmetic refuses: say why, keep the page
    st.error(f"This model cannot be computed: {kvc.plain(str(error))}", icon="🚫")
