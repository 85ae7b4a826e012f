"""Polling that cannot stop or overlap: a failed read is reported once and the next poll still runs;
rapid refreshes never run two loads of a screen at once nor add a chart point twice."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from console import app as console_app
from console import queries
from console.app import build_app
from console.screens.job import JobScreen
from console.screens.queue import QueueScreen
from console.widgets.line_table import LineTable
from console.widgets.loss_chart import LossChart
from scheduler.store import Store
from tests.console_synthetic import NOW, screen_text, settle, synthetic  # noqa: F401 (fixture)

pytestmark = pytest.mark.anyio


async def until(pilot, condition, tries: int = 200) -> None:
    """Let polls run until condition() holds (bounded by tries, not by time)."""
    for _ in range(tries):
        await settle(pilot)
        if condition():
            return
        await pilot.pause(0.05)


def failing(fn, times: int, error: Exception):
    """fn, except that its first `times` calls raise error."""
    calls = []

    def wrapper(*args, **kw):
        calls.append(1)
        if len(calls) <= times:
            raise error
        return fn(*args, **kw)

    return wrapper


def errors(app) -> list[str]:
    return [n.message for n in app._notifications if n.severity == "error"]


async def test_a_failed_poll_is_reported_once_and_the_screen_keeps_updating(synthetic, monkeypatch):
    monkeypatch.setattr(QueueScreen, "interval", 0.05)
    monkeypatch.setattr(QueueScreen, "fetch", failing(QueueScreen.fetch, 3, sqlite3.OperationalError("database is locked")))
    app = build_app(synthetic, embedded_loop=False)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(LineTable)
        await until(pilot, lambda: table.row_count == 50)
        assert table.row_count == 50
        assert errors(app) == ["the queue not refreshed (retrying every 0.05 s): OperationalError: database is locked"]

        with Store.for_state_dir(synthetic.state_dir) as store:
            store.execute("UPDATE jobs SET state = 'FAILED', ended_at = ? WHERE id = 50", (NOW,))
        await until(pilot, lambda: table.row(50)[2] == "FAILED")
        assert table.row(50)[2] == "FAILED"


async def test_the_header_keeps_watching_the_lease_after_a_failed_read(synthetic, monkeypatch):
    monkeypatch.setattr(console_app, "OVERVIEW_INTERVAL", 0.05)
    monkeypatch.setattr(queries, "overview", failing(queries.overview, 1, sqlite3.OperationalError("disk I/O error")))
    app = build_app(synthetic, embedded_loop=False)
    async with app.run_test(size=(80, 24)) as pilot:
        header = lambda: screen_text(app).splitlines()[0]  # noqa: E731
        await until(pilot, lambda: "scheduler: 4242@head" in header())
        assert "scheduler: 4242@head" in header()
        assert errors(app) == ["the header not refreshed (retrying every 0.05 s): OperationalError: disk I/O error"]

        with Store.for_state_dir(synthetic.state_dir) as store:
            store.execute("DELETE FROM lease")
        await until(pilot, lambda: "no scheduler" in header())
        assert "no scheduler" in header()


async def test_rapid_refreshes_never_overlap_loads_nor_duplicate_chart_points(synthetic, monkeypatch):
    run_dir = synthetic.state_dir / "work" / "runs" / "50"
    run_dir.mkdir(parents=True)
    metrics = run_dir / "metrics.jsonl"
    metrics.write_text("")
    running, most = [0], [0]
    lock = threading.Lock()
    load = JobScreen.load

    def slow_load(self):  # counts loads in flight; the pause makes an overlap likely if one were possible
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.02)
            return load(self)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(JobScreen, "load", slow_load)
    app = build_app(synthetic, embedded_loop=False, job=50)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        for batch in range(10):
            with metrics.open("a") as f:
                f.writelines(f'{{"step":{s},"loss":{3 - s / 1000}}}\n' for s in range(batch * 10, batch * 10 + 10))
            for _ in range(10):
                app.screen.poll()
            await pilot.pause()
            if batch % 3 == 0:  # a screen resumed while a poll runs
                await pilot.press("question_mark")
                await pilot.press("escape")
        chart = app.screen.query_one(LossChart)
        await until(pilot, lambda: len(chart.train) >= 100)
        assert [step for step, _ in chart.train] == list(range(100))
        assert most[0] == 1
