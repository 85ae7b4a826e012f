"""Cancel confirmation: says exactly what will stop (every node and its GPUs) before it does."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from scheduler.model import TERMINAL

from .. import queries


def what_stops(d: queries.JobDetail) -> Text:
    j = d.job
    t = Text()
    t.append(f"Cancel job {j.id} ({j.name})?\n\n", style="bold")
    if j.state in TERMINAL:
        t.append(f"It already ended: {j.state}. Nothing to stop.\n")
        return t
    t.append(f"It is {j.state}")
    live = [n for n in d.nodes if not n.over]
    if not live:
        t.append(", not started on any host: it leaves the queue.\n")
        return t
    t.append(". These will be stopped, and checked gone:\n")
    for n in live:
        gpus = ",".join(map(str, n.gpus)) or "no GPU"
        t.append(f"  node {n.node_rank} on {n.host}  (GPUs {gpus}, pid {n.pid or '?'})\n")
    return t


class ConfirmCancel(ModalScreen[bool]):
    BINDINGS = [
        Binding("y", "dismiss(True)", "Yes, cancel", id="cancel.yes"),
        Binding("n,escape", "dismiss(False)", "No", id="cancel.no"),
    ]

    def __init__(self, detail: queries.JobDetail) -> None:
        super().__init__()
        self.detail = detail

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="cancel-dialog"):
            yield Static(what_stops(self.detail), id="cancel-what")
            with Horizontal(classes="buttons"):
                yield Button("y: cancel the job", variant="error", id="yes", compact=True)
                yield Button("n: keep it", id="no", compact=True)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")
