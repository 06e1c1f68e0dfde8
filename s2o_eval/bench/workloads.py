"""Bench workloads: one causal attention problem q (1, Hq, N, D), k, v (1, Hkv, N, D) per (workload, ctx).

Two kinds:
- a capture file (``s2o-eval capture``): real attention. All captured layers are stacked along the
  head axis as one problem, layer-major, so each layer's q heads stay grouped with that layer's kv
  heads (gemma-3-270m's three global layers: 12 q heads over 3 kv heads, head dim 256);
- ``llama8b-random``: Llama-3.1-8B's shape (32 q heads, 8 kv heads, head dim 128) with seeded
  Gaussian inputs. Attention is then near-uniform: the worst case for any sparse method.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from .capture import read_capture

RANDOM_SHAPES = {"llama8b-random": {"q_heads": 32, "kv_heads": 8, "head_dim": 128}}
RANDOM_NOTE = ("random Gaussian q, k, v: near-uniform attention, the worst case for sparse methods; "
               "it shows their overhead, never a speedup")


@dataclass
class Workload:
    """One attention problem: q (1, q_heads, N, head_dim), k, v (1, kv_heads, N, head_dim), its softmax
    scale, and what it is (kind "capture" or "random", a one-line note, where it came from)."""

    name: str
    kind: str
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    scale: float
    note: str
    source: dict[str, Any] = field(default_factory=dict)
    beyond_window: bool = False

    @property
    def shape(self) -> dict[str, Any]:
        batch, q_heads, n_ctx, head_dim = self.q.shape
        return {"B": batch, "Hq": q_heads, "Hkv": self.k.shape[1], "N": n_ctx, "D": head_dim,
                "dtype": str(self.q.dtype).removeprefix("torch.")}


def is_random(spec: str) -> bool:
    return spec in RANDOM_SHAPES


def _check_spec(spec: str) -> Path:
    path = Path(spec)
    if not path.is_file():
        raise UserError(f"--workload {spec}: neither a capture file nor one of {', '.join(RANDOM_SHAPES)}; "
                        "make a capture with `s2o-eval capture`")
    return path


def captured_tokens(spec: str) -> int | None:
    """How many tokens a capture workload holds (None for a random workload: any length)."""
    if is_random(spec):
        return None
    return int(read_capture(_check_spec(spec))["meta"]["tokens"])


def stack_layers(layers: list[dict[str, Any]], tokens: int, source: str = "the capture"
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first ``tokens`` positions of every captured layer as one problem, layers along the head axis.

    Layer-major: q heads [l*Hq, (l+1)*Hq) belong to layer l and kv heads [l*Hkv, (l+1)*Hkv) too, so
    with G = Hq / Hkv the usual GQA rule (q head h uses kv head h // G) pairs each q head with its
    own layer's kv head.
    """
    shapes = {(tuple(layer["q"].shape[:2]), tuple(layer["k"].shape[:2]), layer["q"].shape[3]) for layer in layers}
    if len(shapes) != 1:
        raise UserError(f"{source}: its layers differ in head counts or head dim, so they cannot be stacked; "
                        "capture layers of one shape (--layers)")
    q = torch.cat([layer["q"][:, :, :tokens] for layer in layers], dim=1)
    k = torch.cat([layer["k"][:, :, :tokens] for layer in layers], dim=1)
    v = torch.cat([layer["v"][:, :, :tokens] for layer in layers], dim=1)
    return q, k, v


def load_capture_workload(spec: str, tokens: int | None, device: str, *, allow_beyond_window: bool = False) -> Workload:
    """The capture at ``spec`` as a workload of its first ``tokens`` positions (None: all of them)."""
    path = _check_spec(spec)
    payload = read_capture(path)
    meta, layers = payload["meta"], payload["layers"]
    captured = int(meta["tokens"])
    tokens = captured if tokens is None else tokens
    if tokens > captured:
        raise UserError(f"--ctx {tokens} is longer than the {captured} tokens captured in {path}: "
                        f"capture more (s2o-eval capture --ctx ...) or bench a shorter --ctx")
    max_window = (meta.get("model") or {}).get("max_window")
    beyond = bool(max_window) and tokens > int(max_window)
    if beyond and not allow_beyond_window:
        raise UserError(f"--ctx {tokens} is beyond the captured model's window of {max_window} tokens: "
                        "pass --allow-beyond-window to bench it anyway (recorded)")
    scalings = {round(float(layer["scaling"]), 12) for layer in layers}
    if len(scalings) != 1:
        raise UserError(f"{path}: its layers use different softmax scales {sorted(scalings)}; "
                        "capture layers that share one (--layers)")
    q, k, v = (t.to(device).contiguous() for t in stack_layers(layers, tokens, str(path)))
    model = meta.get("model") or {}
    rope = meta.get("rope_scaling")
    note = (f"real attention: {model.get('name', '?')} layers {','.join(map(str, meta['layers']))} stacked "
            f"along heads, on {meta.get('text_source') or 'captured text'}"
            + (f", RoPE linear:{rope['factor']:g} on the global layers" if rope else ""))
    texts = meta.get("texts") or []
    # one digest for all text files keeps every record short (49 essays by default)
    texts_sha256 = hashlib.sha256("".join(t["sha256"] for t in texts).encode()).hexdigest() if texts else None
    source = {"path": str(path), "model": model, "layers": meta["layers"], "text_files": len(texts),
              "texts_sha256": texts_sha256, "text_source": meta.get("text_source"),
              "captured_tokens": captured, "capture_device": meta.get("device"),
              "capture_beyond_window": meta.get("beyond_window"), "capture_rope_scaling": rope}
    return Workload(name=path.stem, kind="capture", q=q, k=k, v=v, scale=float(layers[0]["scaling"]),
                    note=note, source=source, beyond_window=beyond)


def random_workload(spec: str, tokens: int, device: str, *, dtype: torch.dtype = torch.bfloat16,
                    seed: int = 0) -> Workload:
    """Seeded Gaussian q, k, v in the shape ``spec`` names (drawn on ``device``; the same seed and
    length give the same tensors on one device)."""
    shape = RANDOM_SHAPES[spec]
    generator = torch.Generator(device=device).manual_seed(seed)
    draw = lambda heads: torch.randn((1, heads, tokens, shape["head_dim"]), generator=generator,  # noqa: E731
                                     device=device, dtype=dtype)
    q, k, v = draw(shape["q_heads"]), draw(shape["kv_heads"]), draw(shape["kv_heads"])
    return Workload(name=spec, kind="random", q=q, k=k, v=v, scale=shape["head_dim"] ** -0.5, note=RANDOM_NOTE,
                    source={"seed": seed, "distribution": "standard normal"})


def load_workload(spec: str, tokens: int | None, device: str, *, dtype: torch.dtype = torch.bfloat16,
                  seed: int = 0, allow_beyond_window: bool = False) -> Workload:
    """``spec`` is a capture file or a random workload's name (``llama8b-random``)."""
    if is_random(spec):
        if tokens is None:
            raise UserError(f"--workload {spec} needs --ctx (e.g. --ctx 32k,128k)")
        return random_workload(spec, tokens, device, dtype=dtype, seed=seed)
    return load_capture_workload(spec, tokens, device, allow_beyond_window=allow_beyond_window)
