"""One command's work on one run, as ``sessions.jsonl`` records it (``s2o-eval scale`` reads it)."""

from __future__ import annotations

import datetime
import time

from ..errors import Interrupted
from .distributed import Place
from .rundir import RunDir


class Session:
    """One command's work on one run, for sessions.jsonl: started when made, recorded once (by the
    main process) when the work ends, finished or interrupted."""

    def __init__(self, run_dir: RunDir, place: Place, load_s: float):
        self.run_dir, self.place, self.load_s = run_dir, place, load_s
        self.started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.eval_started, self.done_before = time.perf_counter(), len(run_dir.done_keys())
        self.phases: dict[str, float] = {}  # filled by loop.evaluate_into

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
