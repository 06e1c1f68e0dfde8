"""Stopping a command from outside (issue 23): SIGTERM, which batch schedulers and containers send, ends a
run as Ctrl-C does (the line saying what is kept, the session recorded, exit 143, the same command
resumes); Ctrl-C at any moment (while starting, while loading the model, a second one while the first is
handled or the interpreter shuts down) prints one calm line or nothing, never a traceback.

Each case runs the real ``s2o-eval`` entry point in a process of its own, which signals itself at the
chosen moment: no timing is involved."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

import tiny_runs
from s2o_eval.run import distributed, interruption
from s2o_eval.run.rundir import RunDir


def _s2o_eval(prelude: str, *args: str) -> subprocess.CompletedProcess:
    """``s2o-eval ARGS`` through its console-script entry point, after ``prelude`` (which arranges a signal)."""
    script = textwrap.dedent(prelude) + textwrap.dedent("""
        import sys
        from s2o_eval.cli import main
        sys.argv = ["s2o-eval", *sys.argv[1:]]
        sys.exit(main())
    """)
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300)


def _calm(done: subprocess.CompletedProcess) -> str:
    """The process's stderr, checked to hold no traceback nor an ignored exception."""
    for alarming in ("Traceback", "Exception ignored", "KeyboardInterrupt"):
        assert alarming not in done.stderr, done.stderr
    return done.stderr


def _run_args(model, out) -> list[str]:
    return ["run", "--model", str(model), *tiny_runs.ARGS, "--out", str(out)]


_SIGNAL_AFTER_FIRST_SAMPLE = """
    import os, signal
    from s2o_eval.run.rundir import RunDir

    append = RunDir.append_sample

    def append_then_signal(self, record):
        append(self, record)
        os.kill(os.getpid(), signal.{signal})  # arrives right after the first finished sample
        {then}

    RunDir.append_sample = append_then_signal
"""


def test_sigterm_ends_a_run_like_ctrl_c_and_the_same_command_resumes(tiny_model, tmp_path):
    out = tmp_path / "run"
    done = _s2o_eval(_SIGNAL_AFTER_FIRST_SAMPLE.format(signal="SIGTERM", then="pass"), *_run_args(tiny_model, out))

    assert done.returncode == 143, done.stderr
    assert _calm(done).rstrip().splitlines()[-1] == (
        f"Interrupted: 1 finished sample is kept in {out}: rerun the same command to resume")
    run = RunDir(out)
    assert len(run.samples()) == 1 and not run.lock_path.exists()
    assert run.sessions()[-1]["interrupted"] is True and run.sessions()[-1]["evaluated"] == 1

    resumed = tiny_runs.run(tiny_model, out)
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming: 1 of 3 samples already done in {out}" in resumed.output
    assert len(run.samples()) == tiny_runs.SAMPLES and run.sessions()[-1]["evaluated"] == 2


def test_ctrl_c_while_the_model_loads_is_one_line(tiny_model, tmp_path):
    prelude = """
        import os, signal, time
        import s2o_eval.models

        def load_model(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the weights load
            time.sleep(60)

        s2o_eval.models.load_model = load_model
    """
    done = _s2o_eval(prelude, *_run_args(tiny_model, tmp_path / "run"))
    assert done.returncode == 130
    assert _calm(done).rstrip().splitlines()[-1] == "Interrupted: stopped by Ctrl-C; rerun the same command to go on"


def test_sigterm_while_the_model_loads_exits_143(tiny_model, tmp_path):
    prelude = """
        import os, signal, time
        import s2o_eval.models

        def load_model(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(60)

        s2o_eval.models.load_model = load_model
    """
    done = _s2o_eval(prelude, *_run_args(tiny_model, tmp_path / "run"))
    assert done.returncode == 143
    assert _calm(done).rstrip().splitlines()[-1] == "Interrupted: stopped by SIGTERM; rerun the same command to go on"


