"""A table that scales: plain rows by key, formatted only when a line is drawn.

Textual's DataTable invalidates its whole render cache on every cell update (~50 ms per repaint at
2,048 rows, 1.5 s to fill 10,000; FIELD-NOTES). This widget keeps rows as plain tuples in a dict,
keeps the visible order (filter + sort) as a list of keys, and formats a row only in render_line.
Updates are keyed: rows whose values did not change cost nothing, and when the order is unaffected
only the changed lines are repainted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

Cell = Any  # a plain value; Column.fmt turns it into str or rich Text


@dataclass(frozen=True)
class Column:
    label: str
    width: int = 0  # 0: share the width left over by the fixed columns
    align: str = "left"  # or "right"
    fmt: Callable[[Cell], str | Text] = lambda v: "" if v is None else str(v)
    sort_key: Callable[[Cell], Any] | None = None  # default: the value, None sorting last


def _sortable(v: Any) -> tuple:
    return (v is None, v if v is not None else 0)


class LineTable(ScrollView, can_focus=True):
    """Rows keyed by any hashable; `set_rows` diffs against what is shown."""

    DEFAULT_CSS = """
    LineTable { height: 1fr; overflow-x: hidden; }
    LineTable > .line-table--header { text-style: bold; color: $text-accent; }
    LineTable > .line-table--cursor { background: $block-cursor-blurred-background; }
    LineTable:focus > .line-table--cursor { background: $block-cursor-background; color: $block-cursor-foreground; }
    """
    COMPONENT_CLASSES = {"line-table--header", "line-table--cursor"}
    BINDINGS = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home,g", "edge(0)", "First", show=False),
        Binding("end,G", "edge(1)", "Last", show=False),
        Binding("enter", "select", "Open", show=False),
    ]

    class Highlighted(Message):
        def __init__(self, table: "LineTable", key: Hashable | None) -> None:
            super().__init__()
            self.table, self.key = table, key

        @property
        def control(self) -> "LineTable":
            return self.table

    class Selected(Highlighted):
        """Enter on a row."""

    cursor = reactive(0, always_update=False, repaint=False)

    def __init__(self, columns: Sequence[Column], *, sort: int | None = None, reverse: bool = False,
                 empty: str = "nothing to show", **kw) -> None:
        super().__init__(**kw)
        self.columns = list(columns)
        self.sort_column, self.sort_reverse = sort, reverse
        self.empty = empty
        self.filter_text = ""
        self._rows: dict[Hashable, tuple] = {}
        self._search: dict[Hashable, str] = {}
        self._order: list[Hashable] = []
        self._index: dict[Hashable, int] = {}
        self._widths: list[int] = []

    # --- data ---------------------------------------------------------------------------------

    def set_rows(self, rows: Mapping[Hashable, Sequence[Cell]]) -> None:
        """Show exactly these rows. Unchanged rows cost a comparison; the cursor stays on its key."""
        old = self._rows
        changed = [k for k, v in rows.items() if old.get(k) != tuple(v)]
        removed = len(old) + sum(1 for k in changed if k not in old) != len(rows)
        if not changed and not removed:
            return
        self._rows = {k: tuple(v) for k, v in rows.items()}
        for k in changed:
            self._search.pop(k, None)
        if removed:
            self._search = {k: s for k, s in self._search.items() if k in self._rows}
        if removed or any(k not in old for k in changed) or self.filter_text or self.sort_column is not None:
            self._reorder()
        else:  # same keys, same order: repaint only what changed
            for k in changed:
                self.refresh_line(self._index[k] + 1 - round(self.scroll_y))

    def row(self, key: Hashable) -> tuple | None:
        return self._rows.get(key)

    @property
    def row_count(self) -> int:
        return len(self._order)

    @property
    def keys(self) -> list[Hashable]:
        """Keys in display order (after filter and sort)."""
        return list(self._order)

    @property
    def cursor_key(self) -> Hashable | None:
        return self._order[self.cursor] if 0 <= self.cursor < len(self._order) else None

    def move_to(self, key: Hashable) -> None:
        if key in self._index:
            self.cursor = self._index[key]

    def set_filter(self, text: str) -> None:
        self.filter_text = text.strip().lower()
        self._reorder()

    def sort_by(self, column: int | None, reverse: bool = False) -> None:
        self.sort_column, self.sort_reverse = column, reverse
        self._reorder()

    def line_text(self, key: Hashable) -> str:
        """The row as shown, as plain text (for tests and the filter)."""
        if key not in self._search:
            row = self._rows[key]
            self._search[key] = "  ".join(_plain(c.fmt(v)) for c, v in zip(self.columns, row))
        return self._search[key]

    def _reorder(self) -> None:
        current = self.cursor_key
        keys: Iterable[Hashable] = self._rows
        if self.filter_text:
            needle = self.filter_text
            keys = [k for k in keys if needle in self.line_text(k).lower()]
        if self.sort_column is not None:
            col = self.columns[self.sort_column]
            i, sk = self.sort_column, col.sort_key
            keyf = (lambda k: _sortable(sk(self._rows[k][i]))) if sk else (lambda k: _sortable(self._rows[k][i]))
            keys = sorted(keys, key=keyf, reverse=self.sort_reverse)
        self._order = list(keys)
        self._index = {k: i for i, k in enumerate(self._order)}
        self.virtual_size = Size(0, len(self._order) + 1)
        if current in self._index:
            self.set_reactive(LineTable.cursor, self._index[current])
        self.cursor = min(self.cursor, max(0, len(self._order) - 1))
        self.refresh()
        self._post_highlight()

    # --- cursor -------------------------------------------------------------------------------

    def watch_cursor(self, old: int, new: int) -> None:
        self.refresh_line(old + 1 - round(self.scroll_y))
        self.refresh_line(new + 1 - round(self.scroll_y))
        self._scroll_to_cursor()
        self._post_highlight()

    def _post_highlight(self) -> None:
        self.post_message(self.Highlighted(self, self.cursor_key))

    def _scroll_to_cursor(self) -> None:
        body = max(1, self.scrollable_content_region.height - 1)
        top = round(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + body:
            self.scroll_to(y=self.cursor - body + 1, animate=False, immediate=True)

    def action_cursor(self, delta: int) -> None:
        if self._order:
            self.cursor = max(0, min(len(self._order) - 1, self.cursor + delta))

    def action_page(self, direction: int) -> None:
        self.action_cursor(direction * max(1, self.scrollable_content_region.height - 2))

    def action_edge(self, end: int) -> None:
        if self._order:
            self.cursor = len(self._order) - 1 if end else 0

    def action_select(self) -> None:
        if self.cursor_key is not None:
            self.post_message(self.Selected(self, self.cursor_key))

    def on_click(self, event) -> None:
        row = round(self.scroll_y) + event.y - 1
        if 0 <= row < len(self._order):
            self.cursor = row

    # --- drawing ------------------------------------------------------------------------------

    def on_resize(self) -> None:
        self._widths = []
        self.virtual_size = Size(0, len(self._order) + 1)

    def _column_widths(self, width: int) -> list[int]:
        if len(self._widths) != len(self.columns) or sum(self._widths) + len(self.columns) - 1 != width:
            fixed = sum(c.width for c in self.columns) + len(self.columns) - 1
            flex = [c for c in self.columns if not c.width]
            share = max(4, (width - fixed) // len(flex)) if flex else 0
            widths = [c.width or share for c in self.columns]
            if flex:  # give the rounding remainder to the last flexible column
                last = max(i for i, c in enumerate(self.columns) if not c.width)
                widths[last] += max(0, width - fixed - share * len(flex))
            self._widths = widths
        return self._widths

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.rich_style
        if y == 0:
            style = self.get_component_rich_style("line-table--header")
            cells = [Text(c.label) for c in self.columns]
            return self._strip(cells, width, base + style)
        row = round(self.scroll_y) + y - 1
        if row >= len(self._order):
            if row == 0:
                return Strip([Segment(self.empty.ljust(width)[:width], base + Style(dim=True))], width)
            return Strip.blank(width, base)
        key = self._order[row]
        values = self._rows[key]
        cells = [c.fmt(v) for c, v in zip(self.columns, values)]
        style = base
        if row == self.cursor:
            style = base + self.get_component_rich_style("line-table--cursor")
        return self._strip(cells, width, style)

    def _strip(self, cells: list[str | Text], width: int, style: Style) -> Strip:
        widths = self._column_widths(width)
        line = Text(no_wrap=True, end="", style=style)  # the row style sits under each cell's own
        for i, (col, cell, w) in enumerate(zip(self.columns, cells, widths)):
            t = cell if isinstance(cell, Text) else Text(cell)
            if t.cell_len > w:
                t = t.copy()
                t.truncate(w, overflow="ellipsis")
            pad = " " * (w - t.cell_len)
            if col.align == "right":
                line.append(pad)
                line.append_text(t)
            else:
                line.append_text(t)
                line.append(pad)
            if i < len(self.columns) - 1:
                line.append(" ")
        return Strip(line.render(self.app.console), line.cell_len).adjust_cell_length(width, style)


def _plain(v: str | Text) -> str:
    return v.plain if isinstance(v, Text) else v
