"""Faithfulness check: each block-sparse peer's own code against our re-implementation, same inputs.

Our peers (``kernels/s2o_kernels/peers/``) are re-implementations written from the papers. This tool runs the
authors' public code, imported at run time from ``--peers-dir`` (``scripts/stage_peers.sh DIR``
copies it there; it never enters this repository), on one captured (or random) attention problem,
and for each peer and a few settings (the literature default first, then values of the main knob):

- converts the authors' selection to what their kernel would compute: per (q head, query block)
  the keys before the block's diagonal (the diagonal block itself is always computed, by their
  kernels and by our executor's pass 1);
- measures its density (QK pairs computed / causal pairs) and its output error (rel L2, MSE against
  the exact fp32 reference) with attention computed on exactly that selection by our executor;
- does the same for our re-implementation at the same settings, and the overlap of the two
  selections: the Jaccard index of the listed (q head, query block, key) triples (for block
  selections, the Jaccard of the off-diagonal (query block, key block) pairs);
- where the authors' attention kernel runs without compiled extensions, runs it end to end too and
  reports its error against the exact reference, and against our executor on their selection.

Per peer (why each does what it does is in the docstring of its ``run_*`` function):
  flexprefill  ``get_active_blocks`` (their selection) + their Triton block kernel
  xattention   ``Xattention_prefill`` with its compiled kernel (block_sparse_attn) replaced by a
               recorder of the mask it is handed: selection only unless block_sparse_attn is installed
  pbs          ``apply_permutation`` + ``permuted_block_selection``, and ``permuted_block_sparse_attn_fwd``
  minference   ``minference_prefill_kernel`` compiled from their file, its kernel call recorded;
               selection only (index conversion is a compiled extension)
  flashprefill ``flash_prefill`` with its attention kernel replaced by a recorder of the block lists
               it is handed (their selection), then ``flash_prefill`` whole (their Triton kernel)

    # on this CPU, tiny (plumbing): the peers' Triton code runs in the interpreter
    TRITON_INTERPRET=1 python scripts/peer_faithfulness.py --random --ctx 1024 --device cpu \\
        --peers-dir .peers --out /tmp/faith
    # on a GPU (after `. scripts/gpu_setup.sh`; the capture from `s2o-eval capture --ctx 32k`)
    python3 scripts/peer_faithfulness.py --capture captures/gemma-32k.pt --ctx 32768 \\
        --peers-dir .peers --out "$OUT/faithfulness"

Writes ``peer_faithfulness.json`` and ``peer_faithfulness.md`` under ``--out``. Each peer (and each
setting, and each end-to-end run) sits in its own try/except: one failure is reported in one line
and the others still run.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime
import importlib
import importlib.util
import json
import math
import os
import platform
import sys
import time
import traceback
import types
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from s2o_eval.formatting import fmt_num

BLOCK = 128            # every peer's (and our peers') query/key block
MINFERENCE_BLOCK = 64  # MInference's kernel tiles 64 query rows (convert_vertical_slash_indexes asserts 64x64)

# (literature default first; then the main knob)
SETTINGS: dict[str, list[dict[str, Any]]] = {
    # FlexPrefill's patch default (gamma 0.9, tau 0.1, min budget 1024); its RULER script uses gamma 0.95
    "flexprefill": [{"gamma": 0.9, "tau": 0.1, "min_budget": 1024},
                    {"gamma": 0.95, "tau": 0.1, "min_budget": 1024},
                    {"gamma": 0.8, "tau": 0.1, "min_budget": 1024}],
    # the paper's threshold 0.9, strides 8 and 16 (RULER)
    "xattention": [{"threshold": 0.9, "stride": 8}, {"threshold": 0.9, "stride": 16},
                   {"threshold": 0.8, "stride": 8}, {"threshold": 0.95, "stride": 8}],
    # PBS-Attn's defaults: block 128, segment 256, threshold 0.9
    "pbs": [{"threshold": 0.9, "segment": 256}, {"threshold": 0.8, "segment": 256},
            {"threshold": 0.95, "segment": 256}],
    # MInference's default pattern (vertical 1000, slash 6096); "minference_ratio" scales both
    "minference": [{"ratio": 1.0}, {"ratio": 0.5}],
    # FlashPrefill's alpha is set per model in their configs (0.08 Qwen2 .. 0.22 Qwen3-MoE-VL); 0.12 is their
    # RULER script's (Qwen3-MoE); the other knobs keep FLASHPREFILL_FIXED; min_budget exists on their native path
    "flashprefill": [{"alpha": 0.12}, {"alpha": 0.08}, {"alpha": 0.18}, {"alpha": 0.3},
                     {"alpha": 0.12, "min_blocks": 4}],
}
# every FlashPrefill config of theirs: sink 2 blocks, window 4 blocks, last 2 query blocks dense, no minimum
FLASHPREFILL_FIXED = {"sink_blocks": 2, "window_blocks": 4, "full_last_blocks": 2, "min_blocks": 0}


class PeerUnavailable(Exception):
    """The peer cannot run here; the message says why, in one line."""


# ----------------------------------------------------------------------------------------------
# Selections as key masks, and what we measure on them (pure torch; tests/test_peer_faithfulness.py)
# ----------------------------------------------------------------------------------------------
# A selection is a bool ``keys (batch, q_heads, n_qblocks, seq_len)``: query block t computes key j
# for every row of the block. Only keys before the block's first row are listed: the block's own
# causal diagonal is computed whatever the selection (pass 1 of our executor; every peer's kernel).

def prefix(n_qblocks: int, n_ctx: int, block: int, device) -> Tensor:
    """bool (n_qblocks, seq_len): key j lies before query block t's first row."""
    starts = torch.arange(n_qblocks, device=device) * block
    return torch.arange(n_ctx, device=device)[None, :] < starts[:, None]


