"""The header: the screens as tabs, and who runs the scheduler loop; the cluster at a glance when
the terminal is wide enough."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from .. import format as fmt
from ..queries import Overview

TABS = (("1", "Cluster", "cluster"), ("2", "Queue", "queue"), ("3", "Data", "datasets"), ("4", "Events", "events"))


def scheduler_label(overview: Overview | None, embedded: bool, *, store_gone: bool = False,
                    loop_stopped: bool = False) -> str:  # fmt: skip
    if store_gone:
        return "STORE GONE: scheduler stopped" if loop_stopped else "STORE GONE"
    if loop_stopped:
        return "scheduler: stopped"
    if embedded:
        return "scheduler: embedded"
    if overview is not None and overview.holder:
        return f"scheduler: {overview.holder}"
    return "no scheduler"


class StatusLine(Widget):
    DEFAULT_CSS = "StatusLine { height: 1; dock: top; background: $panel; }"

    def on_mount(self) -> None:
        self.watch(self.app, "overview", lambda _: self.refresh(), init=False)
        self.watch(self.app, "embedded", lambda _: self.refresh(), init=False)
        self.watch(self.app, "store_gone", lambda _: self.refresh(), init=False)
        self.watch(self.app, "loop_stopped", lambda _: self.refresh(), init=False)

    def render(self) -> Text:
        app = self.app
        current = getattr(self.screen, "tab", None)
        line = Text(" headnode ", style="bold reverse")
        line.append(" ")
        for key, label, mode in TABS:
            style = "bold reverse" if mode == current else ""
            line.append(f" {key} {label} ", style=style)
        ov, embedded = app.overview, app.embedded
        gone, stopped = getattr(app, "store_gone", None), getattr(app, "loop_stopped", None)
        label = scheduler_label(ov, embedded, store_gone=bool(gone), loop_stopped=bool(stopped))
        style = "bold red" if gone or stopped else "green" if embedded or (ov and ov.holder) else "bold yellow"
        sched = Text(f"{label} ", style=style)
        # What fits, by priority: who runs the scheduler, then the cluster at a glance, then the
        # age of the last cycle (a stalled loop shows there first).
        extras = []
        if ov is not None:
            extras.append(Text(f"hosts {ov.hosts_up}/{ov.hosts} up  GPUs {ov.gpus_used}/{ov.gpus}  "
                               f"jobs {ov.running} running {ov.pending} pending  "))
            if ov.holder and ov.last_cycle_at:
                extras.append(Text(f"(cycle {fmt.age(ov.last_cycle_at)} ago) ", style="dim"))
        room = self.size.width - line.cell_len - 1
        if sched.cell_len > room:
            return line
        right = sched
        for extra in extras:
            if right.cell_len + extra.cell_len <= room:
                right = Text.assemble(extra, right) if extra is extras[0] else Text.assemble(right, extra)
        line.append(" " * (self.size.width - line.cell_len - right.cell_len))
        line.append_text(right)
        return line
