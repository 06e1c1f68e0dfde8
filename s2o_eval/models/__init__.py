"""Model loading: the embedded default (Gemma 3 270M from a packaged GGUF, converted once and cached), any
hub id, local dir or .gguf file, and ``--rope-scaling`` on the global layers.

    from s2o_eval.models import load_model
    loaded = load_model("gemma-3-270m", device="cpu")      # first call converts the GGUF once (~1 min)
    loaded.model, loaded.tokenizer, loaded.tokenizer_path, loaded.max_window
    load_model("gemma-3-270m", device="cuda", rope_scaling=parse_rope_scaling("linear:4"))  # global layers' RoPE / 4
"""

from .cache import CACHE_ENV, cache_root
from .loading import LoadedModel, load_model, load_tokenizer_only, resolve_dtype
from .rope_scaling import RopeScaling, parse_rope_scaling
from .sources import DEFAULT_MODEL, ModelSource, resolve_model_source

__all__ = [
    "CACHE_ENV",
    "DEFAULT_MODEL",
    "LoadedModel",
    "ModelSource",
    "RopeScaling",
    "cache_root",
    "load_model",
    "load_tokenizer_only",
    "parse_rope_scaling",
    "resolve_dtype",
    "resolve_model_source",
]
