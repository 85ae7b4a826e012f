"""Console speed on a big synthetic cluster: 256 hosts, 2,048 GPUs, 10,000 jobs, 20,000 events.

    python benchmarks/console.py [--size 200x60] [--repeat 5]

Before each measured refresh the store changes as on a busy cluster: every running job's metrics
advance, every GPU's utilisation moves, ten events are appended. One refresh = the store read
(fetch, in its thread) + showing it (keyed table update) + painting every line of the screen;
goal < 50 ms. Key-to-screen latency = from a key press
to the painted screen that answers it (switching screens includes its first store read); goal
< 100 ms. Baseline, measured in the same run: Textual's DataTable holding the same 10,000 queue
rows and updating the same changed cells by key (update_cell + paint), which is what the line-API
table replaces; the ratio printed is baseline / ours. Medians of --repeat runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: tests.console_synthetic

from console import format as fmt  # noqa: E402
from console.app import build_app  # noqa: E402
from tests import console_synthetic as syn  # noqa: E402

HOSTS, GPUS, JOBS, EVENTS = 256, 8, 10_000, 20_000


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def churn(inv, i: int) -> None:
    """One poll interval of a busy cluster, written by another connection as the loop would."""
    from scheduler.store import Store

    with Store.for_state_dir(inv.state_dir, actor="bench") as store, store.tx():
        store.execute("UPDATE jobs SET metrics = json_set(metrics, '$.step', json_extract(metrics, '$.step') + 1,"
                      " '$.loss', json_extract(metrics, '$.loss') * 0.999) WHERE state = 'RUNNING'")
        store.execute("UPDATE latest SET sample = json_set(sample, '$.util', (json_extract(sample, '$.util') + 7) % 101)"
                      " WHERE gpu >= 0")
        for e in range(10):
            store.event(f"job:{e}", "RUNNING", f"churn {i}")


def paint(app) -> None:
    """Render every line of the current screen, as a frame would (widget caches were invalidated)."""
    app.screen._compositor.render_strips()


async def until(cond, timeout: float = 10.0) -> None:
    end = time.perf_counter() + timeout
    while not cond():
        if time.perf_counter() > end:
            raise TimeoutError("the screen did not show its data")
        await asyncio.sleep(0.0005)


async def measure(inv, size: tuple[int, int], repeat: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    app = build_app(inv, embedded_loop=False)
    async with app.run_test(size=size) as pilot:
        await syn.settle(pilot)
        for mode in ("cluster", "queue", "datasets", "events"):
            await app.switch_mode(mode)
            await syn.settle(pilot)
            screen = app.screen
            for i in range(repeat):
                screen.on_screen_suspend()  # no timer poll in the middle of a measurement
                await syn.settle(pilot)
                screen.on_screen_suspend()
                churn(inv, i)
                t0 = time.perf_counter()
                data = await asyncio.to_thread(screen.load)
                t1 = time.perf_counter()
                screen.show(data)
                screen.refresh()
                paint(app)
                t2 = time.perf_counter()
                results.setdefault(f"refresh {mode}: fetch", []).append(t1 - t0)
                results.setdefault(f"refresh {mode}: show+paint", []).append(t2 - t1)
                results.setdefault(f"refresh {mode}: total", []).append(t2 - t0)

        # key to screen: switch to a screen (its first read included), and move the queue's cursor
        for key, mode in (("1", "cluster"), ("3", "datasets"), ("4", "events"), ("2", "queue")):
            for _ in range(repeat):
                await app.switch_mode("queue" if mode != "queue" else "events")
                await syn.settle(pilot)
                t0 = time.perf_counter()
                app.simulate_key(key)
                await until(lambda mode=mode: app.current_mode == mode and app.screen.query("LineTable").first().row_count > 0)
                paint(app)
                results.setdefault(f"key {key} -> {mode} screen", []).append(time.perf_counter() - t0)
        table = app.screen.query_one("LineTable")
        for _ in range(repeat):
            before = table.cursor
            t0 = time.perf_counter()
            app.simulate_key("down")
            await until(lambda before=before: table.cursor == before + 1)
            paint(app)
            results.setdefault("key down -> queue cursor", []).append(time.perf_counter() - t0)
    return results


async def baseline(inv, size: tuple[int, int], repeat: int) -> list[float]:
    """DataTable with the same queue rows, updating the changed cells by key: the straightforward
    way, measured here for the ratio."""
    from textual.app import App
    from textual.widgets import DataTable

    from console.queries import queue
    from console.screens.queue import COLUMNS
    from scheduler.store import Store

    def read(since):
        with Store.for_state_dir(inv.state_dir) as store:
            return queue(store, since)

    rows, since = read(None)

    class Plain(App):
        def compose(self):
            yield DataTable()

    times = []
    app = Plain()
    async with app.run_test(size=size) as pilot:
        table = app.query_one(DataTable)
        columns = table.add_columns(*(c.label for c in COLUMNS))
        for key, row in rows.items():
            table.add_row(*(c.fmt(v) for c, v in zip(COLUMNS, row)), key=str(key))
        await pilot.pause()
        for i in range(repeat):
            churn(inv, repeat + i)
            changed, since = read(since)
            t0 = time.perf_counter()
            for key, row in changed.items():
                if row != rows.get(key):
                    for col, c, v in zip(columns, COLUMNS, row):
                        table.update_cell(str(key), col, c.fmt(v))
            rows.update(changed)
            paint(app)
            times.append(time.perf_counter() - t0)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="200x60")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    size = tuple(int(x) for x in args.size.split("x"))

    fmt.now = lambda: syn.NOW
    with tempfile.TemporaryDirectory() as d:
        inv = syn.inventory(Path(d) / "state", HOSTS, GPUS)
        t0 = time.perf_counter()
        syn.populate(inv, jobs=JOBS, events=EVENTS, gpus=GPUS)
        print(f"synthetic store: {HOSTS} hosts, {HOSTS * GPUS} GPUs, {JOBS} jobs, {EVENTS} events "
              f"({time.perf_counter() - t0:.1f} s to build); terminal {size[0]}x{size[1]}, median of {args.repeat}")
        results = asyncio.run(measure(inv, size, args.repeat))
        base = asyncio.run(baseline(inv, size, args.repeat))
    for name, values in results.items():
        goal = 0.100 if name.startswith("key") else 0.050 if name.endswith("total") else None
        verdict = "" if goal is None else ("  ok" if statistics.median(values) < goal else f"  over the {goal * 1000:.0f} ms goal")
        print(f"{name:34s} {ms(statistics.median(values))}{verdict}")
    ours = statistics.median(results["refresh queue: show+paint"])
    theirs = statistics.median(base)
    print(f"{'baseline: DataTable, 10k queue rows':34s} {ms(theirs)}")
    print(f"queue show+paint vs DataTable: {theirs / ours:.1f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
