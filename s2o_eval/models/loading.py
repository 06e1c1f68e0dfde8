"""Load the model and tokenizer that ``--model`` names, on the requested device and dtype."""

from __future__ import annotations

import os
from dataclasses import dataclass

from safetensors import SafetensorError

from s2o_eval.errors import UserError

from .cache import ensure_model_dir, ensure_tokenizer_dir
from .rope_scaling import RopeScaling, apply_rope_scaling
from .sources import ModelSource, resolve_model_source

_DTYPE_NAMES = {
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp16": "float16", "float16": "float16", "half": "float16",
    "fp32": "float32", "float32": "float32", "float": "float32",
}


@dataclass
class LoadedModel:
    """A model ready to evaluate, and what a run records about it.

    model           PreTrainedModel in eval mode, on the requested device and dtype
    tokenizer       its tokenizer
    tokenizer_path  a local dir or hub id that ``AutoTokenizer.from_pretrained`` loads (task adapters get it)
    name            short name for run directories ("gemma-3-270m", "Llama-3.1-8B-Instruct")
    source          what the user passed to ``--model``
    revision        hub commit, sha256 of the GGUF file, or None (a local directory)
    max_window      the model's context window in tokens (``max_position_embeddings``)
    chat_template   whether the tokenizer has a chat template
    rope_scaling    what ``--rope-scaling`` changed (``rope_scaling.apply_rope_scaling``), None: the model's own RoPE
    """

    model: object
    tokenizer: object
    tokenizer_path: str
    name: str
    source: str
    revision: str | None
    max_window: int
    chat_template: bool
    rope_scaling: dict | None = None


def resolve_dtype(dtype, device: str):
    """A torch dtype from ``dtype``: "auto" is bf16 on CUDA and float32 elsewhere (CPUs run bf16 slowly)."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).lower().removeprefix("torch.")
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if name not in _DTYPE_NAMES:
        raise UserError(f"unknown dtype '{dtype}': use auto, bf16, fp16 or fp32")
    return getattr(torch, _DTYPE_NAMES[name])


def resolve_device(device: str) -> str:
    """``device`` checked against this machine; a bare "cuda" becomes the current CUDA device."""
    import torch

    device = str(device).strip().lower()
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device '{device}' asked for, but CUDA is not available here: pass --device cpu")
        if device == "cuda":
            return f"cuda:{torch.cuda.current_device()}"
        try:
            index = int(device.split(":", 1)[1])
        except (IndexError, ValueError) as error:
            raise UserError(f"unknown device '{device}': use cpu, cuda or cuda:N") from error
        if index >= torch.cuda.device_count():
            raise UserError(f"device '{device}' does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
        return device
    if device != "cpu":
        raise UserError(f"unknown device '{device}': use cpu, cuda or cuda:N")
    return device


def _hub_offline() -> bool:
    return any(os.environ.get(name, "0").strip().lower() not in ("", "0", "false", "no", "off")
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _not_cached(spec: str, hub_offline: bool) -> UserError:
    if hub_offline:
        return UserError(f"model '{spec}' is not in the local Hugging Face cache and the hub is offline: "
                         f"download it first (hf download {spec}) or pass a local directory")
    return UserError(f"model '{spec}' is not in the local Hugging Face cache and the hub cannot be reached: "
                     f"download it where there is a network (hf download {spec}) or pass a local directory")


def _load_error(source: ModelSource, error: Exception, location: str | None = None) -> UserError:
    """The one-line fix for a model or tokenizer that transformers could not load from ``location``."""
    text = str(error)
    # transformers' messages run on ("Unrecognized model in DIR. Should have a `model_type` key ..."):
    # the first sentence says what is wrong
    first_line = text.strip().splitlines()[0].split(". ")[0] if text.strip() else type(error).__name__
    spec = source.spec
    if source.from_gguf:  # our own cache entry: its files were damaged after read_record checked them
        return UserError(f"could not load '{spec}' from its cached conversion ({first_line}): delete it "
                         f"(rm -r {location}); the next command converts it again")
    if source.kind != "hub":
        return UserError(f"could not load '{spec}' ({first_line}): check that it holds a complete Hugging Face model")
    if isinstance(error, SafetensorError):  # a download cut short in the Hugging Face cache
        return UserError(f"model '{spec}' is damaged in the Hugging Face cache ({first_line}): remove it with "
                         f"`hf cache rm model/{spec}` and load it again")
    if _hub_offline():
        return _not_cached(spec, hub_offline=True)
    lowered = text.lower()
    if "gated" in lowered or "401" in lowered or "403" in lowered:
        return UserError(f"model '{spec}' is gated on the hub: accept its license on huggingface.co and log in "
                         "(hf auth login), or pass a local directory")
    if "not a valid model identifier" in lowered or "404" in lowered or "repository not found" in lowered:
        return UserError(f"model '{spec}' is not on the Hugging Face hub: check the id, or pass a local "
                         "directory or a .gguf file")
    if "connect" in lowered:
        return _not_cached(spec, hub_offline=False)
    return UserError(f"could not load model '{spec}' ({first_line}): check the id, or pass a local directory")


def _check_hub_reachable(source: ModelSource) -> None:
    """A hub id that is not in the local Hugging Face cache needs the hub: when it is offline or out
    of reach, say so at once instead of after transformers' half a minute of retries."""
    if source.kind != "hub":
        return
    from huggingface_hub import try_to_load_from_cache
    from s2o_tasks import common

    if isinstance(try_to_load_from_cache(source.location, "config.json"), str):
        return  # cached: transformers loads it without the network
    if _hub_offline():
        raise _not_cached(source.spec, hub_offline=True)
    if not common.hub_reachable():
        raise _not_cached(source.spec, hub_offline=False)


