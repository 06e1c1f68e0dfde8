"""Errors a user can cause. Each carries one line that says what to do; the CLI prints it and exits."""


class UserError(Exception):
    """A mistake or a missing piece on the user's side, with the fix in its message (exit 1)."""

    exit_code = 1


class NotComparable(UserError):
    """Two runs that cannot be compared (different model, tasks, ctx or samples): exit 2."""

    exit_code = 2
