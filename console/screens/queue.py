"""Queue: every job with its state, reason, shape, age and progress; `/` filters, `s` sorts."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from rich.text import Text
from textual.widgets import Footer, Static

from scheduler import humanize

from .. import format as fmt
from .. import queries
from ..widgets.filter_bar import FilterBar
from ..widgets.line_table import Column, LineTable
from ..widgets.status_line import StatusLine
from .base import PolledScreen

STATE_ORDER = {s: i for i, s in enumerate(("RUNNING", "STARTING", "PENDING", "FAILED", "TIMEOUT", "CANCELLED", "SUCCEEDED"))}

COLUMNS = [
    Column("ID", 5, "right"),
    Column("NAME", 0),
    Column("STATE", 9, fmt=fmt.state, sort_key=STATE_ORDER.get),
    Column("N×G", 5, "right", fmt=lambda v: f"{v[0]}×{v[1]}"),
    Column("AGE", 4, "right", fmt=fmt.age, sort_key=lambda t: -t),
    Column("STEP", 6, "right", fmt=humanize.count),
    Column("LOSS", 6, "right", fmt=lambda v: fmt.fixed(v, 3)),
    Column("TOK/S", 6, "right", fmt=humanize.count),
    Column("REASON", 0),
]
SORTS = [(0, True), (2, False), (4, False), (1, False), (7, True)]  # id newest first, state, age, name, speed


class QueueScreen(PolledScreen):
    tab = "queue"
    what = "the queue"
    BINDINGS = [
        Binding("slash", "filter", "Filter", id="queue.filter"),
        Binding("s", "sort", "Sort", id="queue.sort"),
        Binding("x", "cancel", "Cancel job", id="queue.cancel"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="queue.clear"),
    ]

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self._since: float | None = None
        self._sort = 0

    def compose(self) -> ComposeResult:
        yield StatusLine()
        table = LineTable(COLUMNS, sort=0, reverse=True, empty="no jobs yet: press n to submit one", id="queue-table")
        yield FilterBar(table, id="queue-filter")
        yield table
        yield Static("", id="queue-detail", classes="detail")
        yield Footer()

    def fetch(self, store):
        return queries.queue(store, self._since)

    def show(self, data) -> None:
        rows, since = data
        table = self.query_one(LineTable)
        if self._since is None:
            table.set_rows(rows)
        else:
            table.update_rows(rows)  # jobs are never deleted: the rows not re-read are unchanged
        self._since = since
        table.refresh()  # ages advance even when no row changed
        self._show_detail()

    @on(LineTable.Highlighted)
    def _show_detail(self) -> None:
        """The highlighted job's whole reason, which the REASON column cuts on a narrow terminal."""
        table = self.query_one(LineTable)
        row = table.row(table.cursor_key) if table.cursor_key is not None else None
        text = Text()
        if row:
            text.append(f"job {row[0]} {row[1]}  ", style="bold")
            text.append_text(fmt.state(row[2]))
            text.append(f"  {row[8]}")
        self.query_one("#queue-detail", Static).update(text)

    @property
    def selected_job(self) -> int | None:
        return self.query_one(LineTable).cursor_key

    @on(LineTable.Selected)
    def _open(self, event: LineTable.Selected) -> None:
        self.app.open_job(event.key)

    def action_filter(self) -> None:
        self.query_one(FilterBar).open()

    def action_clear_filter(self) -> None:
        self.query_one(FilterBar).action_clear()

    def action_sort(self) -> None:
        self._sort = (self._sort + 1) % len(SORTS)
        column, reverse = SORTS[self._sort]
        self.query_one(LineTable).sort_by(column, reverse)
        self.notify(f"sorted by {COLUMNS[column].label.lower()}", timeout=1.5)

    def action_cancel(self) -> None:
        if self.selected_job is not None:
            self.app.confirm_cancel(self.selected_job)
