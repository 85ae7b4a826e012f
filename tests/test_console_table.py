"""The line-API table: keyed rows, filter, sort, a cursor that stays on its row."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult

from console.widgets.line_table import Column, LineTable

pytestmark = pytest.mark.anyio  # anyio's pytest plugin runs the async tests on asyncio

COLUMNS = [Column("ID", 4, "right"), Column("NAME", 0), Column("LOSS", 6, "right", fmt=lambda v: "" if v is None else f"{v:.2f}")]


class TableApp(App):
    def __init__(self, rows, **kw):
        super().__init__()
        self.rows, self.kw = rows, kw

    def compose(self) -> ComposeResult:
        yield LineTable(COLUMNS, **self.kw)

    def on_mount(self) -> None:
        self.query_one(LineTable).set_rows(self.rows)


ROWS = {i: (i, f"run-{i}", 3.0 - i / 10) for i in range(1, 6)}


def screen_text(app: App) -> str:
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def test_the_table_draws_a_header_and_only_the_rows_that_fit():
    rows = {i: (i, f"run-{i}", 1.0) for i in range(1000)}
    app = TableApp(rows, sort=0)
    async with app.run_test(size=(40, 10)) as pilot:
        await pilot.pause()
        lines = screen_text(app).splitlines()
        assert lines[0].split() == ["ID", "NAME", "LOSS"]
        assert lines[1].split() == ["0", "run-0", "1.00"]
        assert len(lines) == 10


async def test_filter_keeps_matching_rows_and_clearing_it_brings_them_back():
    app = TableApp(ROWS, sort=0)
    async with app.run_test(size=(40, 10)):
        table = app.query_one(LineTable)
        table.set_filter("RUN-3")
        assert table.keys == [3]
        table.set_filter("")
        assert table.keys == [1, 2, 3, 4, 5]


async def test_sort_orders_by_the_column_and_none_sorts_last():
    rows = {**ROWS, 9: (9, "late", None)}
    app = TableApp(rows)
    async with app.run_test(size=(40, 10)):
        table = app.query_one(LineTable)
        table.sort_by(2)
        assert table.keys == [5, 4, 3, 2, 1, 9]
        table.sort_by(0, reverse=True)
        assert table.keys == [9, 5, 4, 3, 2, 1]


async def test_the_cursor_stays_on_its_row_when_rows_are_added_above_it():
    app = TableApp(ROWS, sort=0, reverse=True)
    async with app.run_test(size=(40, 10)) as pilot:
        table = app.query_one(LineTable)
        await pilot.press("down", "down")
        assert table.cursor_key == 3
        table.set_rows({**ROWS, 6: (6, "run-6", 0.1), 7: (7, "run-7", 0.2)})
        assert table.cursor_key == 3
        assert table.keys[:2] == [7, 6]


async def test_a_changed_value_is_shown_and_removed_rows_disappear():
    app = TableApp(ROWS, sort=0)
    async with app.run_test(size=(40, 10)) as pilot:
        table = app.query_one(LineTable)
        table.set_rows({1: (1, "run-1", 0.25), 2: ROWS[2]})
        await pilot.pause()
        text = screen_text(app)
        assert "0.25" in text and "run-3" not in text
        assert table.keys == [1, 2]


async def test_enter_posts_selected_with_the_row_key():
    seen = []

    class Watch(TableApp):
        def on_line_table_selected(self, event: LineTable.Selected) -> None:
            seen.append(event.key)

    app = Watch(ROWS, sort=0)
    async with app.run_test(size=(40, 10)) as pilot:
        await pilot.press("end", "enter")
        await pilot.pause()
    assert seen == [5]


async def test_an_empty_table_says_why_it_is_empty():
    app = TableApp({}, empty="no jobs yet")
    async with app.run_test(size=(40, 6)) as pilot:
        await pilot.pause()
        assert "no jobs yet" in screen_text(app)


async def test_a_styled_cell_keeps_its_own_colours_over_the_row_style():
    from rich.text import Text

    columns = [Column("ID", 4, "right"), Column("BAR", 10, fmt=lambda v: v)]
    bar = Text("12345", style="black on green")
    bar.append("67890", style="on grey23")

    class StyledApp(TableApp):
        def compose(self) -> ComposeResult:
            yield LineTable(columns)

    app = StyledApp({1: (1, bar)})
    async with app.run_test(size=(30, 5)) as pilot:
        await pilot.pause()
        segments = [s for strip in app.screen._compositor.render_strips() for s in strip if s.text.strip()]
        bg = {s.text: s.style.bgcolor for s in segments if s.text in ("1", "12345", "67890")}
        # Before the fix the cell's base style was dropped: "12345" took the row's background.
        assert len({bg["1"], bg["12345"], bg["67890"]}) == 3
