"""`/` filter: an input shown above a table; typing filters it live, Enter keeps the filter and
returns to the table, Esc clears it."""

from __future__ import annotations

from textual import on
from textual.binding import Binding
from textual.widgets import Input

from .line_table import LineTable


class FilterBar(Input):
    DEFAULT_CSS = """
    FilterBar { display: none; height: 1; border: none; padding: 0 1; background: $boost; }
    FilterBar.-active { display: block; }
    """
    BINDINGS = [Binding("escape", "clear", "Clear filter", show=False, id="filter.clear")]

    def __init__(self, table: LineTable, **kw) -> None:
        super().__init__(placeholder="filter (Enter keeps, Esc clears)", **kw)
        self.table = table

    def open(self) -> None:
        self.add_class("-active")
        self.focus()

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        event.stop()
        self.table.set_filter(event.value)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if not self.value:
            self.remove_class("-active")
        self.table.focus()

    def action_clear(self) -> None:
        self.value = ""
        self.remove_class("-active")
        self.table.focus()
