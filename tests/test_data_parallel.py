"""Data-parallel runs on the CPU: two gloo processes (``--gpus 2 --device cpu``) give what one gives."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from s2o_eval.run.distributed import Place, relaunch_args, share
from s2o_eval.reporting.scale import scale_report
from s2o_eval.run.rundir import RunDir

# what depends on the clock or the machine, not on what was computed
TIMING = ("prefill_ms", "peak_mem_mb")
SUMMARY_TIMING = ("prefill_ms_mean", "prefill_ms_p50", "prefill_ms_p90")


# loaded by every Python process started with the hook dir on its path: logs which rank evaluated what
_HOOK = """
import os
if os.environ.get("S2O_TEST_EVALUATED"):
    from s2o_eval.run.rundir import RunDir
    _append = RunDir.append_sample
    def _logged(self, record):
        with open(os.environ["S2O_TEST_EVALUATED"], "a") as fh:
            fh.write(f"{os.environ.get('RANK', '-')} {record['task']} {record['index']}\\n")
        _append(self, record)
    RunDir.append_sample = _logged
"""


@pytest.fixture(scope="module")
def hook_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hook")
    (path / "sitecustomize.py").write_text(_HOOK)
    return path


def _run(model, out, *extra, hook=None, log=None):
    # one thread per process: both runs do their arithmetic alike, and two processes fit two cores
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    if hook is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(hook), env.get("PYTHONPATH")) if p)
        env["S2O_TEST_EVALUATED"] = str(log)
    command = [sys.executable, "-m", "s2o_eval", "run", "--model", str(model), "--task", "ruler:niah_single_1,vt",
               "--ctx", "2k", "--limit", "2", "--method", "sdpa", "--device", "cpu", "--out", str(out), "-q", *extra]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _by_key(run: RunDir) -> dict:
    return {(r["task"], r["ctx"], r["index"]): {k: v for k, v in r.items() if k not in TIMING}
            for r in run.samples()}


def _results(run: RunDir) -> list:
    return [{k: v for k, v in row.items() if k not in SUMMARY_TIMING} for row in run.summary()["results"]]


@pytest.fixture(scope="module")
def two_runs(tiny_model, tmp_path_factory, hook_dir):
    base = tmp_path_factory.mktemp("dp")
    _run(tiny_model, base / "one")
    parallel = _run(tiny_model, base / "two", "--gpus", "2", hook=hook_dir, log=base / "evaluated.txt")
    return RunDir(base / "one"), RunDir(base / "two"), parallel, (base / "evaluated.txt").read_text().splitlines()


def test_two_processes_give_what_one_gives(two_runs):
    one, two, parallel, evaluated = two_runs
    # each sample evaluated once, by one of two processes, two each
    assert len(evaluated) == 4 and len({line.split(" ", 1)[1] for line in evaluated}) == 4
    assert sorted(line.split()[0] for line in evaluated) == ["0", "0", "1", "1"]
    assert len(_by_key(one)) == 4
    assert _by_key(two) == _by_key(one)  # same prompts, predictions and scores, sample by sample
    assert _results(two) == _results(one)
    assert two.config() == one.config()
    assert two.env()["processes"] == 2 and one.env()["processes"] == 1
    assert not two.shard_paths()  # merged into samples.jsonl
    assert len(two.samples_path.read_text().splitlines()) == 4
    assert parallel.stdout.count("niah_single_1") == 1  # one process prints the table
    (session_one,), (session_two,) = one.sessions(), two.sessions()
    assert (session_one["processes"], session_one["evaluated"]) == (1, 4)
    assert (session_two["processes"], session_two["evaluated"]) == (2, 4)
    assert session_two["eval_s"] > 0 and session_two["load_s"] > 0


def test_scale_report_finds_identical_results(two_runs, tmp_path):
    one, two, _, _ = two_runs
    result = scale_report([two.path, one.path], tmp_path / "scale")
    base, parallel = result["runs"]
    assert (base["processes"], parallel["processes"]) == (1, 2)  # the fewest processes is the baseline
    assert parallel["identical_to_base"] and parallel["same_scores"] and parallel["speedup_wall"] > 0 and base["speedup_wall"] == 1.0
    text = (tmp_path / "scale" / "report.md").read_text()
    assert "| " + two.path.name + " | 2 | 4 |" in text
    # a changed prediction is found and named; the scores still agree
    records = [json.loads(line) for line in two.samples_path.read_text().splitlines()]
    copy = tmp_path / "changed"
    shutil.copytree(two.path, copy)
    records[1]["prediction"] = records[1]["prediction"] + " (changed)"
    (copy / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    changed = scale_report([one.path, copy], tmp_path / "scale2")["runs"][1]
    assert not changed["identical_to_base"] and changed["same_scores"] and changed["differences"] == [
        f"{(records[1]['task'], records[1]['ctx'], records[1]['index'])}: different prediction"]
    # a changed score fails the check
    records[2]["score"] = 100.0 - records[2]["score"]
    (copy / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    changed = scale_report([one.path, copy], tmp_path / "scale3")["runs"][1]
    assert not changed["same_scores"] and changed["n_differences"] == 2


def test_a_dead_rank_loses_only_its_unfinished_sample(two_runs, tiny_model, hook_dir, tmp_path):
    # on a copy: the module's other tests read the 2-process run as it was made
    two = RunDir(shutil.copytree(two_runs[1].path, tmp_path / "two"))
    records = [json.loads(line) for line in two.samples_path.read_text().splitlines()]
    # what a 2-process run leaves when rank 1 dies before its last sample: two shards, nothing merged
    for rank in (0, 1):
        lines = [json.dumps(r) for i, r in enumerate(records) if i % 2 == rank]
        if rank == 1:
            lines = lines[:-1]
        (two.path / f"samples.rank{rank}.jsonl").write_text("".join(line + "\n" for line in lines))
    lost = records[3]
    kept = {(r["task"], r["ctx"], r["index"]): r for r in records[:3]}
    two.samples_path.unlink()
    two.summary_path.unlink()

    _run(tiny_model, two.path, hook=hook_dir, log=tmp_path / "evaluated.txt")  # one process now: a change of N

    assert (tmp_path / "evaluated.txt").read_text().splitlines() == [f"- {lost['task']} {lost['index']}"]

    assert not two.shard_paths()
    after = {(r["task"], r["ctx"], r["index"]): r for r in two.samples()}
    assert len(two.samples_path.read_text().splitlines()) == 4
    for key, record in kept.items():
        assert after[key] == record  # kept as it was, timing included: not evaluated again
    key = (lost["task"], lost["ctx"], lost["index"])
    assert after[key]["prefill_ms"] != lost["prefill_ms"]  # evaluated again
    assert {k: v for k, v in after[key].items() if k not in TIMING} == \
        {k: v for k, v in lost.items() if k not in TIMING}
    assert two.summary()["results"][0]["n"] == 2
    assert [(s["processes"], s["evaluated"]) for s in two.sessions()][-1] == (1, 1)


def test_samples_are_shared_round_robin_across_tasks():
    plans = [(2048, "a", None, [(0, 0), (1, 1), (2, 2)]), (2048, "b", None, [(0, 0), (1, 1)])]
    assert share(plans, Place(rank=0, world_size=2)) == [(2048, "a", None, [(0, 0), (2, 2)]),
                                                           (2048, "b", None, [(1, 1)])]
    assert share(plans, Place(rank=1, world_size=2)) == [(2048, "a", None, [(1, 1)]),
                                                           (2048, "b", None, [(0, 0)])]


def test_launched_processes_run_the_command_without_gpus():
    assert relaunch_args(["run", "--gpus", "2", "--task", "ruler", "--gpus=4", "-q"]) == ["run", "--task", "ruler", "-q"]


def test_a_bad_method_is_refused_once_before_any_process_starts(tmp_path):
    done = subprocess.run([sys.executable, "-m", "s2o_eval", "run", "--task", "ruler:vt", "--ctx", "1k", "--method",
                           "nosuch", "--device", "cpu", "--gpus", "2", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 4
    assert done.stderr.count("Error: unknown method 'nosuch'") == 1 and "torch.distributed" not in done.stderr
    assert not (tmp_path / "run").exists()


def test_launched_processes_pass_their_exit_code_through_torchrun(tiny_model, tmp_path):
    """torchrun ends with 1 whatever its processes' codes; the command ends with theirs (4 here)."""
    done = subprocess.run([sys.executable, "-m", "s2o_eval", "run", "--model", str(tiny_model), "--task", "ruler:vt",
                           "--ctx", "8k", "--method", "sdpa", "--device", "cpu", "--gpus", "2", "--out",
                           str(tmp_path / "run"), "-q"], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 4, done.stdout + done.stderr
    assert "beyond" in done.stderr
