"""Events: the audit trail, newest first, read incrementally by id; `/` filters."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer

from .. import format as fmt
from .. import queries
from ..widgets.filter_bar import FilterBar
from ..widgets.line_table import Column, LineTable
from ..widgets.status_line import StatusLine
from .base import PolledScreen

COLUMNS = [
    Column("TIME", 11, fmt=fmt.clock),
    Column("OBJECT", 0),
    Column("WHAT", 14, fmt=fmt.state),
    Column("REASON", 0),
    Column("ACTOR", 12),
]
KEEP = 20_000  # the newest events held in memory; older ones stay in the store
TRIM = 1_000


class EventsScreen(PolledScreen):
    tab = "events"
    what = "the events screen"
    BINDINGS = [
        Binding("slash", "filter", "Filter", id="events.filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="events.clear"),
    ]

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self._rows: dict[int, tuple] = {}
        self._after = 0

    def compose(self) -> ComposeResult:
        yield StatusLine()
        table = LineTable(COLUMNS, sort=0, reverse=True, empty="no events yet", id="events-table")
        yield FilterBar(table, id="events-filter")
        yield table
        yield Footer()

    def fetch(self, store):
        return queries.events(store, self._after, KEEP)

    def show(self, rows: dict[int, tuple]) -> None:
        if not rows:
            return
        # rows are (id, ts, actor, object, what, reason); the table wants (ts, object, what, reason, actor)
        self._rows.update({k: (r[1], r[3], r[4], r[5], r[2]) for k, r in rows.items()})
        if len(self._rows) > KEEP + TRIM:  # trimmed in batches: a removal re-sorts the table
            for k in sorted(self._rows)[: len(self._rows) - KEEP]:
                del self._rows[k]
            self.query_one(LineTable).set_rows(self._rows)
        else:
            self.query_one(LineTable).update_rows({k: self._rows[k] for k in rows})
        self._after = max(self._rows, default=0)

    def action_filter(self) -> None:
        self.query_one(FilterBar).open()

    def action_clear_filter(self) -> None:
        self.query_one(FilterBar).action_clear()
