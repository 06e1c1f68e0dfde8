"""The sample loop: every (ctx, task, sample) of a request not yet in the run directory, one lm-eval call
each, its scored record appended as soon as it is done (an interruption loses at most the one in flight)."""

from __future__ import annotations

import sys
import time
from typing import Callable

import torch

from ..errors import UserError
from ..formatting import ctx_label
from . import distributed
from .progress import Progress
from .record import sample_record
from .request import RunRequest
from .rundir import RunDir
from .suites import TaskRef


def find_task_problem(err: BaseException):
    """The user-side reason a task could not be built (data missing, window too small), if that is it."""
    from s2o_tasks.common import DataUnavailable, TaskDoesNotFit

    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, (DataUnavailable, TaskDoesNotFit)):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def evaluate_into(run_dir: RunDir, lm, refs: list[TaskRef], request: RunRequest, loaded, use_template: bool,
                  overhead: int, report: Callable[[str], None], progress: bool,
                  place: distributed.Place = distributed.Place(), phases: dict[str, float] | None = None) -> list[str]:
    """Every (ctx, task, sample) of the request not yet in the run directory, one lm-eval call each;
    in a data-parallel run, this process's share of them: every world_size-th, from its rank.

    phases, when given, receives this process's seconds spent building the tasks (every process builds
    all of them, to agree on the shares) and warming up (one untimed prefill per length)."""
    phases = {} if phases is None else phases
    phases["build_s"] = phases["warmup_s"] = 0.0
    build_started = time.perf_counter()
    from lm_eval.evaluator import evaluate
    from lm_eval.tasks import TaskManager, get_task_dict
    from s2o_tasks import TASKS_DIR

    done = run_dir.done_keys()
    requested = 0
    skipped: list[str] = []
    plans: list[tuple[int, TaskRef, dict, list[tuple[int, int]]]] = []  # (ctx, task, tasks, [(position, index)])
    for ctx in request.ctx:
        metadata = {"tokenizer": loaded.tokenizer_path, "max_seq_length": ctx, "num_samples": request.limit,
                    "seed": request.seed, "data_dir": request.data_dir, "template_overhead": overhead}
        manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata=metadata)
        for ref in refs:
            try:
                task_dict = get_task_dict([ref.lm_eval_name], manager)
            except Exception as err:  # data missing offline, or a window too small: say what to do
                problem = find_task_problem(err)
                if problem is None:
                    raise
                line = f"{ref.label} at {ctx_label(ctx)}: {problem}"
                report(line)
                skipped.append(line)
                continue
            task = task_dict[ref.lm_eval_name] if ref.lm_eval_name in task_dict else next(iter(task_dict.values()))
            # the task already holds just the selected documents (num_samples, seed); each carries its
            # stable index in the suite (RULER: generation index; datasets: position in the file)
            todo = [(pos, int(doc.get("index", pos))) for pos, doc in enumerate(task.eval_docs)
                    if (ref.lm_eval_name, ctx, int(doc.get("index", pos))) not in done]
            requested += len(task.eval_docs)
            if todo:
                plans.append((ctx, ref, task_dict, todo))

    phases["build_s"] = time.perf_counter() - build_started
    total = sum(len(todo) for *_, todo in plans)
    if requested > total and place.is_main:
        print(f"resuming: {requested - total} of {requested} samples already done in {run_dir.path}",
              file=sys.stderr)
    # every process has read what is done before any appends: all hold the same todo list
    distributed.barrier(place)
    if place.world_size > 1:
        plans = distributed.share(plans, place)
    done_before = len(done)
    with Progress(total, enabled=progress and place.is_main) as bar:
        warmed: set[int] = set()
        for ctx, ref, task_dict, todo in plans:
            bar.describe(f"{ref.label} {ctx_label(ctx)}")
            if ctx not in warmed:
                warm_started = time.perf_counter()
                try:
                    lm.warm_up(ctx - 128)  # window.check_window already refused a ctx past the window
                except torch.cuda.OutOfMemoryError:
                    raise out_of_memory(run_dir, f"warming up at {ctx_label(ctx)}") from None
                phases["warmup_s"] += time.perf_counter() - warm_started
                warmed.add(ctx)
            for position, index in todo:
                lm.measurements.clear()
                try:
                    results = evaluate(lm, task_dict, samples={ref.lm_eval_name: [position]}, log_samples=True,
                                       bootstrap_iters=0, apply_chat_template=use_template,
                                       verbosity="ERROR")
                except torch.cuda.OutOfMemoryError:
                    raise out_of_memory(run_dir, f"on {ref.label} at {ctx_label(ctx)} (sample {index})") from None
                logged = results["samples"][ref.lm_eval_name][0]
                measurement = next(iter(lm.measurements.values()), None)
                run_dir.append_sample(sample_record(ref, ctx, index, logged, measurement))
                if place.world_size > 1 and place.is_main:  # the total across processes, as their shards show it
                    bar.set_completed(len(run_dir.done_keys()) - done_before)
                else:
                    bar.advance()
    return skipped


def out_of_memory(run_dir: RunDir, where: str) -> UserError:
    n_done = len(run_dir.done_keys())
    return UserError(f"out of GPU memory {where}; the {n_done} finished samples are kept in {run_dir.path}: "
                     "lower --ctx or free the GPU, then rerun the same command to resume")
