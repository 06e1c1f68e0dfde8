"""Turn a GGUF file into a plain Hugging Face model directory, once.

transformers' GGUF support reads the file and dequantizes every weight (Q4_K_M -> float32); the
result is copied into a fresh model built from a checked config and saved as bf16 safetensors, so
that later loads are an ordinary ``from_pretrained(dir)`` that takes seconds.

Why bf16 on disk: the original Gemma 3 weights are bf16, fp16 overflows in Gemma 3's activations, and
fp32 would double the cache (1 GB for 270M parameters) for a precision the 4-bit weights do not have.
A CPU load upcasts to float32 (see ``loading.resolve_dtype``).
"""

from __future__ import annotations

from pathlib import Path

from s2o_eval.errors import UserError

WEIGHTS_DTYPE = "bfloat16"

# llama.cpp runs every Gemma 3 sliding-window layer with this RoPE base; the GGUF stores only the
# global layers' base (gemma3.rope.freq_base), so transformers must know the other one itself.
GEMMA3_SLIDING_ROPE_THETA = 10000.0
# One global-attention layer every 6 layers (layers 5, 11, 17... in 0-based numbering): llama.cpp
# hard-codes this pattern for gemma3; the GGUF does not store it.
GEMMA3_GLOBAL_EVERY = 6
GEMMA3_27B_LAYERS = 62


def _gguf_metadata(reader, architecture: str) -> dict:
    """``<architecture>.*`` scalar fields of an open ``gguf.GGUFReader``, without the prefix."""
    from .gguf_tokenizer import gguf_value

    prefix = architecture + "."
    return {key[len(prefix):]: gguf_value(reader, key)
            for key, field in reader.fields.items()
            if key.startswith(prefix) and len(field.data) == 1}


def gemma3_config_fixes(config, meta: dict) -> list[str]:
    """Make a Gemma 3 text config from transformers' GGUF loader agree with llama.cpp; return what changed.

    Each fix is a fact llama.cpp applies to every gemma3 GGUF but that is not in the file, so each
    transformers release has to know it by itself (5.17 and 5.23 do, except the epsilon's rounding).
    Only values that differ are written, and the list is kept in the cache's record.
    """
    changed = []

    def put(name, value):
        if getattr(config, name, None) != value:
            changed.append(f"{name}: {getattr(config, name, None)!r} -> {value!r}")
            setattr(config, name, value)

    layers = int(meta["block_count"])
    put("layer_types", ["full_attention" if (i + 1) % GEMMA3_GLOBAL_EVERY == 0 else "sliding_attention"
                        for i in range(layers)])
    if "attention.sliding_window" in meta:
        put("sliding_window", int(meta["attention.sliding_window"]))
    # Queries are scaled by 1/sqrt(head_dim), except in the 27B model, which uses hidden / heads.
    heads = int(meta["attention.head_count"])
    scalar = (int(meta["embedding_length"]) // heads if layers == GEMMA3_27B_LAYERS
              else int(meta.get("attention.key_length", int(meta["embedding_length"]) // heads)))
    put("query_pre_attn_scalar", scalar)
    # The file holds float32 1e-6 (9.99999997e-07); write the value the original config has.
    if "attention.layer_norm_rms_epsilon" in meta:
        put("rms_norm_eps", float(f"{meta['attention.layer_norm_rms_epsilon']:.6g}"))

    full_rope = {"rope_type": "default", "rope_theta": float(meta.get("rope.freq_base", 1_000_000.0))}
    scaling_type = meta.get("rope.scaling.type")
    if scaling_type and scaling_type != "none":
        # The larger Gemma 3 models stretch only the global layers' RoPE (linear, factor 8).
        full_rope = {**full_rope, "rope_type": scaling_type, "factor": float(meta["rope.scaling.factor"])}
    rope = {"full_attention": full_rope,
            "sliding_attention": {"rope_type": "default", "rope_theta": GEMMA3_SLIDING_ROPE_THETA}}
    current = getattr(config, "rope_parameters", None)
    if current is None or {k: dict(v) for k, v in current.items()} != rope:
        changed.append(f"rope_parameters: {current!r} -> {rope!r}")
        config.rope_parameters = rope
    return changed


def _load_dequantized(gguf_path: Path):
    """The GGUF's model with every weight dequantized to float32, through transformers' GGUF loader."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {}
    try:
        from transformers import GgufConfig
    except ImportError:  # older transformers always dequantized
        GgufConfig = None
    if GgufConfig is not None:
        # transformers >= 5.17 may keep the blocks packed (and then refuses to save); ask for floats.
        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    try:
        return AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=str(gguf_path), dtype=torch.float32, **kwargs)
    except ValueError as error:
        if "not supported" in str(error):
            import transformers
            raise UserError(f"transformers {transformers.__version__} cannot load this GGUF ({error}): "
                            "pass the model's Hugging Face directory or hub id instead") from error
        raise


def save_dequantized_model(gguf_path: Path, reader, out_dir: Path) -> list[str]:
    """Dequantize ``gguf_path`` into a model directory ``out_dir`` (bf16 safetensors); return the config fixes."""
    import torch
    from transformers import AutoModelForCausalLM

    from .gguf_tokenizer import gguf_value

    architecture = gguf_value(reader, "general.architecture")
    loaded = _load_dequantized(gguf_path)
    config = loaded.config
    for stale in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        if stale in config.__dict__:
            delattr(config, stale)
    fixes = gemma3_config_fixes(config, _gguf_metadata(reader, architecture)) if architecture == "gemma3" else []
    config.dtype = getattr(torch, WEIGHTS_DTYPE)

    # A fresh model of the fixed config takes the weights: the GGUF-loaded one still carries the
    # GGUF quantizer, which save_pretrained refuses. Built on "meta" so nothing is initialised twice.
    state = {name: tensor.to(getattr(torch, WEIGHTS_DTYPE)) for name, tensor in loaded.state_dict().items()}
    del loaded
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, WEIGHTS_DTYPE))
    missing, unexpected = fresh.load_state_dict(state, strict=False, assign=True)
    if getattr(config, "tie_word_embeddings", False):
        fresh.tie_weights()
        missing = [name for name in missing if name != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"dequantized weights do not fit the model: missing {missing}, unexpected {unexpected}")
    fresh.save_pretrained(str(out_dir))
    return fixes