def _load_tokenizer(path: str, source: ModelSource):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as error:  # ValueError: a config.json transformers does not recognize
        raise _load_error(source, error, path) from error


def _tokenizer_location(source: ModelSource) -> str:
    return str(ensure_tokenizer_dir(source)) if source.from_gguf else source.location


def load_tokenizer_only(spec: str):
    """``(tokenizer, tokenizer_path)`` for ``--model spec`` without loading weights.

    For a GGUF source (the default model included) this builds only the tokenizer cache entry on the
    first call (seconds), never the dequantized weights.
    """
    source = resolve_model_source(spec)
    _check_hub_reachable(source)
    path = _tokenizer_location(source)
    return _load_tokenizer(path, source), path


def context_window(config) -> int:
    """The model's context window in tokens, from its (text) config."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for attribute in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(text_config, attribute, None)
        if isinstance(value, int) and value > 0:
            return value
    raise UserError("the model's config names no context window (max_position_embeddings): "
                    "use a model whose config.json has one")


def _progress(message: str) -> None:
    from rich.console import Console

    # soft wrap: the paths in these lines stay whole, to copy
    Console(stderr=True).print(message, style="dim", markup=False, highlight=False, soft_wrap=True)


def _scaled_config(location: str, source: ModelSource, scaling: RopeScaling):
    """The model's config with ``scaling`` applied, and the record of it; refused before any weight loads."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(location)
    except (OSError, ValueError) as error:
        raise _load_error(source, error, location) from error
    record = apply_rope_scaling(config, scaling, source.name)
    if record is not None:
        _progress(f"RoPE {scaling.text} on {record['applies_to']}: layers {','.join(map(str, record['layers']))}")
    return config, record


def load_model(spec: str, *, device: str, dtype="auto", attn_implementation: str | None = None,
               rope_scaling: RopeScaling | None = None) -> LoadedModel:
    """Load ``--model spec`` for evaluation.

    ``spec``: ``gemma-3-270m`` / ``default`` (the embedded GGUF, converted once into the cache), a
    ``.gguf`` file (same), a local model directory, or a hub id (from the local HF cache, or
    downloaded when the hub is reachable). ``dtype``: "auto" (bf16 on CUDA, fp32 on CPU), a name
    (bf16, fp16, fp32) or a torch dtype. ``attn_implementation`` is passed to transformers as is.
    ``rope_scaling`` (``--rope-scaling``) is set in the model's config before the model is built (see
    ``rope_scaling``); the window the run checks ``--ctx`` against stays the model's own.
    Raises UserError for anything the user can fix (missing path, model not cached offline, no CUDA).
    """
    import torch
    from transformers import AutoModelForCausalLM

    source = resolve_model_source(spec)
    _check_hub_reachable(source)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    location = str(ensure_model_dir(source, progress=_progress)) if source.from_gguf else source.location

    kwargs = {"dtype": torch_dtype, "device_map": {"": torch.device(device)}}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    scaled = None
    if rope_scaling is not None:
        kwargs["config"], scaled = _scaled_config(location, source, rope_scaling)
    try:
        model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    except (OSError, ValueError, SafetensorError) as error:  # a config.json it does not know; weights cut short
        raise _load_error(source, error, location) from error
    except torch.OutOfMemoryError as error:
        raise UserError(f"model '{spec}' does not fit in {device} memory in {torch_dtype}: use a smaller model, "
                        "a smaller dtype, or a GPU with more memory") from error
    model.eval()
    tokenizer = _load_tokenizer(location, source)
    revision = source.revision or getattr(model.config, "_commit_hash", None)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        tokenizer_path=location,
        name=source.name,
        source=source.spec,
        revision=revision,
        max_window=context_window(model.config),
        chat_template=bool(getattr(tokenizer, "chat_template", None)),
        rope_scaling=scaled,
    )
