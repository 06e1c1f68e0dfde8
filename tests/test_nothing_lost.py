"""Finished samples are never lost nor evaluated twice: a torn last line, a second command on the same
run directory, Ctrl-C, and any damage to any file of a run directory followed by a rerun."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys

import pytest

import tiny_runs
from s2o_eval.errors import UserError
from s2o_eval.run.rundir import RunDir


def _lines(path) -> list[bytes]:
    return path.read_bytes().splitlines()


# -- a torn last line ---------------------------------------------------------------------------

def test_appends_after_a_torn_last_line_start_on_a_line_of_their_own(tmp_path):
    """samples.jsonl, a rank shard and sessions.jsonl: the record after a fragment stays readable."""
    for shard in (None, 1):
        run = RunDir(tmp_path / f"shard-{shard}", shard=shard)
        run.path.mkdir()
        run.append_sample({"task": "t", "ctx": 1024, "index": 0, "score": 100.0})
        with open(run.append_path, "ab") as fh:
            fh.write(b'{"task": "t", "ctx": 1024, "index": 1, "sco')  # killed mid-write
        run.append_sample({"task": "t", "ctx": 1024, "index": 1, "score": 0.0})
        assert sorted(r["index"] for r in run.samples()) == [0, 1]
        session = {"processes": 1, "load_s": 0.5, "eval_s": 2.0}
        run.append_session(session | {"evaluated": 1})
        with open(run.sessions_path, "ab") as fh:
            fh.write(b'{"evalua')
        run.append_session(session | {"evaluated": 2})
        assert [s["evaluated"] for s in run.sessions()] == [1, 2]


def test_a_torn_last_line_is_redone_on_its_own_line(finished_run, tiny_model, tmp_path):
    """The issue's repro: keep all lines but the last, append part of it without a newline, rerun."""
    run = tiny_runs.copy(finished_run, tmp_path / "run")
    *kept, last = _lines(run.samples_path)
    run.samples_path.write_bytes(b"".join(line + b"\n" for line in kept) + last[: len(last) // 2])

    result = tiny_runs.run(tiny_model, run.path)

    assert result.exit_code == 0, result.output
    lines = _lines(run.samples_path)
    assert lines[:-2] == kept and lines[-2] == last[: len(last) // 2]  # the fragment sits on its own line
    assert json.loads(lines[-1])["index"] == json.loads(last)["index"]  # and the redone sample after it
    assert run.summary()["results"][0]["n"] == tiny_runs.SAMPLES
    assert run.sessions()[-1]["evaluated"] == 1


# -- one command per run directory --------------------------------------------------------------

_HOLDER = """
import sys, time
from pathlib import Path
from s2o_eval.run.lock import hold
with hold(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_run_directory_in_use_is_refused_and_a_dead_holders_lock_taken_over(finished_run, tiny_model, tmp_path):
    run = tiny_runs.copy(finished_run, tmp_path / "run")
    run.samples_path.write_bytes(b"".join(line + b"\n" for line in _lines(run.samples_path)[:-1]))
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run.lock_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        refused = tiny_runs.run(tiny_model, run.path)
    finally:
        holder.kill()  # SIGKILL: the holder leaves its lock file behind
        holder.wait()
    assert refused.exit_code == 4
    assert tiny_runs.error_lines(refused.output) == [
        f"Error: {run.path} is in use by process {holder.pid} on {socket.gethostname()} "
        f"(since {json.loads(run.lock_path.read_text())['since']}): wait for it to finish or stop it, "
        "or pass another --out"]
    assert len(run.samples()) == tiny_runs.SAMPLES - 1  # nothing evaluated

    taken_over = tiny_runs.run(tiny_model, run.path)
    assert taken_over.exit_code == 0, taken_over.output
    assert len(run.samples()) == tiny_runs.SAMPLES and not run.lock_path.exists()


def test_the_lock_is_held_for_the_block_only(tmp_path):
    run = RunDir(tmp_path / "run")
    with run.hold():
        holder = json.loads(run.lock_path.read_text())
        assert (holder["pid"], holder["host"]) == (os.getpid(), socket.gethostname())
        with pytest.raises(UserError, match="is in use by process"):
            with RunDir(run.path).hold():
                pass
    assert not run.lock_path.exists()
    with run.hold():  # free again
        pass


# -- Ctrl-C -------------------------------------------------------------------------------------

def test_ctrl_c_says_what_was_kept_and_records_the_session(tiny_model, tmp_path, monkeypatch):
    original = RunDir.append_sample
    appended = []

    def interrupted_after_one(self, record):
        if appended:
            raise KeyboardInterrupt
        appended.append(record)
        original(self, record)

    monkeypatch.setattr(RunDir, "append_sample", interrupted_after_one)
    result = tiny_runs.run(tiny_model, tmp_path / "run")

    assert result.exit_code == 130
    assert tiny_runs.error_lines(result.output, "Interrupted") == [
        f"Interrupted: 1 finished sample is kept in {tmp_path / 'run'}: rerun the same command to resume"]
    run = RunDir(tmp_path / "run")
    session = run.sessions()[-1]
    assert session["interrupted"] is True and session["evaluated"] == 1
    assert run.summary()["results"][0]["n"] == 1 and not run.lock_path.exists()


# -- any damage, then a rerun -------------------------------------------------------------------

def _damage(path, how: str, rng: random.Random) -> None:
    """Cut ``path`` short, append garbage to it, or overwrite a span of it with garbage."""
    data = bytearray(path.read_bytes() if path.exists() else b"")
    garbage = rng.randbytes(rng.randint(1, 300))
    if how == "truncate":
        del data[rng.randrange(len(data)):]
    elif how == "append":
        data += garbage
    else:
        start = rng.randrange(len(data))
        data[start:start + len(garbage)] = garbage
    path.write_bytes(bytes(data))


CASES = [(name, how) for name in ("config.json", "env.json", "samples.jsonl", "summary.json", "sessions.jsonl")
         for how in ("truncate", "append", "overwrite")]
CASES += [("run.lock", "append"), ("samples.rank1.jsonl", "append")]  # left by a killed (data-parallel) run


@pytest.mark.parametrize("name, how", CASES)
def test_a_damaged_run_directory_loses_no_finished_sample(finished_run, tiny_model, tmp_path, name, how):
    """Property: whatever a file of the run directory suffered, the rerun keeps every sample that
    survived as it was, redoes only the others, and ends with the clean run's samples and summary."""
    run = tiny_runs.copy(finished_run, tmp_path / "run")
    clean_lines = set(_lines(finished_run.samples_path))
    _damage(run.path / name, how, random.Random(f"{name}-{how}"))
    survivors = [json.loads(line) for line in _lines(run.samples_path) if line in clean_lines]

    result = tiny_runs.run(tiny_model, run.path)

    assert result.exit_code == 0, result.output
    after = {(r["task"], r["ctx"], r["index"]): r for r in run.samples()}
    assert after.keys() == {(r["task"], r["ctx"], r["index"]) for r in finished_run.samples()}
    for record in survivors:  # kept as they were, timing included: not evaluated again
        assert after[(record["task"], record["ctx"], record["index"])] == record
    assert run.sessions()[-1]["evaluated"] == tiny_runs.SAMPLES - len(survivors)
    assert tiny_runs.results_without_timing(run) == tiny_runs.results_without_timing(finished_run)
    assert run.config() == finished_run.config() and run.env().keys() == finished_run.env().keys()
    assert not run.lock_path.exists() and not run.shard_paths()
