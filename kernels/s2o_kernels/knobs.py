"""Names, defaults and checks shared by the Triton kernels, their PyTorch twins and the harness.

This module imports neither Triton nor the kernels, so the harness (and machines without Triton)
can read the defaults and validate a user's arguments without compiling anything.
"""

from __future__ import annotations

import math

HEAD_DIMS = (64, 128, 256)

# What ends a tile's walk at tau > 0, checked after every chunk of the ranked list.
#   "chunk": the newest chunk brought every row < tau of its mass so far;
#   "tail":  (keys left in the list) x (the chunk's largest per-key mass) < tau of every row's mass,
#            a bound on the unseen rest when the list is in descending importance (safe on diffuse rows).
# With patience P the list is walked in bursts of P chunks and the walk stops after the first burst
# whose every chunk met the test: an imperfect order puts a few important keys after a dull chunk,
# and patience walks past it to them. (Bursts rather than any P chunks in a row: the kernel then
# decides once per burst, and never in the middle of its pipelined loop.)
STOP_RULES = ("chunk", "tail")
DEFAULT_STOP_RULE = "chunk"

# S2O's defaults (the method, ``s2o_attention``): tau is the speed/accuracy knob, chosen on RULER
# (reports/ruler-gemma3-270m-h100/: the largest tau whose loss against fa2 stayed within a point);
# patience 4 walks past the dull chunks an estimated order leaves.
DEFAULT_TAU = 0.0003
DEFAULT_PATIENCE = 4
# S2O's heads whose walk the planner's histogram forecasts to visit at least this density run on the
# dense kernel instead (s2o/forecast.py, dense_heads): the forecast undershoots real walks, so at 0.75
# it flags the heads whose estimate is nearly flat, which the walk visits whole (reports/bench/NOTES.md).
DEFAULT_DENSE_ABOVE = 0.75

DEFAULT_SEGMENT = 1024  # queries per segment: the keys before a segment are ranked once for it
DEFAULT_SINKS = 64  # first keys, always computed exactly (attention sinks)
DEFAULT_ROWS = 128  # rows of an executor tile (query positions x the heads packed into it)
# Keys per chunk, the stopping rule's granularity, by head dim: 64 everywhere, so tau means the same at
# every head dim (the speed of 32 against 64 at D=128 is measured by `SHAPE=llama scripts/gpu_bench_s2o.sh speed`).
DEFAULT_BLOCK_N = {64: 64, 128: 64, 256: 64}

# Environment variables that pin a launch configuration (tuning on a GPU).
EXEC_CONFIG_ENV = "S2O_EXEC_CONFIG"
PLAN_CONFIG_ENV = "S2O_PLAN_CONFIG"


def default_block_n(head_dim: int) -> int:
    """Keys per chunk used at tau > 0 when the caller does not choose."""
    return DEFAULT_BLOCK_N.get(head_dim, 64)


def check_stop_rule_name(stop_rule: str) -> None:
    """Reject a stop rule the executor does not know (one of STOP_RULES)."""
    if stop_rule not in STOP_RULES:
        raise ValueError(f"stop_rule must be one of {', '.join(STOP_RULES)}; got {stop_rule!r}")


def check_tau(tau: float) -> None:
    """tau is a finite share of mass >= 0 (0 = dense: every listed key is walked)."""
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau < 0:
        raise ValueError(f"tau must be a finite number >= 0 (0 = dense); got {tau!r}")


def check_dense_above(dense_above: float) -> None:
    """The forecast density from which S2O runs a head on the dense kernel: within [0, 1] (0 = never)."""
    if isinstance(dense_above, bool) or not isinstance(dense_above, (int, float)) or not 0.0 <= dense_above <= 1.0:
        raise ValueError(f"dense_above must be within [0, 1] (0 = never); got {dense_above!r}")


def check_patience(patience: int) -> None:
    """Chunks in a row that must meet the stop test before a tile stops (1 = the first one)."""
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise ValueError(f"patience must be an int >= 1; got {patience!r}")


def check_skip_gap(skip_gap: float, tau: float) -> None:
    """Skip-softmax's gap, in nats: finite, >= 0 (0 = off), and only for a walk that never stops."""
    if isinstance(skip_gap, bool) or not isinstance(skip_gap, (int, float)) or not math.isfinite(skip_gap) \
            or skip_gap < 0:
        raise ValueError(f"skip_gap must be a finite number of nats >= 0 (0 = off); got {skip_gap!r}")
    if skip_gap > 0 and tau > 0:
        raise ValueError("skip_gap (skip-softmax) walks every listed key: use it with tau = 0")


def tile_positions(q_heads: int, plan_heads: int, kv_heads: int, segment: int, block_m: int = 0) -> int:
    """Query positions per executor tile.

    ``block_m`` when given; else DEFAULT_ROWS rows, which a plan shared by a GQA group (one list per kv
    head) fills with the group's heads (positions = rows / heads, padded to a power of two) and a
    per-head plan fills with positions of its one head; made to divide the segment.
    """
    if block_m:
        return block_m
    heads_per_tile = q_heads // kv_heads if plan_heads == kv_heads else 1
    padded = 1 << (heads_per_tile - 1).bit_length()
    return math.gcd(max(DEFAULT_ROWS // padded, 1), segment)


def check_tile_shape(block_m: int | None, block_n: int | None, heads_per_tile: int, segment: int) -> None:
    """An executor tile the kernel can run (None: not chosen yet, the autotuner's to pick): block_m
    query positions x heads_per_tile packed heads (a power of two) within 16..256 rows, block_m
    dividing the segment; block_n keys per chunk within 16..256; both powers of two."""
    if heads_per_tile > 128:
        raise ValueError(f"at most 128 query heads may share one list (one tile row each); got {heads_per_tile}")
    for name, value in (("block_m", block_m), ("block_n", block_n)):
        if value is not None and (value < 1 or value & (value - 1)):
            raise ValueError(f"{name} must be a power of two; got {value}")
    if block_m is not None:
        if not 16 <= block_m * heads_per_tile <= 256:
            raise ValueError(f"block_m x heads per tile ({block_m} x {heads_per_tile}) must be within 16..256 rows")
        if segment % block_m != 0:
            raise ValueError(f"plan.segment ({segment}) must be a multiple of block_m ({block_m})")
    if block_n is not None and not 16 <= block_n <= 256:
        raise ValueError(f"block_n must be within 16..256; got {block_n}")
