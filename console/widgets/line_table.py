"""A table that scales: plain rows by key, formatted only when a line is drawn.

Textual's DataTable invalidates its whole render cache on every cell update (~50 ms per repaint at
2,048 rows, 1.5 s to fill 10,000; FIELD-NOTES). This widget keeps rows as plain tuples in a dict,
keeps the visible order (filter + sort) as a list of keys, and formats a row only in render_line.
Updates are keyed: rows whose values did not change cost nothing, and when the order is unaffected
only the changed lines are repainted.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from rich.text import Span, Text
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
    fmt: Callable[..., str | Text] = lambda v: "" if v is None else str(v)
    fit: bool = False  # fmt takes (value, width): bars and sparklines that grow with the column
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
        Binding("up,k", "cursor(-1)", "Up", show=False, id="table.up"),
        Binding("down,j", "cursor(1)", "Down", show=False, id="table.down"),
        Binding("pageup", "page(-1)", "Page up", show=False, id="table.page_up"),
        Binding("pagedown", "page(1)", "Page down", show=False, id="table.page_down"),
        Binding("home,g", "edge(0)", "First", show=False, id="table.first"),
        Binding("end,G", "edge(1)", "Last", show=False, id="table.last"),
        Binding("enter", "select", "Open", show=False, id="table.open"),
    ]

    class Highlighted(Message):
        def __init__(self, table: LineTable, key: Hashable | None) -> None:
            super().__init__()
            self.table, self.key = table, key

        @property
        def control(self) -> LineTable:
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
        self._index: dict[Hashable, int] = {}  # key -> display row
        self._sort_values: list[tuple] = []  # aligned with _order when sorted
        self._frame: tuple = (0, Style(), Style(), Style())  # (width, base, header, cursor) of this paint
        self._widths: list[int] = []

    # --- data ---------------------------------------------------------------------------------

    def set_rows(self, rows: Mapping[Hashable, Sequence[Cell]]) -> None:
        """Show exactly these rows. Unchanged rows cost a comparison; the cursor stays on its key."""
        old = self._rows
        changed = {k: tuple(v) for k, v in rows.items() if old.get(k) != tuple(v)}
        removed = [k for k in old if k not in rows] if len(old) + sum(k not in old for k in changed) != len(rows) else []
        self._apply(changed, removed)

    def update_rows(self, rows: Mapping[Hashable, Sequence[Cell]]) -> None:
        """Add or change these rows, keep the others (for sources read incrementally)."""
        old = self._rows
        self._apply({k: tuple(v) for k, v in rows.items() if old.get(k) != tuple(v)}, [])

    def _apply(self, changed: dict[Hashable, tuple], removed: list[Hashable]) -> None:
        if not changed and not removed:
            return
        old = self._rows
        added = any(k not in old for k in changed)
        sc = self.sort_column
        moved = sc is not None and any(k in old and old[k][sc] != v[sc] for k, v in changed.items())
        if self.filter_text:  # a changed row may start or stop matching
            needle = self.filter_text
            before = {k: k in self._index for k in changed}
        for k in removed:
            del old[k]
            self._search.pop(k, None)
        for k, v in changed.items():
            old[k] = v
            self._search.pop(k, None)
        refiltered = self.filter_text and any((needle in self.line_text(k).lower()) != was for k, was in before.items())
        if removed or moved or refiltered:
            self._reorder()
            return
        if added:
            self._insert([k for k in changed if k not in self._index])
            return
        # Same rows in the same order: repaint only the changed lines in view (refresh_line costs
        # ~0.1 ms; calling it for thousands of rows out of view would cost more than a full repaint).
        top, height = round(self.scroll_y), self.scrollable_content_region.height
        visible = [r for r in (self._index.get(k) for k in changed) if r is not None and top <= r < top + height]
        if len(visible) > height // 4:
            self.refresh()
        else:
            for r in visible:
                self.refresh_line(r + 1 - top)

    def row(self, key: Hashable) -> tuple | None:
        return self._rows.get(key)

    @property
    def row_count(self) -> int:
        return len(self._order)

    @property
    def keys(self) -> list[Hashable]:
        """Keys in display order (after filter and sort)."""
        return self._order[::-1] if self.sort_reverse else list(self._order)

    def _key_at(self, row: int) -> Hashable:
        return self._order[-1 - row] if self.sort_reverse else self._order[row]

    @property
    def cursor_key(self) -> Hashable | None:
        return self._key_at(self.cursor) if 0 <= self.cursor < len(self._order) else None

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
            self._search[key] = "  ".join(_plain(c.fmt(v, 8) if c.fit else c.fmt(v)) for c, v in zip(self.columns, row))
        return self._search[key]

    # _order is ascending (or arrival order when unsorted); reverse only changes how it is read, so
    # new rows go in by bisection instead of a full sort (a busy events list gains rows every poll).

    def _sort_value(self, key: Hashable) -> tuple:
        i = self.sort_column
        sk = self.columns[i].sort_key
        v = self._rows[key][i]
        return _sortable(sk(v) if sk else v)

    def _reorder(self) -> None:
        current = self.cursor_key
        keys: Iterable[Hashable] = self._rows
        if self.filter_text:
            needle = self.filter_text
            keys = [k for k in keys if needle in self.line_text(k).lower()]
        if self.sort_column is not None:
            keys = sorted(keys, key=self._sort_value)
            self._sort_values = [self._sort_value(k) for k in keys]
        self._order = list(keys)
        self._reindex(current)

    def _insert(self, new: list[Hashable]) -> None:
        current = self.cursor_key
        if self.filter_text:
            new = [k for k in new if self.filter_text in self.line_text(k).lower()]
        for k in new:
            if self.sort_column is None:
                self._order.append(k)
                continue
            v = self._sort_value(k)
            at = bisect.bisect_right(self._sort_values, v)
            self._sort_values.insert(at, v)
            self._order.insert(at, k)
        self._reindex(current)

    def _reindex(self, current: Hashable | None) -> None:
        n = len(self._order)
        if self.sort_reverse:
            self._index = {k: n - 1 - i for i, k in enumerate(self._order)}
        else:
            self._index = {k: i for i, k in enumerate(self._order)}
        self.virtual_size = Size(0, n + 1)
        if current in self._index:
            self.set_reactive(LineTable.cursor, self._index[current])
        self.cursor = min(self.cursor, max(0, n - 1))
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

    def render_lines(self, crop):
        # Looked up once per paint, not per line: each of these walks the DOM or the styles.
        self._frame = (self.scrollable_content_region.width, self.rich_style,
                       self.get_component_rich_style("line-table--header"),
                       self.get_component_rich_style("line-table--cursor"))
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        width, base, header, cursor = self._frame
        if y == 0:
            return self._strip([c.label for c in self.columns], width, base + header)
        row = round(self.scroll_y) + y - 1
        if row >= len(self._order):
            if row == 0:
                return Strip([Segment(self.empty.ljust(width)[:width], base + Style(dim=True))], width)
            return Strip.blank(width, base)
        values = self._rows[self._key_at(row)]
        widths = self._column_widths(width)
        cells = [c.fmt(v, w) if c.fit else c.fmt(v) for c, v, w in zip(self.columns, values, widths)]
        return self._strip(cells, width, base + cursor if row == self.cursor else base)

    def _strip(self, cells: list[str | Text], width: int, style: Style) -> Strip:
        """Segments straight from the cells: plain strings (most cells) skip rich Text entirely."""
        widths = self._column_widths(width)
        console = self.app.console
        segments: list[Segment] = []
        last = len(self.columns) - 1
        for i, (col, cell, w) in enumerate(zip(self.columns, cells, widths)):
            if isinstance(cell, Text):
                # The row style goes under the cell's: its own base style becomes a span over it all.
                spans = [Span(0, len(cell.plain), cell.style), *cell.spans] if cell.style else cell.spans
                t = Text(cell.plain, style=style, spans=spans, end="", no_wrap=True)
                if t.cell_len > w:
                    t.truncate(w, overflow="ellipsis")
                pad = " " * (w - t.cell_len)
                parts = list(t.render(console))
            else:
                if cell_len(cell) > w:
                    cell = set_cell_size(cell, w - 1) + "…" if w > 1 else cell[:w]
                pad = " " * (w - cell_len(cell))
                parts = [Segment(cell, style)]
            gap = pad + (" " if i < last else "")
            if col.align == "right":
                if pad:
                    segments.append(Segment(pad, style))
                segments.extend(parts)
                if i < last:
                    segments.append(Segment(" ", style))
            else:
                segments.extend(parts)
                if gap:
                    segments.append(Segment(gap, style))
        return Strip(segments).adjust_cell_length(width, style)


def _plain(v: str | Text) -> str:
    return v.plain if isinstance(v, Text) else v