def block_rows(n_ctx: int, block: int, device) -> Tensor:
    """int64 (n_qblocks,): query rows in each block (the last one may be short)."""
    n_blocks = -(-n_ctx // block)
    return (n_ctx - torch.arange(n_blocks, device=device) * block).clamp(max=block)


def blocks_to_keys(selected: Tensor, block: int, n_ctx: int) -> Tensor:
    """Key mask of a block selection ``(batch, heads, n_qblocks, n_kblocks)`` (blocks on or after the
    diagonal drop out: the diagonal is computed anyway, later blocks are never causal)."""
    tokens = selected.bool().repeat_interleave(block, dim=-1)[..., :n_ctx]
    return tokens & prefix(selected.shape[-2], n_ctx, block, selected.device)


def plan_to_keys(plan, n_ctx: int, q_heads: int) -> Tensor:
    """Key mask of a plan whose segment is its query block (how every block-sparse planner builds
    them): list t's keys, plus the sinks before each block; shared lists expand to their q heads."""
    if plan.query_order is not None:
        raise ValueError("plans with a query order are not selections of query blocks")
    block = plan.segment
    batch, heads, _ = plan.key_index.shape
    n_qblocks = plan.list_len.shape[-1]
    keys = torch.zeros(batch, heads, n_qblocks, n_ctx, dtype=torch.bool, device=plan.key_index.device)
    blocks = torch.arange(n_qblocks, device=keys.device)
    for b in range(batch):
        for h in range(heads):
            lengths = plan.list_len[b, h].long()
            owner = blocks.repeat_interleave(lengths)                       # query block of each list entry
            first = (lengths.cumsum(0) - lengths).repeat_interleave(lengths)
            slot = plan.list_start[b, h][owner] + torch.arange(owner.numel(), device=keys.device) - first
            keys[b, h, owner, plan.key_index[b, h, slot].long()] = True
    if plan.sinks:
        keys |= (torch.arange(n_ctx, device=keys.device) < plan.sinks) & prefix(n_qblocks, n_ctx, block, keys.device)
    return keys.repeat_interleave(q_heads // heads, dim=1)


def keys_to_plan(keys: Tensor, block: int):
    """The plan (one list per q head and query block, keys ascending) computing exactly ``keys``."""
    from s2o_kernels.plan import Plan

    batch, heads, n_qblocks, n_ctx = keys.shape
    keys = keys & prefix(n_qblocks, n_ctx, block, keys.device)
    counts = keys.sum(-1)
    total = max(int(counts.sum(-1).max()), 1) if counts.numel() else 1
    key_index = torch.zeros(batch, heads, total, dtype=torch.int32, device=keys.device)
    for b in range(batch):
        for h in range(heads):
            _, columns = keys[b, h].nonzero(as_tuple=True)  # row-major: by query block, then key
            key_index[b, h, : columns.numel()] = columns.to(torch.int32)
    return Plan(segment=block, sinks=0, key_index=key_index, list_start=counts.cumsum(-1) - counts,
                list_len=counts.to(torch.int32))


def keys_density(keys: Tensor, block: int, n_ctx: int) -> float:
    """QK pairs computed / causal pairs: listed keys times the block's rows, plus every block's
    causal diagonal."""
    batch, heads = keys.shape[:2]
    listed = float((keys.sum(-1).double() * block_rows(n_ctx, block, keys.device)).sum())
    positions = torch.arange(n_ctx, device=keys.device, dtype=torch.float64)
    diagonal = float((positions - torch.div(positions, block, rounding_mode="floor") * block + 1).sum())
    return (listed + batch * heads * diagonal) / (batch * heads * n_ctx * (n_ctx + 1) / 2)


def keys_jaccard(a: Tensor, b: Tensor) -> float:
    """|a and b| / |a or b| over the listed (head, query block, key) triples; 1 when both are empty."""
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


def flat_blocks_to_selection(block_idx, n_blocks: int, device) -> Tensor:
    """FlexPrefill's ``block_idx`` (per batch, per q head: flattened indices t * n_blocks + j of the
    block grid; indices past the grid are padding) as bool ``(batch, heads, n_blocks, n_blocks)``."""
    selected = torch.zeros(len(block_idx), len(block_idx[0]), n_blocks * n_blocks, dtype=torch.bool, device=device)
    for b, per_head in enumerate(block_idx):
        for h, flat in enumerate(per_head):
            flat = flat.long().to(device)
            selected[b, h, flat[flat < n_blocks * n_blocks]] = True
    return selected.view(len(block_idx), len(block_idx[0]), n_blocks, n_blocks)


def compact_blocks_to_selection(block_index: Tensor, counts: Tensor) -> Tensor:
    """FlashPrefill's block lists as bool ``(batch, heads, n_qblocks, n_kblocks)``.

    block_index ``(batch, n_qblocks, n_kblocks, heads)``: per query block and head, key block indices
    (theirs: the chosen ones ascending, then n_kblocks as padding); counts ``(batch, n_qblocks, heads)``:
    how many of them their kernel reads. Only those count, whatever the rest holds."""
    batch, n_qblocks, n_kblocks, heads = block_index.shape
    slot = torch.arange(n_kblocks, device=block_index.device)[None, None, :, None]
    read = slot < counts[:, :, None, :].long()
    # entries not read go to a spare column n_kblocks, dropped below
    index = torch.where(read, block_index.long().clamp(0, n_kblocks), n_kblocks)
    selected = torch.zeros(batch, n_qblocks, n_kblocks + 1, heads, dtype=torch.bool, device=block_index.device)
    selected.scatter_(2, index, True)
    return selected[:, :, :n_kblocks].permute(0, 3, 1, 2)


def selection_to_flat_blocks(selected: Tensor) -> list[list[Tensor]]:
    """The inverse: per batch and head, the flattened indices of the chosen blocks (ascending)."""
    n_blocks = selected.shape[-1]
    return [[row.reshape(-1).nonzero()[:, 0] for row in per_head] for per_head in selected.view(
        selected.shape[0], selected.shape[1], n_blocks, n_blocks)]


def refine_blocks(selected: Tensor, factor: int, n_ctx: int, block: int) -> Tensor:
    """A block selection at ``block // factor``: each chosen block becomes its factor x factor
    sub-blocks, less those above the causal diagonal (a kernel's grid never computes them)."""
    fine = block // factor
    n_fine = -(-n_ctx // fine)
    out = selected.repeat_interleave(factor, -1).repeat_interleave(factor, -2)[..., :n_fine, :n_fine]
    return out & torch.ones(n_fine, n_fine, dtype=torch.bool, device=selected.device).tril()


def selection_checks(selected: Tensor) -> dict[str, int]:
    """What a block selection does outside the lower triangle we convert: query blocks that skip
    their own diagonal (we compute it anyway), blocks above it (no kernel computes them)."""
    n_blocks = selected.shape[-1]
    eye = torch.eye(n_blocks, dtype=torch.bool, device=selected.device)
    upper = torch.ones(n_blocks, n_blocks, dtype=torch.bool, device=selected.device).triu(1)
    return {"diagonal_blocks_missing": int((~selected & eye).sum()),
            "blocks_above_diagonal": int((selected & upper).sum())}


def permuted_selection_to_keys(block_mask: Tensor, key_indices: Tensor, *, block: int, segment: int,
                               n_ctx: int) -> Tensor:
    """PBS-Attn's selection as a key mask. ``block_mask (batch, heads, n_qblocks, n_kblocks)`` chooses
    blocks of the PERMUTED key layout, slot s of which holds position ``key_indices[..., s]``. Their
    kernel visits chosen blocks of earlier segments and of the query block's own segment (causally);
    later segments never."""
    n_qblocks = -(-n_ctx // block)
    t = torch.arange(n_qblocks, device=block_mask.device)
    visited = (t * block // segment)[None, :] <= (t * block // segment)[:, None]   # key block seg <= query seg
    slots = (block_mask[..., :n_qblocks, :n_qblocks].bool() & visited).repeat_interleave(block, -1)[..., :n_ctx]
    index = key_indices[:, :, None, :n_ctx].long().expand_as(slots)
    keys = torch.zeros_like(slots).scatter_(-1, index, slots)
    return keys & prefix(n_qblocks, n_ctx, block, keys.device)


def vertical_slash_kernel_keys(columns: Tensor, offsets: Tensor, n_ctx: int, block: int = MINFERENCE_BLOCK) -> Tensor:
    """What MInference's kernel computes from a vertical-slash choice, as a key mask with query blocks
    of ``block`` rows. columns: int (batch, heads, n_v) key positions; offsets: int (batch, heads, n_s)
    query - key offsets (0 = the main diagonal).

    Their index conversion (csrc/vertical_slash_index.cu, a compiled extension) is replayed here:
    per row block [start, end), offsets s < end are walked in descending order; each gives the key
    range [max(end - s, block) - block, max(end - s, block)) (the keys the diagonal reaches from the
    block's rows); a range ending past the current one by at most ``block`` extends it by ``block``
    (so merged ranges may hold up to block - 1 keys no diagonal reaches), a farther one starts anew.
    Columns outside the ranges are added one by one.
    """
    batch, heads, _ = offsets.shape
    device = offsets.device
    n_rows = -(-n_ctx // block)
    end = (torch.arange(n_rows, device=device) + 1) * block            # the kernel's end_m is not clipped
    width = n_rows * block + 2 * block + 1                               # room for ranges past the end
    walk = offsets.reshape(batch * heads, -1).long().sort(dim=-1, descending=True).values
    diff = torch.zeros(batch * heads, n_rows, width, dtype=torch.int32, device=device)
    start_at = torch.zeros(batch * heads, n_rows, dtype=torch.long, device=device)
    end_at = torch.zeros_like(start_at)
    started = torch.zeros_like(start_at, dtype=torch.bool)

    def emit(where: Tensor) -> None:  # add the ranges [start_at, end_at) where ``where`` holds
        diff.scatter_add_(-1, start_at[..., None], where.int()[..., None])
        diff.scatter_add_(-1, end_at[..., None], -where.int()[..., None])

    for i in range(walk.shape[-1]):
        s = walk[:, i:i + 1]
        valid = s < end[None, :]
        reach = (end[None, :] - s).clamp(min=block)
        fresh = valid & ~started
        jump = valid & started & (reach > end_at + block)
        grow = valid & started & ~jump & (reach > end_at)
        emit(jump)
        start_at = torch.where(fresh | jump, reach - block, start_at)
        end_at = torch.where(fresh | jump, reach, torch.where(grow, end_at + block, end_at))
        started |= valid
    emit(started)
    covered = diff.cumsum(-1, dtype=torch.int32)[..., :n_ctx] > 0
    chosen = torch.zeros(batch * heads, n_ctx, dtype=torch.bool, device=device)
    chosen.scatter_(-1, columns.reshape(batch * heads, -1).long().clamp(0, n_ctx - 1), True)
    keys = (covered | chosen[:, None, :]) & prefix(n_rows, n_ctx, block, device)
    return keys.view(batch, heads, n_rows, n_ctx)


# ----------------------------------------------------------------------------------------------
# Running their code
# ----------------------------------------------------------------------------------------------

def peer_root(peers_dir: Path, name: str) -> Path:
    root = peers_dir / name
    if not root.is_dir():
        raise PeerUnavailable(f"{root} is missing: stage the peers with scripts/stage_peers.sh {peers_dir}")
    return root


def peer_source(root: Path) -> dict[str, str]:
    """Repository and commit of the staged copy (stage_peers.sh writes SOURCE)."""
    path = root / "SOURCE"
    if not path.is_file():
        return {}
    return dict(line.split(" ", 1) for line in path.read_text().split("\n") if " " in line)


def import_peer(root: Path, module: str):
    """Import one of their modules by its own package name, their tree first on sys.path."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(module)


def load_file(path: Path, name: str):
    """Load one of their files as a module without running its package's __init__ (which pulls
    in model-patching code for other transformers versions)."""
    if not path.is_file():
        raise PeerUnavailable(f"{path} is missing from the staged copy")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def compile_parts(path: Path, names: set[str], namespace: dict[str, Any]) -> dict[str, Any]:
    """Their top-level functions and assignments named ``names``, compiled from their file as written
    and run in ``namespace``: their code, without the import chain of the rest of the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    def named(node) -> bool:
        if isinstance(node, ast.FunctionDef):
            return node.name in names
        return isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in names for t in node.targets)

    wanted = [node for node in tree.body if named(node)]
    found = {node.name if isinstance(node, ast.FunctionDef) else node.targets[0].id for node in wanted}
    if found != names:
        raise PeerUnavailable(f"{path.name} no longer defines {', '.join(sorted(names - found))}")
    exec(compile(ast.Module(body=wanted, type_ignores=[]), str(path), "exec"), namespace)
    return namespace


def stub_module(name: str, why: str) -> types.ModuleType:
    """A stand-in for a compiled extension that cannot be built here: importing works, calling says why."""
    module = types.ModuleType(name)

    def unavailable(*args, **kwargs):
        raise PeerUnavailable(why)

    def attribute(attr: str):
        if attr.startswith("__"):  # __file__, __path__...: tools that walk sys.modules (inspect) ask
            raise AttributeError(attr)
        return unavailable

    module.__getattr__ = attribute
    sys.modules[name] = module
    return module


def add_wheels(peers_dir: Path) -> None:
    """Pure-Python wheels staged beside the peers (einops, for FlexPrefill) import from the zip."""
    for wheel in sorted((peers_dir / "_wheels").glob("*.whl")):
        if str(wheel) not in sys.path:
            sys.path.append(str(wheel))


def fla_stand_ins() -> None:
    """FlashPrefill's file imports two decorators from fla.utils (flash-linear-attention, which pulls
    in transformers): where fla is not installed, stand-ins doing what they do on our calls. ``contiguous``
    makes every tensor argument contiguous; ``autocast_custom_fwd`` only matters under autocast, which
    this tool never enables."""
    try:
        importlib.import_module("fla.utils")
        return
    except ImportError:
        pass

    def contiguous(fn):
        def wrapped(ctx, *args, **kwargs):
            args = [a.contiguous() if isinstance(a, Tensor) else a for a in args]
            kwargs = {k: v.contiguous() if isinstance(v, Tensor) else v for k, v in kwargs.items()}
            return fn(ctx, *args, **kwargs)
        return wrapped

    utils = types.ModuleType("fla.utils")
    utils.contiguous = contiguous
    utils.autocast_custom_fwd = lambda fn: fn
    package = types.ModuleType("fla")
    package.utils = utils
    sys.modules.update({"fla": package, "fla.utils": utils})


@contextlib.contextmanager
def interpreter_bool_masks(active: bool):
    """CPU plumbing runs only: the Triton interpreter (3.x) refuses a load/store mask that mixes a
    scalar condition with a vector one (``(pid < n) & (offs < m)``: it arrives as int64, "mask has
    unsupported dtype"); a GPU compiles it fine. Cast such masks to bool while active."""
    if not active:
        yield
        return
    import numpy as np
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    store, load = builder.create_masked_store, builder.create_masked_load

    def as_bool(mask):
        return interpreter.TensorHandle(np.asarray(mask.data, dtype=bool), mask.dtype)

    builder.create_masked_store = lambda self, ptrs, value, mask, *a: store(self, ptrs, value, as_bool(mask), *a)
    builder.create_masked_load = lambda self, ptrs, mask, *a: load(self, ptrs, as_bool(mask), *a)
    try:
        yield
    finally:
        builder.create_masked_store, builder.create_masked_load = store, load


class GridRecorder:
    """Stands in for a Triton kernel launched as ``kernel[grid](*args)``: keeps each launch's arguments."""

    def __init__(self):
        self.calls: list[tuple] = []

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.calls.append(args)


class Recorder:
    """Stands in for a peer's attention kernel: keeps the arguments of each call, returns zeros
    shaped like the query (so their wrapper finishes and we read the selection it computed)."""

    def __init__(self):
        self.calls: list[tuple] = []

    def __call__(self, *args, **kwargs):
        self.calls.append(args)
        return torch.zeros_like(args[0])


@contextlib.contextmanager
def cuda_names_on_cpu(active: bool):
    """CPU plumbing runs only (never on a GPU): the peers hard-code "cuda" (``x.to("cuda")``, tensors
    made with ``device="cuda"``) and read the GPU's name; map those to the CPU. The name given lacks
    "100", so XAttention takes its torch estimate here (the Triton interpreter gets bf16 ``tl.dot``
    wrong: their Triton estimate, right in fp32, returns garbage in bf16 on the CPU)."""
    if not active:
        yield
        return

    def cpu(device):
        is_cuda = (isinstance(device, str) and device.startswith("cuda")) or (
            isinstance(device, torch.device) and device.type == "cuda")
        return "cpu" if is_cuda else device

    def with_cpu(fn):
        def wrapped(*args, **kwargs):
            if "device" in kwargs:
                kwargs["device"] = cpu(kwargs["device"])
            return fn(*args, **kwargs)
        return wrapped

    original_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        return with_cpu(original_to)(self, *(cpu(a) for a in args), **kwargs)

    factories = ("arange", "zeros", "ones", "empty", "full", "tensor", "eye")
    saved = {name: getattr(torch, name) for name in factories}
    saved_cuda = {name: getattr(torch.cuda, name) for name in ("get_device_properties", "current_device")}
    try:
        torch.Tensor.to = to
        for name in factories:
            setattr(torch, name, with_cpu(saved[name]))
        torch.cuda.get_device_properties = lambda *a, **k: types.SimpleNamespace(name="CPU (Triton interpreter)")
        torch.cuda.current_device = lambda: 0
        yield
    finally:
        torch.Tensor.to = original_to
        for name, fn in saved.items():
            setattr(torch, name, fn)
        for name, fn in saved_cuda.items():
            setattr(torch.cuda, name, fn)


# ----------------------------------------------------------------------------------------------
# Inputs, reference, measurements
# ----------------------------------------------------------------------------------------------

class Problem:
    """q (1, q_heads, N, head_dim), k, v (1, kv_heads, N, head_dim), the scale, the exact reference."""

    def __init__(self, q: Tensor, k: Tensor, v: Tensor, scale: float, source: dict[str, Any]):
        from s2o_kernels.reference import exact_reference

        self.q, self.k, self.v, self.scale, self.source = q, k, v, scale, source
        self.n_ctx, self.head_dim = q.shape[2], q.shape[3]
        self.q_heads, self.group = q.shape[1], q.shape[1] // k.shape[1]
        self.ref = exact_reference(q, k, v, scale)
        self.on_cpu = q.device.type == "cpu"

    def their_q(self) -> Tensor:
        """q for peer code that hard-codes the scale 1/sqrt(head_dim) (all four do): pre-scaled so
        that their scale gives ours (a no-op when they agree, as for gemma-3: 256^-0.5)."""
        factor = self.scale * math.sqrt(self.head_dim)
        return self.q if abs(factor - 1) < 1e-6 else (self.q.float() * factor).to(self.q.dtype)

    def mha(self, x: Tensor) -> Tensor:
        """k or v repeated to the q heads (q head h reads kv head h // G), for code that wants MHA."""
        return x.repeat_interleave(self.group, dim=1).contiguous()

    def scale_note(self) -> list[str]:
        factor = self.scale * math.sqrt(self.head_dim)
        return [] if abs(factor - 1) < 1e-6 else [
            f"q pre-scaled by {factor:.6g}: their code hard-codes the softmax scale 1/sqrt(head_dim)"]


def random_qkv(n_ctx: int, *, seed: int, hot: float, q_heads: int = 12, kv_heads: int = 3,
               head_dim: int = 256) -> tuple[Tensor, Tensor, Tensor]:
    """Seeded Gaussian q, k, v (gemma-3-270m's shape), fp32 on the CPU (the same on any machine).

    With ``hot`` > 0 a random tenth of the 64-key blocks (and the first) lean along one direction per
    kv head that all its queries share, raising their logits by about ``hot``: attention concentrates
    there, as on real text, so the selections are sparse (plain Gaussians keep nearly every block)."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(1, q_heads, n_ctx, head_dim, generator=gen)
    k = torch.randn(1, kv_heads, n_ctx, head_dim, generator=gen)
    v = torch.randn(1, kv_heads, n_ctx, head_dim, generator=gen)
    if hot > 0:
        lean = torch.nn.functional.normalize(torch.randn(1, kv_heads, 1, head_dim, generator=gen), dim=-1)
        lean = lean * math.sqrt(hot * math.sqrt(head_dim))      # (a u).(a u) * scale = hot
        hot_blocks = torch.rand(-(-n_ctx // 64), generator=gen) < 0.1
        hot_blocks[0] = True
        hot_keys = hot_blocks.repeat_interleave(64)[:n_ctx]
        q += lean.repeat_interleave(q_heads // kv_heads, dim=1)
        k[:, :, hot_keys] += lean
    return q, k, v


def load_problem(args) -> Problem:
    if args.random:
        q, k, v = random_qkv(args.ctx, seed=args.seed, hot=args.hot)
        q, k, v = (x.to(args.device, torch.bfloat16) for x in (q, k, v))
        source = {"kind": "random", "seed": args.seed, "hot": args.hot,
                  "note": f"gemma-3-270m's shape, Gaussian, hot key blocks +{args.hot} logits"}
        return Problem(q, k, v, 256 ** -0.5, source)
    from s2o_eval.bench.workloads import load_workload

    work = load_workload(args.capture, args.ctx, args.device, allow_beyond_window=args.allow_beyond_window)
    source = {"kind": work.kind, "note": work.note, **work.source, "captured_dtype": str(work.q.dtype)}
    # the peers' kernels (and our executor on a GPU) take half precision: a CPU capture is fp32
    q, k, v = (x.to(torch.bfloat16) if x.dtype == torch.float32 else x for x in (work.q, work.k, work.v))
    return Problem(q, k, v, work.scale, source)


def output_errors(out: Tensor, ref: Tensor) -> dict[str, float]:
    from s2o_kernels.reference import output_error

    rel_l2, mse = output_error(out, ref)  # accumulates in float64 one head at a time: no full-size copy
    return {"rel_l2": rel_l2, "mse": mse}


def run_executor(problem: Problem, plan, block: int) -> Tensor:
    """Attention on exactly the plan's keys (tau = 0) through the shared executor (PyTorch twin on a CPU)."""
    from s2o_kernels import execute_plan

    return execute_plan(problem.q, problem.k, problem.v, plan, tau=0.0, scale=problem.scale, block_m=block)[0]


def measure(problem: Problem, keys: Tensor, plan, block: int) -> dict[str, Any]:
    out = run_executor(problem, plan, block)
    return {"density": keys_density(keys, block, problem.n_ctx), **output_errors(out, problem.ref), "output": out}


def compare(problem: Problem, their_keys: Tensor, our_plan, block: int) -> dict[str, Any]:
    """Density and error of their selection and of ours (the same block size), and their overlap."""
    our_keys = plan_to_keys(our_plan, problem.n_ctx, problem.q_heads)
    theirs = measure(problem, their_keys, keys_to_plan(their_keys, block), block)
    ours = measure(problem, our_keys, our_plan, block)
    del ours["output"]  # only their output is compared again (with their own kernel's)
    return {"theirs": theirs, "ours": ours, "jaccard": keys_jaccard(their_keys, our_keys), "block": block}


def end_to_end(row: dict[str, Any], problem: Problem, run: Callable[[], Tensor], what: str) -> None:
    """Their whole attention: error against the exact reference and against our executor on their
    selection (that one checks our conversion: only kernel rounding should separate them)."""
    try:
        out = run()
        row["e2e"] = {"what": what, **output_errors(out, problem.ref),
                      "vs_executor_rel_l2": output_errors(out, row["theirs"]["output"])["rel_l2"]}
    except Exception as error:  # noqa: BLE001 - one line in the report, the run goes on
        row["e2e"] = {"what": what, "error": one_line(error)}


def one_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip().split("\n")[0]
    return text[:300]


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------------------------
# The peers
# ----------------------------------------------------------------------------------------------

def torch_block_mean(x: Tensor, kernel_size: int, pool_type: str = "avg") -> Tensor:
    """Mean over consecutive blocks of ``kernel_size`` positions of x (batch, seq_len, heads, dim),
    the last block over its real positions: what their Triton ``triton_bnhd_pool`` computes for
    pool_type "avg", for head dims it refuses (it takes 16..128)."""
    if pool_type != "avg":
        raise PeerUnavailable(f"stand-in pool covers 'avg' only, got {pool_type!r}")
    batch, n_ctx, heads, dim = x.shape
    n_blocks = -(-n_ctx // kernel_size)
    sums = torch.zeros(batch, n_blocks, heads, dim, dtype=torch.float32, device=x.device)
    sums.index_add_(1, torch.arange(n_ctx, device=x.device) // kernel_size, x.float())
    sizes = (n_ctx - torch.arange(n_blocks, device=x.device) * kernel_size).clamp(max=kernel_size)
    return (sums / sizes[None, :, None, None]).to(x.dtype)


def run_flexprefill(problem: Problem, root: Path, settings, report: dict) -> list[dict]:
    """FlexPrefill (github.com/ByteDance-Seed/FlexPrefill): Triton + torch, no compiled extension.

    Selection: their ``get_active_blocks`` with the arguments ``flex_prefill_attention`` gives it
    (budgets in blocks). Their file is loaded alone (its package __init__ patches transformers 4.44
    models). For head_dim > 128 their Triton key pooling (``triton_bnhd_pool``) refuses the shape:
    ``torch_block_mean`` stands in (the same block mean). End to end: ``flex_prefill_attention``
    itself where head_dim <= 128; otherwise (it refuses head_dim 256) their selection through their
    Triton block kernel ``triton_block_wise_attention`` at 64-blocks, which takes head_dim 256
    (each chosen 128-block as its 64-sub-blocks: the same QK pairs).
    """
    from s2o_kernels.peers.flexprefill import flexprefill_plan

    with cuda_names_on_cpu(problem.on_cpu):
        ops = load_file(root / "flex_prefill/ops/flex_prefill_attention.py", "_peer_flexprefill_ops")
    if ops.GPU_NAME is None:  # their launch heuristics read the GPU's name; none on a CPU
        ops.GPU_NAME = "cpu"
    if problem.head_dim not in (16, 32, 64, 128):
        ops.triton_bnhd_pool = torch_block_mean
        report["notes"].append(f"their triton_bnhd_pool refuses head_dim {problem.head_dim}: "
                               "key blocks pooled by torch_block_mean (same mean)")
    q, k, v = (x.transpose(1, 2).contiguous() for x in (problem.their_q(), problem.k, problem.v))
    n_blocks = -(-problem.n_ctx // BLOCK)
    rows = []
    for setting in settings:
        def row_for(setting=setting):
            gamma, tau, min_budget = setting["gamma"], setting["tau"], setting["min_budget"]
            with cuda_names_on_cpu(problem.on_cpu):
                block_idx = ops.get_active_blocks(q, k, v, BLOCK, gamma, math.ceil(min_budget / BLOCK),
                                                  math.ceil(2147483647 / BLOCK), tau, False)
            selected = flat_blocks_to_selection(block_idx, n_blocks, q.device)
            our_plan, query_aware = flexprefill_plan(problem.q, problem.k, block=BLOCK, gamma=gamma, tau=tau,
                                                     min_budget=min_budget, scale=problem.scale)
            row = compare(problem, blocks_to_keys(selected, BLOCK, problem.n_ctx), our_plan, BLOCK)
            row["checks"] = {**selection_checks(selected), "our_query_aware_heads": int(query_aware.sum())}
            if problem.head_dim in (16, 32, 64, 128):
                def run():
                    return ops.flex_prefill_attention(q, k, v, gamma, tau, min_budget=min_budget,
                                                      block_size=BLOCK).transpose(1, 2)
                row["_e2e"] = (run, "flex_prefill_attention (their selection + Triton kernel)")
            else:
                fine = selection_to_flat_blocks(refine_blocks(selected, 2, problem.n_ctx, BLOCK))

                def run():
                    with cuda_names_on_cpu(problem.on_cpu):
                        return ops.triton_block_wise_attention(q, k, v, fine, BLOCK // 2).transpose(1, 2)
                row["_e2e"] = (run, "their selection through their Triton block kernel at 64-blocks")
            return row
        rows.append(guarded(setting, row_for))
    report["ran"] = ("selection (get_active_blocks) + end to end (" + (
        "flex_prefill_attention)" if problem.head_dim in (16, 32, 64, 128) else
        f"their Triton block kernel at 64-blocks: flex_prefill_attention refuses head_dim {problem.head_dim})"))
    return rows


def xattention_estimates(problem: Problem) -> tuple[str, ...]:
    """Which of XAttention's estimates to run: xattn_estimate keeps its Triton path only on devices
    whose name holds "100" (the H100 here), and that is the one reported; its torch path runs too,
    as a cross-check and a fallback. On a CPU only the torch path: the interpreter gets their bf16
    ``tl.dot`` wrong (right in fp32, garbage in bf16)."""
    if problem.on_cpu or "100" not in torch.cuda.get_device_name():
        return ("torch",)
    return ("triton", "torch")


def run_xattention(problem: Problem, root: Path, settings, report: dict) -> list[dict]:
    """XAttention (github.com/mit-han-lab/x-attention): selection in torch or Triton, attention in
    ``block_sparse_attn`` (mit-han-lab/Block-Sparse-Attention), a compiled CUDA extension.

    Their ``Xattention_prefill`` runs whole, with the kernel it calls replaced by a recorder of the
    block mask it is handed (so their chunk size, padding and slicing are theirs). K/V are repeated
    to the q heads (their code asserts MHA). Which estimate (Triton, torch): ``xattention_estimates``.
    End to end only when block_sparse_attn is importable here.
    """
    from s2o_kernels.peers.xattention import xattention_plan

    try:
        real_kernel = importlib.import_module("block_sparse_attn").block_sparse_attn_func
    except ImportError:
        real_kernel = None
        stub_module("block_sparse_attn", "block_sparse_attn is a compiled CUDA extension, not built here")
    with cuda_names_on_cpu(problem.on_cpu):
        xattn = import_peer(root, "xattn.src.Xattention")
    q, k, v = problem.their_q(), problem.mha(problem.k), problem.mha(problem.v)
    rows = []
    for setting in settings:
        def row_for(setting=setting):
            threshold, stride = setting["threshold"], setting["stride"]
            masks = {}
            for path in xattention_estimates(problem):
                recorder = Recorder()
                xattn.block_sparse_attn_func = recorder
                try:
                    with cuda_names_on_cpu(problem.on_cpu):
                        xattn.Xattention_prefill(q, k, v, stride, threshold=threshold, block_size=BLOCK,
                                                 use_triton=path == "triton", causal=True)
                    # block_sparse_attn_func(q, k, v, cu_q, cu_k, head_mask_type, None, block_mask, ...)
                    masks[path] = recorder.calls[-1][7]
                except Exception as error:  # noqa: BLE001 - their Triton estimate may not fit; the torch one then
                    if path == "torch":
                        raise
                    report["notes"].append(f"threshold {threshold} stride {stride}: their Triton estimate failed "
                                           f"({one_line(error)}); their torch estimate used")
            path = "triton" if "triton" in masks else "torch"  # the one their code takes on this device
            mask = masks[path]
            our_plan = xattention_plan(problem.q, problem.k, block=BLOCK, scale=problem.scale, stride=stride,
                                       threshold=threshold)
            row = compare(problem, blocks_to_keys(mask, BLOCK, problem.n_ctx), our_plan, BLOCK)
            row["checks"] = {**selection_checks(mask), "estimate": path}
            if len(masks) == 2:  # their two estimates should pick (nearly) the same blocks
                as_keys = {name: blocks_to_keys(m, BLOCK, problem.n_ctx) for name, m in masks.items()}
                row["checks"]["triton_vs_torch_estimate_jaccard"] = keys_jaccard(as_keys["triton"], as_keys["torch"])
            if real_kernel is not None:
                def run():
                    xattn.block_sparse_attn_func = real_kernel
                    return xattn.Xattention_prefill(q, k, v, stride, threshold=threshold, block_size=BLOCK,
                                                    use_triton=path == "triton", causal=True)
                row["_e2e"] = (run, "Xattention_prefill with block_sparse_attn")
            return row
        rows.append(guarded(setting, row_for))
    report["ran"] = ("selection (Xattention_prefill, kernel call recorded) + end to end (block_sparse_attn)"
                     if real_kernel is not None else
                     "selection only: their attention kernel is block_sparse_attn, a compiled CUDA extension "
                     "(mit-han-lab/Block-Sparse-Attention) that cannot be built here")
    return rows


def run_pbs(problem: Problem, root: Path, settings, report: dict) -> list[dict]:
    """PBS-Attn (github.com/xinghaow99/pbs-attn): torch selection, Triton attention kernel.

    Selection: their ``apply_permutation`` then ``permuted_block_selection``, or'd with the own-segment
    mask, in the order ``permuted_block_sparse_attn_fwd`` calls them. K/V repeated to the q heads
    (their code asserts MHA; their transformers patch repeats K/V too). End to end:
    ``permuted_block_sparse_attn_fwd`` (Triton); on a CPU, if the interpreter cannot run it, their
    torch reference (use_triton=False), noted.
    """
    from s2o_kernels.peers.pbs import pbs_plan

    pbs = import_peer(root, "pbs_attn.src.pbs")
    q, k, v = problem.their_q(), problem.mha(problem.k), problem.mha(problem.v)
    positions = torch.arange(problem.n_ctx, device=q.device).expand(q.shape[0], q.shape[1], -1)
    rows = []
    for setting in settings:
        def row_for(setting=setting):
            threshold, segment = setting["threshold"], setting["segment"]
            perm_k, key_indices = pbs.apply_permutation(query_states=q, key_states=k, block_size=BLOCK,
                                                        segment_size=segment)
            _, block_mask, segment_mask = pbs.permuted_block_selection(
                q, perm_k, positions, key_indices, BLOCK, segment, threshold=threshold, causal=True,
                force_select_first_block=True)
            block_mask = block_mask | segment_mask[None, None]
            del perm_k
            their_keys = permuted_selection_to_keys(block_mask, key_indices, block=BLOCK, segment=segment,
                                                    n_ctx=problem.n_ctx)
            our_plan = pbs_plan(problem.q, problem.k, block=BLOCK, segment=segment, scale=problem.scale,
                                threshold=threshold)
            row = compare(problem, their_keys, our_plan, BLOCK)

            def run():
                try:
                    return pbs.permuted_block_sparse_attn_fwd(q, k, v, BLOCK, segment, threshold, True, use_triton=True)
                except Exception as error:  # noqa: BLE001 - the interpreter (CPU only) may not run it
                    if not problem.on_cpu:
                        raise
                    report["notes"].append(f"threshold {threshold}: their Triton kernel failed in the interpreter "
                                           f"({one_line(error)}); their torch reference used")
                    return pbs.permuted_block_sparse_attn_fwd(q, k, v, BLOCK, segment, threshold, True,
                                                              use_triton=False)
            row["_e2e"] = (run, "permuted_block_sparse_attn_fwd")
            return row
        rows.append(guarded(setting, row_for))
    report["ran"] = "selection (apply_permutation + permuted_block_selection) + end to end (their Triton kernel)"
    return rows


def run_minference(problem: Problem, root: Path, settings, report: dict) -> list[dict]:
    """MInference (github.com/microsoft/MInference): torch selection; attention needs
    ``convert_vertical_slash_indexes`` (minference.cuda, or vLLM / sgl-kernel), a compiled extension,
    and its Triton kernel takes head_dim <= 128.

    Selection: their module-level ``minference_prefill_kernel`` (with ``sum_all_diagonal_matrix`` and
    ``LAST_Q_MASK``) compiled from minference/modules/minference_forward.py as written, without the
    rest of that file (it imports vLLM, flash-attn and transformers internals); its call to
    ``vertical_slash_sparse_attention`` is recorded. One head at a time, each q head with its kv
    head, as their prefill forward does; no per-model pattern file (none exists for gemma), so every
    head takes their default vertical-slash budgets, scaled by ``minference_ratio``. Their kernel's
    index conversion is replayed by ``vertical_slash_kernel_keys``; ours runs at the same 64-row
    blocks. ``exact_union_density`` is their choice with no range rounding.
    """
    from s2o_kernels.peers.minference import minference_plan, vertical_slash_to_plan

    recorder = Recorder()
    namespace = {"torch": torch, "math": math, "vertical_slash_sparse_attention": recorder}
    for name in ("block_sparse_attention", "streaming_forward"):  # other patterns: never taken here
        namespace[name] = stub_module(f"_peer_minference_{name}", f"{name} is not part of this check").run
    with cuda_names_on_cpu(problem.on_cpu):
        compile_parts(root / "minference/modules/minference_forward.py",
                      {"last_q", "arange", "LAST_Q_MASK", "sum_all_diagonal_matrix", "minference_prefill_kernel"},
                      namespace)
    q = problem.their_q()
    n_ctx, group = problem.n_ctx, problem.group
    rows = []
    for setting in settings:
        def row_for(setting=setting):
            ratio = setting["ratio"]
            columns, offsets = [], []
            for head in range(problem.q_heads):
                recorder.calls.clear()
                kv = slice(head // group, head // group + 1)
                with cuda_names_on_cpu(problem.on_cpu):
                    config = {"best_pattern": {0: {}}, "minference_ratio": ratio}  # layer 0, no tuned heads
                    namespace["minference_prefill_kernel"](q[:, head:head + 1], problem.k[:, kv], problem.v[:, kv],
                                                           head, 0, config)
                v_idx, s_idx = recorder.calls[-1][3], recorder.calls[-1][4]
                columns.append(v_idx.reshape(-1))
                offsets.append(s_idx.reshape(-1))
            columns, offsets = torch.stack(columns)[None], torch.stack(offsets)[None]
            their_keys = vertical_slash_kernel_keys(columns, offsets, n_ctx, MINFERENCE_BLOCK)
            our_plan = minference_plan(problem.q, problem.k, vertical=round(1000 * ratio), slash=round(6096 * ratio),
                                       last_q=64, block=MINFERENCE_BLOCK, scale=problem.scale)
            row = compare(problem, their_keys, our_plan, MINFERENCE_BLOCK)
            as_mask = lambda idx: torch.zeros(1, problem.q_heads, n_ctx, dtype=torch.bool,  # noqa: E731
                                              device=idx.device).scatter_(-1, idx.long().clamp(0, n_ctx - 1), True)
            union = plan_to_keys(vertical_slash_to_plan(as_mask(columns), as_mask(offsets), MINFERENCE_BLOCK, n_ctx),
                                 n_ctx, problem.q_heads)
            row["checks"] = {"vertical": columns.shape[-1], "slash": offsets.shape[-1],
                             "exact_union_density": keys_density(union, MINFERENCE_BLOCK, n_ctx)}
            return row
        rows.append(guarded(setting, row_for))
    report["ran"] = ("selection only: their attention needs convert_vertical_slash_indexes, a compiled CUDA "
                     "extension (minference.cuda / vLLM / sgl-kernel), and their Triton kernel takes head_dim <= 128")
    return rows


def run_flashprefill(problem: Problem, root: Path, settings, report: dict) -> list[dict]:
    """FlashPrefill (github.com/qhfan/FlashPrefill): Triton probe kernels, torch.compile'd selection,
    Triton attention kernel; no compiled extension.

    Selection: their selection has no function of its own; it sits inside ``FlashPrefill.forward``
    (ops/flashprefill_native_forward.py, the path of their RULER models), between their probe kernels
    and their attention kernel. So ``flash_prefill`` runs as written with ``_flash_forward`` replaced
    by a recorder of the block lists it is handed (``block_index``, ``counts``), converted by
    ``compact_blocks_to_selection``. Their file is loaded alone (their ops/__init__ also imports the
    varlen file), with ``fla_stand_ins`` where fla is not installed. q, k, v go in their layout
    (batch, seq_len, heads, dim), GQA as is (their kernels map q heads to kv heads). On a CPU their
    two torch.compile'd helpers run eagerly (compiling them needs a GPU for "reduce-overhead") and
    each autotuned kernel takes its first config (the interpreter cannot time them), the
    interpreter gets ``interpreter_bool_masks``, and their kernels get fp32 copies of q, k, v.
    End to end: ``flash_prefill`` whole, their Triton kernel included.
    """
    from s2o_kernels.peers.flashprefill import flashprefill_plan

    fla_stand_ins()
    ops = load_file(root / "ops/flashprefill_native_forward.py", "_peer_flashprefill_ops")
    their_kernel = ops._flash_forward
    if problem.on_cpu:  # the interpreter cannot time an autotuner's configs: their first one of each
        for kernel in (ops.compute_mean_vector, ops.compute_block_score, ops._flash_forward):
            kernel.configs = kernel.configs[:1]
    # the interpreter gets their bf16 tl.dot wrong (right in fp32): on a CPU their kernels get fp32 copies
    their_dtype = torch.float32 if problem.on_cpu else problem.q.dtype
    if their_dtype != problem.q.dtype:
        report["notes"].append(f"their kernels ran on fp32 copies of the {problem.q.dtype} inputs "
                               "(the Triton interpreter gets bf16 tl.dot wrong)")
    q, k, v = (x.transpose(1, 2).to(their_dtype) for x in (problem.their_q(), problem.k, problem.v))

    def flash_prefill(knobs: dict[str, Any]) -> Tensor:
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)  # (batch, seq_len, q_heads, dim), theirs to write
        with torch._dynamo.config.patch(disable=True) if problem.on_cpu else contextlib.nullcontext(), \
                interpreter_bool_masks(problem.on_cpu):
            ops.flash_prefill(q, k, v, out, BLOCK, knobs["sink_blocks"], knobs["window_blocks"], knobs["alpha"],
                              knobs["full_last_blocks"], knobs["min_blocks"])
        return out

    rows = []
    for setting in settings:
        def row_for(setting=setting):
            knobs = {**FLASHPREFILL_FIXED, **setting}
            recorder = GridRecorder()
            ops._flash_forward = recorder
            try:
                flash_prefill(knobs)
            finally:
                ops._flash_forward = their_kernel
            # _flash_forward[grid](q, k, v, out, block_index, counts, scale, ...)
            block_index, counts = recorder.calls[-1][4], recorder.calls[-1][5]
            selected = compact_blocks_to_selection(block_index, counts)
            our_plan = flashprefill_plan(problem.q, problem.k, block=BLOCK, scale=problem.scale, **knobs)
            row = compare(problem, blocks_to_keys(selected, BLOCK, problem.n_ctx), our_plan, BLOCK)
            row["checks"] = selection_checks(selected)
            row["_e2e"] = (lambda: flash_prefill(knobs).transpose(1, 2),
                           "flash_prefill (their selection + Triton kernel)")
            return row
        rows.append(guarded(setting, row_for))
    report["ran"] = ("selection (flash_prefill, the block lists handed to its attention kernel recorded) + "
                     "end to end (flash_prefill)")
    return rows


# torch-only selections first, their Triton attention kernels last: a fault in one (sticky on a GPU)
# then costs only what follows it; results are written after each peer
PEERS: dict[str, Callable] = {"minference": run_minference, "xattention": run_xattention, "pbs": run_pbs,
                              "flexprefill": run_flexprefill, "flashprefill": run_flashprefill}


def guarded(setting: dict[str, Any], make_row: Callable[[], dict]) -> dict[str, Any]:
    """One setting's row; a failure becomes a row holding the error, and the next setting runs."""
    started = time.perf_counter()
    try:
        row = make_row()
    except Exception as error:  # noqa: BLE001
        traceback.print_exc()
        row = {"error": one_line(error)}
    synchronize()
    return {"setting": setting, **row, "seconds": round(time.perf_counter() - started, 2)}


def run_peer(name: str, problem: Problem, peers_dir: Path, settings) -> dict[str, Any]:
    report: dict[str, Any] = {"notes": list(problem.scale_note()), "rows": []}
    started = time.perf_counter()
    try:
        root = peer_root(peers_dir, name)
        report["source"] = peer_source(root)
        with torch.no_grad():
            rows = PEERS[name](problem, root, settings, report)
            # their own kernels after every selection is measured: a fault in one (sticky on a GPU)
            # cannot cost the selections; each row's outputs (200 MB at 32K) go once compared
            for row in rows:
                if "_e2e" in row:
                    end_to_end(row, problem, *row.pop("_e2e"))
                report["rows"].append(plain(row))
                row.clear()
        report["status"] = "ok" if all("error" not in row for row in report["rows"]) else "partial"
    except PeerUnavailable as error:
        report.update(status="unavailable", why=str(error))
    except Exception as error:  # noqa: BLE001 - one peer's failure must not lose the others
        traceback.print_exc()
        report.update(status="error", why=one_line(error))
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------

def plain(value):
    """JSON-ready: drop the output tensors kept for the end-to-end comparison."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if not isinstance(v, Tensor)}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def fmt(value) -> str:
    """A float to three significant digits; anything else as it is."""
    return fmt_num(value, ".3g" if isinstance(value, float) else "")


def markdown(result: dict[str, Any]) -> str:
    inputs = result["inputs"]
    shape = inputs["shape"]
    lines = [
        "# Peer faithfulness: the authors' code against our re-implementations",
        "",
        f"{shape['Hq']} q / {shape['Hkv']} kv heads, head dim {shape['D']}, {shape['dtype']}, {inputs['n_ctx']} tokens "
        f"({inputs['source'].get('note', '')}); "
        f"device {result['device']}; torch {result['torch']}, triton {result['triton']}; {result['created']}.",
        "Density: QK pairs computed / causal pairs. Error: rel L2 against exact fp32 attention, attention "
        "computed by our executor on exactly each selection. Jaccard: overlap of the two selections' "
        "(q head, query block, key) triples before each diagonal. e2e: their own attention kernel.",
        "",
        "| peer | setting | density theirs | density ours | rel L2 theirs | rel L2 ours | MSE theirs | MSE ours "
        "| Jaccard | e2e rel L2 | e2e vs executor |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, report in result["peers"].items():
        for row in report.get("rows", []):
            setting = ", ".join(f"{k} {v}" for k, v in row["setting"].items())
            if "error" in row:
                lines.append(f"| {name} | {setting} | error: {row['error']} | | | | | | | | |")
                continue
            e2e = row.get("e2e", {})
            e2e_cells = (f"error: {e2e['error']} | " if "error" in e2e else
                         f"{fmt(e2e.get('rel_l2'))} | {fmt(e2e.get('vs_executor_rel_l2'))}")
            theirs, ours = row["theirs"], row["ours"]
            lines.append(f"| {name} | {setting} | {fmt(theirs['density'])} | {fmt(ours['density'])} | "
                         f"{fmt(theirs['rel_l2'])} | {fmt(ours['rel_l2'])} | "
                         f"{fmt(theirs['mse'])} | {fmt(ours['mse'])} | "
                         f"{fmt(row['jaccard'])} | {e2e_cells} |")
    lines += ["", "## What ran, per peer", ""]
    for name, report in result["peers"].items():
        source = report.get("source", {})
        where = f"{source.get('repo', '?')}@{source.get('commit', '?')[:10]}"
        what = report.get("ran") if report.get("status") in ("ok", "partial") else f"did not run: {report.get('why')}"
        lines.append(f"- **{name}** ({where}, {report['seconds']} s): {what}")
        lines += [f"  - {note}" for note in report.get("notes", [])]
        for row in report.get("rows", []):
            if row.get("checks"):
                setting = ", ".join(f"{k} {v}" for k, v in row["setting"].items())
                lines.append(f"  - {setting}: " + ", ".join(f"{k} {fmt(v)}" for k, v in row["checks"].items()))
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--capture", help="a capture file from `s2o-eval capture` (its layers stacked along heads)")
    source.add_argument("--random", action="store_true", help="seeded Gaussian q (1,12,N,256), k, v (1,3,N,256), bf16")
    parser.add_argument("--ctx", type=int, required=True, help="tokens (the capture's first N)")
    parser.add_argument("--peers-dir", type=Path, default=Path(".peers"), help="stage_peers.sh's DIR")
    parser.add_argument("--out", type=Path, required=True, help="folder for peer_faithfulness.{json,md}")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated subset of " + ",".join(PEERS))
    parser.add_argument("--defaults-only", action="store_true", help="only each peer's literature default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hot", type=float, default=4.0, help="--random: logit boost of the hot key blocks (0: none)")
    parser.add_argument("--allow-beyond-window", action="store_true")
    args = parser.parse_args(argv)
    if args.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton: kernels on the CPU
    os.environ["PYTHONBREAKPOINT"] = "0"  # a stray breakpoint() in peer code must not wait for a debugger
    names = [n for n in args.peers.split(",") if n]
    unknown = sorted(set(names) - set(PEERS))
    if unknown:
        parser.error(f"unknown peers {unknown}; choose from {', '.join(PEERS)}")
    add_wheels(args.peers_dir)

    import triton

    problem = load_problem(args)
    result: dict[str, Any] = {
        "tool": "scripts/peer_faithfulness.py", "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(0) if problem.q.is_cuda else f"CPU ({platform.processor() or 'cpu'})",
        "torch": torch.__version__, "triton": triton.__version__,
        "triton_interpret": os.environ.get("TRITON_INTERPRET", "0"),
        "inputs": {"n_ctx": problem.n_ctx, "shape": {"Hq": problem.q_heads, "Hkv": problem.k.shape[1],
                                                    "D": problem.head_dim,
                                                    "dtype": str(problem.q.dtype).removeprefix("torch.")},
                   "scale": problem.scale, "source": problem.source},
        "peers": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        settings = SETTINGS[name][:1] if args.defaults_only else SETTINGS[name]
        print(f"== {name}", flush=True)
        result["peers"][name] = run_peer(name, problem, args.peers_dir, settings)
        print(f"   {result['peers'][name].get('status')} in {result['peers'][name]['seconds']} s", flush=True)
        write(result, args.out)  # after each peer: a run cut short keeps what it measured
    print(markdown(result))


def write(result: dict[str, Any], out: Path) -> None:
    (out / "peer_faithfulness.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (out / "peer_faithfulness.md").write_text(markdown(result))


if __name__ == "__main__":
    main()
