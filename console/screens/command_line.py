"""`:` command mode: one line at the bottom, like vim and k9s; Enter runs it, Esc leaves."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Input


class CommandLine(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Close", id="command.close")]

    def compose(self) -> ComposeResult:
        yield Input(placeholder="queue | job 12 | cancel 12 | drain HOST | sync NAME@V | help",
                    id="command-input", compact=True)

    @on(Input.Submitted)
    def _run(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)
