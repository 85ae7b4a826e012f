"""User-facing errors: one sentence that says what went wrong, why, and what to do."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix. The CLI prints it as one line on stderr and exits non-zero.

    Build the message as: what happened, why, what to do — e.g.
    UserError("job 'x' not found", "no job has that id or name", "run `headnode queue --all` to list jobs").
    """

    exit_code = 2

    def __init__(
        self, what: str, why: str | None = None, fix: str | None = None, *, field: str | None = None, exit_code: int | None = None
    ):
        # field: which input the mistake is about (a JobSpec field such as "nodes"), so a form can
        # show it there without reading the words.
        self.what, self.why, self.fix, self.field = what, why, fix, field
        if exit_code is not None:
            self.exit_code = exit_code
        super().__init__(self.sentence())

    def sentence(self) -> str:
        s = self.what
        if self.why:
            s += f": {self.why}"
        if self.fix:
            s += f"; {self.fix}"
        return s if s.endswith(".") else s + "."


class ConfigError(UserError):
    """hosts.toml is missing or wrong; the message names the file, the line or key, and a fix."""


class NotFound(UserError):
    exit_code = 3
