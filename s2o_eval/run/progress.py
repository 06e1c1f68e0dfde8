"""The run's progress bar over samples (rich)."""

from __future__ import annotations


class Progress:
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
