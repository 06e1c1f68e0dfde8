"""The one executor of evaluation runs: model in, run directories out.

For each method configuration (one, or one per ``--sweep`` value, sharing the model load) it opens
the run directory named from the config (``config``), and for every (ctx, task, sample) not yet in
``samples.jsonl`` runs lm-eval on that one sample and appends the scored record at once (``loop``), so
an interruption loses at most the sample in flight and a rerun resumes. One command at a time works on
a run directory (``RunDir.hold``); what could not be written is refused before the model loads.

Under torchrun / accelerate launch (or ``--gpus N``) each process takes every N-th sample still to
do and appends to its own shard of the run directory; process 0 merges the shards and writes the
summary once all are done (see ``distributed``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from typing import Callable

from ..env import collect_env
from . import distributed, interruption
from .chat_template import resolve_chat_template, template_overhead
from .config import build_config, check_output, check_same_config, run_dir_for
from .loop import evaluate_into
from .request import RunOutcome, RunRequest, configured_methods
from .session import Session
from .suites import parse_tasks
from .window import check_window


def _quiet_libraries() -> None:
    for name in ("lm_eval", "lm-eval", "transformers", "datasets", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
    except Exception:  # pragma: no cover - logging only
        pass


def run_evaluation(request: RunRequest, sweep: list[dict[str, str]] | None = None, *,
                   loaded=None, progress: bool = True,
                   on_error: Callable[[str], None] | None = None) -> list[RunOutcome]:
    """Run (or resume) the requested evaluation; one outcome per method configuration."""
    from ..models import load_model
    from .lm import S2OEvalLM

    _quiet_libraries()
    place = distributed.place_from_env()
    report = on_error or (lambda line: print(f"Skipped: {line}", file=sys.stderr))
    if not place.is_main:  # every process meets the same problems: one says so
        report = lambda line: None  # noqa: E731
    refs = parse_tasks(request.tasks)
    runs = configured_methods(request, sweep)
    for _, method in runs:
        note = getattr(method, "fallback_note", lambda: None)()
        if note and place.is_main:
            print(f"Note: {note}", file=sys.stderr)
        if request.prefill_chunk and not method.takes_offset and place.is_main:
            print(f"Note: {method.name} takes no queries at an offset: with --prefill-chunk its chunks after the "
                  "first run dense attention (recorded: later_chunks dense)", file=sys.stderr)

    check_output(request)
    device = distributed.device_for(place, request.device)
    distributed.init(place, device)
    load_started = time.perf_counter()
    if loaded is None:
        loaded = load_model(request.model, device=device, dtype=request.dtype, rope_scaling=request.rope_scaling)
    load_s = time.perf_counter() - load_started
    check_window(request, loaded)
    use_template = resolve_chat_template(request.chat_template, loaded.chat_template)
    overhead = template_overhead(loaded.tokenizer, use_template)

    outcomes = []
    for name, method in runs:
        config = build_config(request, loaded, name, method, refs, use_template)
        run_dir = run_dir_for(request, config, many=len(runs) > 1)
        run_dir.shard = place.shard
        run_dir.check_writable()
        # one command per run directory; the processes of a data-parallel run are one command
        with run_dir.hold() if place.is_main else contextlib.nullcontext():
            check_same_config(run_dir, config, place)
            if place.is_main:
                run_dir.write_config(config)
                run_dir.write_env(collect_env() | {"processes": place.world_size})
            lm = S2OEvalLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, method=method,
                           max_length=max(max(request.ctx), loaded.max_window), batch_size=1,
                           device=str(loaded.model.device), decode=config["decode"],
                           prefill_chunk=request.prefill_chunk)
            session = Session(run_dir, place, load_s)
            try:
                skipped = evaluate_into(run_dir, lm, refs, request, loaded, use_template, overhead, report,
                                        progress, place, session.phases)
            except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (``interruption``)
                if not place.is_main:
                    raise  # the main process says what was kept, once
                raise session.interrupted(interruption.exit_code(stop)) from None
            distributed.barrier(place)  # every shard is complete
            if place.is_main:
                run_dir.merge_shards()  # also shards a crashed earlier data-parallel run left behind
                session.record()
                load_s = 0.0  # later methods of the same command share the load
            distributed.barrier(place)
        outcomes.append(RunOutcome(run_dir, run_dir.summary(), skipped))
    distributed.finish(place)
    return outcomes