def test_ctrl_c_while_starting_is_one_line():
    prelude = """
        import os, signal, sys

        class CtrlCDuringImports:  # the user presses Ctrl-C while torch is imported
            def find_spec(self, name, path=None, target=None):
                if name == "torch":
                    os.kill(os.getpid(), signal.SIGINT)
                return None

        sys.meta_path.insert(0, CtrlCDuringImports())
    """
    done = _s2o_eval(prelude, "methods")
    assert done.returncode == 130
    assert _calm(done).strip() == "Interrupted: stopped by Ctrl-C while starting; nothing was done"


def test_a_second_ctrl_c_while_the_first_is_handled_ends_at_once(tiny_model, tmp_path):
    """The second arrives while the run records what the first one cut short: the process ends there,
    quietly; the finished sample is on disk already, and the same command resumes."""
    prelude = _SIGNAL_AFTER_FIRST_SAMPLE.format(signal="SIGINT", then="pass") + """
    sessions = RunDir.append_session

    def second_ctrl_c(self, session):
        os.kill(os.getpid(), signal.SIGINT)
        sessions(self, session)

    RunDir.append_session = second_ctrl_c
    """
    out = tmp_path / "run"
    done = _s2o_eval(prelude, *_run_args(tiny_model, out))
    assert done.returncode == 130
    _calm(done)
    assert len(RunDir(out).samples()) == 1
    resumed = tiny_runs.run(tiny_model, out)
    assert resumed.exit_code == 0 and f"resuming: 1 of 3 samples already done in {out}" in resumed.output


def test_ctrl_c_while_the_interpreter_shuts_down_ends_quietly():
    """After the command, a Ctrl-C during exit handlers (libraries' atexit callbacks) ends the process at
    once instead of printing "Exception ignored in atexit callback"."""
    prelude = """
        import atexit, os, signal, time

        def slow_cleanup():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(60)

        atexit.register(slow_cleanup)
    """
    done = _s2o_eval(prelude, "methods")
    assert done.returncode == 130
    _calm(done)


# -- the pieces ---------------------------------------------------------------------------------

def test_exit_codes_are_128_plus_the_signal():
    assert interruption.exit_code(KeyboardInterrupt()) == 130
    assert interruption.exit_code(interruption.Stopped(signal.SIGINT)) == 130
    assert interruption.exit_code(interruption.Stopped(signal.SIGTERM)) == 143
    assert interruption.describe(interruption.Stopped(signal.SIGTERM)) == "SIGTERM"
    assert isinstance(interruption.Stopped(signal.SIGTERM), KeyboardInterrupt)  # Ctrl-C's cleanups apply


class _Torchrun:
    """Stands in for the torchrun process of ``--gpus N``: the launcher's wait is cut by a signal."""

    def __init__(self, stop):
        self.stop, self.sent, self.waits = stop, [], 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def wait(self):
        self.waits += 1
        if self.waits == 1:
            raise self.stop
        return 1  # torchrun's own code when a process failed

    def send_signal(self, signum):
        self.sent.append(signum)


@pytest.mark.parametrize("signum, code, passed_on", [(signal.SIGTERM, 143, [signal.SIGTERM]), (signal.SIGINT, 130, [])])
def test_the_gpus_launcher_passes_a_sigterm_on_and_returns_the_processes_code(monkeypatch, signum, code, passed_on):
    """A SIGTERM may come to the launcher alone (docker stop, kill): torchrun gets it from there and stops its
    processes; a Ctrl-C in the terminal reached torchrun itself. The launcher then waits for them and ends
    with the main process's code."""
    torchrun = _Torchrun(interruption.Stopped(signum))

    def popen(command, env):
        with open(f"{env['S2O_EVAL_EXIT_CODE_DIR']}/rank0", "w") as fh:
            fh.write(str(code))  # what the main process, stopped by the signal, left
        return torchrun

    monkeypatch.setattr(distributed.subprocess, "Popen", popen)
    monkeypatch.setattr(distributed.torch.cuda, "is_available", lambda: False)
    assert distributed.relaunch(2, "cpu") == code
    assert torchrun.sent == passed_on and torchrun.waits == 2
