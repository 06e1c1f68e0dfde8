"""The one executor of evaluation runs: model in, run directories out.

For each method configuration (one, or one per ``--sweep`` value, sharing the model load) it opens
the run directory named from the config, and for every (ctx, task, sample) not yet in
``samples.jsonl`` runs lm-eval on that one sample and appends the scored record at once, so an
interruption loses at most the sample in flight and a rerun resumes. One command at a time works on a
run directory (``RunDir.hold``); what could not be written is refused before the model loads.

Under torchrun / accelerate launch (or ``--gpus N``) each process takes every N-th sample still to
do and appends to its own shard of the run directory; process 0 merges the shards and writes the
summary once all are done (see ``distributed``).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from . import __version__
from . import distributed, interruption
from .env import collect_env, git_commit
from .errors import Interrupted, UserError
from .decoding import resolve_decode
from .methods import AttentionMethod, create
from .models.rope_scaling import RopeScaling
from .rundir import RunDir, UnreadableRunFile, config_differences, config_hash, output_problem
from .formatting import ctx_label
from .suites import TaskRef, parse_tasks

log = logging.getLogger(__name__)


@dataclass
class RunRequest:
    """Everything ``s2o-eval run`` was asked for."""

    model: str
    method: str  # one method, or several comma-separated (one run each, sharing the model load)
    tasks: list[str]
    ctx: list[int]
    method_args: dict[str, str] = field(default_factory=dict)
    limit: int | None = None
    seed: int = 0
    chat_template: str = "auto"  # auto | on | off
    data_dir: str | None = None
    out: Path | None = None
    runs_dir: Path = Path("runs")
    allow_beyond_window: bool = False
    device: str | None = None
    dtype: str = "auto"
    suite: str | None = None
    decode: str = "auto"  # auto | static | dynamic (see decoding.resolve_decode)
    rope_scaling: RopeScaling | None = None  # --rope-scaling linear:F on the global layers


@dataclass
class RunOutcome:
    run_dir: RunDir
    summary: dict[str, Any]
    skipped: list[str]  # one line per task that could not run (missing data ...)


def _quiet_libraries() -> None:
    for name in ("lm_eval", "lm-eval", "transformers", "datasets", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
    except Exception:  # pragma: no cover - logging only
        pass


def _find_task_problem(err: BaseException):
    """The user-side reason a task could not be built (data missing, window too small), if that is it."""
    from s2o_tasks.common import DataUnavailable, TaskDoesNotFit

    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, (DataUnavailable, TaskDoesNotFit)):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def resolve_chat_template(choice: str, has_template: bool) -> bool:
    if choice not in ("auto", "on", "off"):
        raise UserError(f"--chat-template {choice}: use auto, on or off")
    if choice == "on" and not has_template:
        raise UserError("--chat-template on: this model's tokenizer has no chat template; use off")
    return has_template if choice == "auto" else choice == "on"


def template_overhead(tokenizer, use_template: bool) -> int:
    """Tokens the model sees besides the task's prompt text: BOS and the chat template's wrapping.

    Tasks leave room for them, so that prompt + overhead + generation budget fits ``--ctx``.
    """
    probe = "x"
    text = probe
    if use_template:
        text = tokenizer.apply_chat_template([{"role": "user", "content": probe}], tokenize=False,
                                             add_generation_prompt=True)
    bos = getattr(tokenizer, "bos_token", None)
    # as lm-eval encodes: no second BOS when the rendered text already starts with one
    add_special = not (bos and text.startswith(bos))
    seen = len(tokenizer(text, add_special_tokens=add_special)["input_ids"])
    return max(0, seen - len(tokenizer(probe, add_special_tokens=False)["input_ids"]))


def method_names(spec: str) -> list[str]:
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        raise UserError("--method is empty: name a method (see `s2o-eval methods`)")
    return names


def build_config(request: RunRequest, loaded, method_name: str, method: AttentionMethod, refs: list[TaskRef],
                 use_template: bool) -> dict[str, Any]:
    return {
        "model": request.model,
        "model_name": loaded.name,
        "model_revision": loaded.revision,
        # only when scaled: runs without the flag keep the directories (config hashes) they always had
        **({"rope_scaling": loaded.rope_scaling} if loaded.rope_scaling else {}),
        "method": method_name,
        "method_resolved": method.name,
        "method_args": method.params(),
        "tasks": [r.lm_eval_name for r in refs],
        "task_specs": list(request.tasks),
        "suite": request.suite,
        "ctx": list(request.ctx),
        "limit": request.limit,
        "sample_selection": "RULER: documents 0..limit-1 generated from the seed; datasets: a seeded sample of limit",
        "seed": request.seed,
        "chat_template": use_template,
        "batch_size": 1,
        # how the (dense) decode runs: compiled and eager kernels may round bf16 differently
        "decode": resolve_decode(request.decode, loaded.model.device),
        "dtype": str(loaded.model.dtype).replace("torch.", ""),
        # the device kind, not its index: every process of a data-parallel run computes the same config
        "device": loaded.model.device.type,
        "data_dir": request.data_dir,
        "allow_beyond_window": request.allow_beyond_window,
        "model_window": loaded.max_window,
        "tool_version": __version__,
        "git_commit": git_commit(),
    }


def run_dir_for(request: RunRequest, config: dict[str, Any], many: bool) -> RunDir:
    if request.out is not None:
        out = Path(request.out)
        if many:  # one directory per sweep value beneath --out
            out = out / f"{config['method_resolved']}-{config_hash(config)}"
        return RunDir(out)
    name = f"{config['model_name']}-{config['method_resolved']}-{config_hash(config)}"
    return RunDir(Path(request.runs_dir) / name.replace("/", "_"))


def window_refusal(ctx: int, loaded, scaling: RopeScaling | None) -> str | None:
    """Why ``ctx`` is refused without --allow-beyond-window, or None when it fits the model's window.

    --rope-scaling does not lift the check: the window stays the one the model was trained to, since what
    interpolation is worth past it has not been measured (issue 16). For the same reason the plain refusal
    does not suggest the flag yet: it should once a measurement shows the flag keeps the model useful there."""
    if ctx <= loaded.max_window:
        return None
    where = f"--ctx {ctx_label(ctx)} is beyond {loaded.name}'s window of {loaded.max_window} tokens"
    if scaling is not None and not scaling.is_identity:
        return (f"{where}, which --rope-scaling {scaling.text} does not lift: pass --allow-beyond-window to run "
                "past it with the interpolated RoPE (both recorded in the run), or lower --ctx")
    return f"{where}: lower --ctx, or pass --allow-beyond-window to run past it (recorded in the run)"


def _check_window(request: RunRequest, loaded) -> None:
    if request.allow_beyond_window:
        return
    refusal = window_refusal(max(request.ctx), loaded, request.rope_scaling)
    if refusal:
        raise UserError(refusal)


def _check_output(request: RunRequest) -> None:
    """Refuse, before the model loads, an output place the run could not write: no work to lose."""
    problem = (output_problem(request.out, "--out") if request.out is not None
               else output_problem(request.runs_dir, "--runs-dir"))
    if problem:
        raise UserError(problem)


def _check_same_config(run_dir: RunDir, config: dict[str, Any], place: distributed.Place) -> None:
    """A run directory holds one configuration: refuse another, naming the fields that differ. A
    damaged config.json is judged by the copy in summary.json, and rewritten from this command."""
    old = run_dir.recorded_config()
    if old is not None and config_hash(old) != config_hash(config):
        differences = config_differences(old, config)
        shown = "; ".join(differences[:3]) + ("; ..." if len(differences) > 3 else "")
        raise UserError(f"{run_dir.path} holds a run with another configuration ({shown}): pass another --out, "
                        "or the options of that run to resume it")
    if place.is_main and run_dir.exists():
        try:
            run_dir.config()
        except UnreadableRunFile:
            print(f"Note: {run_dir.config_path} was unreadable: rewritten from this command", file=sys.stderr)


def _sample_record(ref: TaskRef, ctx: int, index: int, logged: dict, measurement) -> dict[str, Any]:
    doc = logged.get("doc", {})
    prediction = logged.get("filtered_resps", [""])[0]
    if isinstance(prediction, (list, tuple)):
        prediction = prediction[0] if prediction else ""
    golds = doc.get("outputs", doc.get("answer", logged.get("target")))
    groups = doc.get("groups")
    record = {
        "task": ref.lm_eval_name,
        "ctx": ctx,
        "index": index,
        "prompt_tokens": measurement.prompt_tokens if measurement else None,
        "prompt_sha": measurement.prompt_sha if measurement else None,
        "prediction": prediction,
        "golds": golds,
        "score": 100.0 * float(logged["score"]),
        "prefill_ms": measurement.prefill_ms if measurement else None,
        "density": measurement.density if measurement else None,
        "peak_mem_mb": measurement.peak_mem_mb if measurement else None,
    }
    if groups:
        record["group"] = list(groups) if not isinstance(groups, str) else [groups]
    return record


class _Progress:
    """A rich progress bar over samples (silent when not attached to a terminal is fine too)."""

    def __init__(self, total: int, enabled: bool = True):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), transient=False, disable=not enabled)
        self.bar = self.progress.add_task("samples", total=total)

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def describe(self, text: str) -> None:
        self.progress.update(self.bar, description=text)

    def advance(self) -> None:
        self.progress.advance(self.bar)

    def set_completed(self, n: int) -> None:
        self.progress.update(self.bar, completed=n)


def configured_methods(request: RunRequest, sweep: list[dict[str, str]] | None = None
                       ) -> list[tuple[str, AttentionMethod]]:
    """One (name, method) per method and sweep value, in that order (the runs of one command, all
    sharing the model load); raises UserError for an unknown method or parameter, or one that
    cannot run here."""
    runs = [(name, create(name, dict(request.method_args, **values)))
            for name in method_names(request.method) for values in (sweep or [{}])]
    for _, method in runs:
        reason = method.unavailable_reason()
        if reason:
            raise UserError(f"method '{method.name}' is not available here: {reason}")
    return runs


def run_evaluation(request: RunRequest, sweep: list[dict[str, str]] | None = None, *,
                   loaded=None, progress: bool = True,
                   on_error: Callable[[str], None] | None = None) -> list[RunOutcome]:
    """Run (or resume) the requested evaluation; one outcome per method configuration."""
    from .lm import S2OEvalLM
    from .models import load_model

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

    _check_output(request)
    device = distributed.device_for(place, request.device)
    distributed.init(place, device)
    load_started = time.perf_counter()
    if loaded is None:
        loaded = load_model(request.model, device=device, dtype=request.dtype, rope_scaling=request.rope_scaling)
    load_s = time.perf_counter() - load_started
    _check_window(request, loaded)
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
            _check_same_config(run_dir, config, place)
            if place.is_main:
                run_dir.write_config(config)
                run_dir.write_env(collect_env() | {"processes": place.world_size})
            lm = S2OEvalLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, method=method,
                           max_length=max(max(request.ctx), loaded.max_window), batch_size=1,
                           device=str(loaded.model.device), decode=config["decode"])
            session = _Session(run_dir, place, load_s)
            try:
                skipped = _evaluate_into(run_dir, lm, refs, request, loaded, use_template, overhead, report,
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


class _Session:
    """One command's work on one run, for sessions.jsonl: started when made, recorded once (by the
    main process) when the work ends, finished or interrupted."""

    def __init__(self, run_dir: RunDir, place: distributed.Place, load_s: float):
        self.run_dir, self.place, self.load_s = run_dir, place, load_s
        self.started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.eval_started, self.done_before = time.perf_counter(), len(run_dir.done_keys())
        self.phases: dict[str, float] = {}  # filled by _evaluate_into

    def record(self, interrupted: bool = False) -> None:
        """Write the summary and append the session (the summary first: it is what reports read)."""
        self.run_dir.write_summary()
        # the slowest process sets the pace: eval_s runs from the start to the barrier all passed
        session = {"started": self.started, "processes": self.place.world_size,
                   "evaluated": len(self.run_dir.done_keys()) - self.done_before,
                   "load_s": round(self.load_s, 2),
                   "eval_s": round(time.perf_counter() - self.eval_started, 2),
                   **{k: round(v, 2) for k, v in self.phases.items()}}
        if interrupted:
            session["interrupted"] = True
        self.run_dir.append_session(session)

    def interrupted(self, exit_code: int) -> Interrupted:
        """Record the session cut short (Ctrl-C, SIGTERM); the error that says what was kept and how to go on."""
        self.record(interrupted=True)
        kept = len(self.run_dir.done_keys())
        kept_text = "1 finished sample is" if kept == 1 else f"{kept} finished samples are"
        return Interrupted(f"{kept_text} kept in {self.run_dir.path}: rerun the same command to resume", exit_code)


def _evaluate_into(run_dir: RunDir, lm, refs: list[TaskRef], request: RunRequest, loaded, use_template: bool,
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
                problem = _find_task_problem(err)
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
        plans = _share(plans, place)
    done_before = len(done)
    with _Progress(total, enabled=progress and place.is_main) as bar:
        warmed: set[int] = set()
        for ctx, ref, task_dict, todo in plans:
            bar.describe(f"{ref.label} {ctx_label(ctx)}")
            if ctx not in warmed:
                warm_started = time.perf_counter()
                try:
                    lm.warm_up(ctx - 128)  # _check_window already refused a ctx past the window
                except torch.cuda.OutOfMemoryError:
                    raise _out_of_memory(run_dir, f"warming up at {ctx_label(ctx)}") from None
                phases["warmup_s"] += time.perf_counter() - warm_started
                warmed.add(ctx)
            for position, index in todo:
                lm.measurements.clear()
                try:
                    results = evaluate(lm, task_dict, samples={ref.lm_eval_name: [position]}, log_samples=True,
                                       bootstrap_iters=0, apply_chat_template=use_template,
                                       verbosity="ERROR")
                except torch.cuda.OutOfMemoryError:
                    raise _out_of_memory(run_dir, f"on {ref.label} at {ctx_label(ctx)} (sample {index})") from None
                logged = results["samples"][ref.lm_eval_name][0]
                measurement = next(iter(lm.measurements.values()), None)
                run_dir.append_sample(_sample_record(ref, ctx, index, logged, measurement))
                if place.world_size > 1 and place.is_main:  # the total across processes, as their shards show it
                    bar.set_completed(len(run_dir.done_keys()) - done_before)
                else:
                    bar.advance()
    return skipped


def _out_of_memory(run_dir: RunDir, where: str) -> UserError:
    n_done = len(run_dir.done_keys())
    return UserError(f"out of GPU memory {where}; the {n_done} finished samples are kept in {run_dir.path}: "
                     "lower --ctx or free the GPU, then rerun the same command to resume")


def _share(plans: list, place: distributed.Place) -> list:
    """This process's share of the samples to do: round robin over the todo list in its fixed order
    (ctx, then task, then document), which every process built alike."""
    mine = []
    n = 0
    for ctx, ref, task_dict, todo in plans:
        own = []
        for item in todo:
            if n % place.world_size == place.rank:
                own.append(item)
            n += 1
        if own:
            mine.append((ctx, ref, task_dict, own))
    return mine
