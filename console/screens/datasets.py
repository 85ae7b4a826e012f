"""Datasets: every registered version with its size and how many hosts hold a verified copy;
below, the highlighted version's placement per host. `y` syncs it to every host, `v` verifies."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Static

from scheduler import humanize

from .. import format as fmt
from .. import queries
from ..widgets.filter_bar import FilterBar
from ..widgets.line_table import Column, LineTable
from ..widgets.status_line import StatusLine
from .base import PolledScreen

VERSION_COLUMNS = [
    Column("DATASET", 0),
    Column("SHARDS", 6, "right"),
    Column("TOKENS", 7, "right", fmt=humanize.count),
    Column("VOCAB", 6, "right", fmt=humanize.count),
    Column("CREATED", 14, "right", fmt=fmt.clock),
    Column("VERIFIED", 8, "right"),
]
PLACEMENT_COLUMNS = [
    Column("HOST", 0),
    Column("STATE", 9, fmt=fmt.state),
    Column("DETAIL", 0),
    Column("UPDATED", 14, "right", fmt=fmt.clock),
]


class DatasetsScreen(PolledScreen):
    tab = "datasets"
    what = "the data screen"
    BINDINGS = [
        Binding("slash", "filter", "Filter", id="data.filter"),
        Binding("y", "sync", "Sync", id="data.sync"),
        Binding("v", "verify", "Verify", id="data.verify"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="data.clear"),
    ]

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self._data: queries.Datasets | None = None

    def compose(self) -> ComposeResult:
        yield StatusLine()
        versions = LineTable(VERSION_COLUMNS, sort=4, reverse=True, id="versions-table",
                             empty="no datasets yet: `headnode data prepare FILES --name NAME`")
        yield FilterBar(versions, id="versions-filter")
        yield versions
        yield Static("Placement", id="placement-title", classes="section")
        yield LineTable(PLACEMENT_COLUMNS, sort=0, empty="select a dataset version", id="placement-table")
        yield Footer()

    def fetch(self, store):
        return queries.datasets(store, self.app.inventory)

    def show(self, data: queries.Datasets) -> None:
        self._data = data
        self.query_one("#versions-table", LineTable).set_rows(data.versions)
        self._show_placement()

    @property
    def selected(self) -> str | None:
        return self.query_one("#versions-table", LineTable).cursor_key

    @on(LineTable.Highlighted, "#versions-table")
    def _moved(self) -> None:
        self._show_placement()

    def _show_placement(self) -> None:
        ref = self.selected
        rows = self._data.placements.get(ref, {}) if self._data and ref else {}
        self.query_one("#placement-title", Static).update(f"Placement of {ref}" if ref else "Placement")
        self.query_one("#placement-table", LineTable).set_rows(rows)

    def action_filter(self) -> None:
        self.query_one(FilterBar).open()

    def action_clear_filter(self) -> None:
        self.query_one(FilterBar).action_clear()

    def action_sync(self) -> None:
        if self.selected:
            self.app.data_action("sync", self.selected)

    def action_verify(self) -> None:
        if self.selected:
            self.app.data_action("verify", self.selected)
