"""Scale-out check: one evaluation run with different numbers of processes must give the same results
sample by sample, in less wall-clock time. Reads run directories only (samples.jsonl, sessions.jsonl).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import NotComparable, UserError
from ..formatting import fmt_num, fmt_ratio
from ..run.rundir import RunDir, config_hash, sample_key
from .markdown import table

# what a sample's computation decides; timing and memory depend on the machine and the moment.
# Scores must match; a generated text may differ past the answer (reports/scale/NOTES.md) and is listed.
RESULT_FIELDS = ("prompt_sha", "prompt_tokens", "score", "density", "prediction")


@dataclass
class ScaleRun:
    path: Path
    processes: int
    samples: int
    evaluated: int  # by the sessions counted below
    load_s: float
    eval_s: float
    build_s: float | None  # of the main process: building every task; one untimed prefill per length
    warmup_s: float | None

    @property
    def wall_s(self) -> float:
        return self.load_s + self.eval_s


def _scale_run(run: RunDir) -> ScaleRun:
    sessions = run.sessions()
    if not sessions:
        raise UserError(f"{run.path} records no session (sessions.jsonl): rerun it with this version of s2o-eval")
    processes = {s["processes"] for s in sessions}
    if len(processes) > 1:
        raise UserError(f"{run.path} was evaluated by {sorted(processes)} processes in different sessions: "
                        "time a run made in one go (a fresh --out)")
    return ScaleRun(path=run.path, processes=processes.pop(), samples=len(run.samples()),
                    evaluated=sum(s["evaluated"] for s in sessions), load_s=sum(s["load_s"] for s in sessions),
                    eval_s=sum(s["eval_s"] for s in sessions), build_s=_total(sessions, "build_s"),
                    warmup_s=_total(sessions, "warmup_s"))


def _total(sessions: list[dict[str, Any]], key: str) -> float | None:
    values = [s.get(key) for s in sessions]
    return None if None in values else sum(values)


def _samples_s(timing: ScaleRun) -> float | None:
    if timing.build_s is None or timing.warmup_s is None:
        return None
    return timing.eval_s - timing.build_s - timing.warmup_s


def result_differences(base: RunDir, other: RunDir) -> dict[tuple, list[str]]:
    """Sample key -> what differs between the runs: the RESULT_FIELDS that changed, or
    ``only in <run>`` for a sample only one of them has. Samples that agree are left out."""
    ours = {sample_key(r): r for r in base.samples()}
    theirs = {sample_key(r): r for r in other.samples()}
    differences = {key: [f"only in {base.path.name}"] for key in ours.keys() - theirs.keys()}
    differences |= {key: [f"only in {other.path.name}"] for key in theirs.keys() - ours.keys()}
    for key in ours.keys() & theirs.keys():
        changed = [f for f in RESULT_FIELDS if ours[key].get(f) != theirs[key].get(f)]
        if changed:
            differences[key] = changed
    return dict(sorted(differences.items()))


def _scores_agree(differences: dict[tuple, list[str]]) -> bool:
    """True when every difference is only in generated text: same samples, prompts and scores."""
    return all(fields == ["prediction"] for fields in differences.values())


def scale_report(paths: list[Path], out: Path, *, title: str = "Data-parallel scale-out") -> dict[str, Any]:
    """Compare runs of one configuration made with different process counts; writes ``out``/report.md
    and ``out``/scale.json. The run with the fewest processes is the baseline."""
    runs = [RunDir(p) for p in paths]
    for run in runs:
        if not run.exists():
            raise UserError(f"{run.path} is not a run directory (no config.json)")
    if len({config_hash(r.config()) for r in runs}) > 1:  # the tool version and commit may differ
        raise NotComparable("the runs differ in configuration: compare runs of one command made with different --gpus")
    measured = sorted(((run, _scale_run(run)) for run in runs), key=lambda pair: pair[1].processes)
    base_dir, base = measured[0]
    rows, data = [], []
    for run, timing in measured:
        differences = result_differences(base_dir, run) if run is not base_dir else {}
        lines = [f"{key}: {fields[0] if fields[0].startswith('only in') else 'different ' + ', '.join(fields)}"
                 for key, fields in differences.items()]
        row = {"run": run.path.name, "processes": timing.processes, "samples": timing.samples,
               "evaluated": timing.evaluated, "load_s": timing.load_s, "eval_s": timing.eval_s,
               "build_s": timing.build_s, "warmup_s": timing.warmup_s, "samples_s": _samples_s(timing),
               "wall_s": timing.wall_s, "speedup_eval": base.eval_s / timing.eval_s if timing.eval_s else None,
               "speedup_wall": base.wall_s / timing.wall_s if timing.wall_s else None,
               "identical_to_base": not differences, "same_scores": _scores_agree(differences),
               "differences": lines[:20], "n_differences": len(differences)}
        data.append(row)
        rows.append([row["run"], str(row["processes"]), str(row["samples"]), f"{row['load_s']:.1f}",
                     fmt_num(row["build_s"]), fmt_num(row["warmup_s"]), fmt_num(row["samples_s"]),
                     f"{row['eval_s']:.1f}", f"{row['wall_s']:.1f}", fmt_ratio(row["speedup_eval"]),
                     fmt_ratio(row["speedup_wall"]), "yes" if row["same_scores"] else "no",
                     "yes" if row["identical_to_base"] else f"no ({len(differences)} samples)"])
    env = base_dir.env()
    config = base_dir.config()
    lines = [f"# {title}", "",
             f"Model {config.get('model')} · method {config.get('method_resolved') or config.get('method')} · "
             f"tasks {', '.join(map(str, config.get('tasks', [])))} · ctx {config.get('ctx')} · "
             f"GPU {env.get('gpu') or 'none (CPU processes)'} x {env.get('gpu_count', '?')} on the host", "",
             "One command per row, each into a fresh run directory. load = model load in each process (they "
             "load at once); eval = from building the tasks to the barrier every process passed (the slowest "
             "sets it), of which the main process spent build building every task (each process builds all, "
             "to agree on the shares), warm-up one untimed prefill per length (kernel compilation, autotuning), "
             "and samples the rest: its share of the samples (the first one compiles the static decode "
             "step), then waiting for the others; "
             f"speedups against the {base.processes}-process run. Identical = every sample's prompt, prediction, "
             "score and density equal to the baseline's; same scores = the same without the generated text.", "",
             table(["run", "processes", "samples", "load s", "build s", "warm-up s", "samples s", "eval s", "wall s", "eval speedup",
                       "wall speedup", "same scores", "identical"], rows), ""]
    for row in data:
        if row["differences"]:
            lines += [f"Differences in {row['run']} (first 20):", "", *[f"- {d}" for d in row["differences"]], ""]
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(lines))
    (out / "scale.json").write_text(json.dumps({"env": env, "config": config, "runs": data}, indent=2, default=str))
    return {"runs": data, "report": out / "report.md"}
