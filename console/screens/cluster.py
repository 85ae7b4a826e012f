"""Cluster: one row per host; below it, the highlighted host's GPUs with utilisation and memory
bars, a sparkline of recent utilisation, temperature, power and the job that owns each GPU."""

from __future__ import annotations

from collections import deque

from textual import on, work
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

HISTORY = 120  # polls kept per GPU for the sparkline (two minutes at the default interval)


def _used(v: tuple) -> str:
    used, total = v
    return f"{used}/{'?' if total is None else total}"


def _pct_bar(v: float | None, width: int):
    return fmt.bar(None if v is None else v / 100, width, humanize.percent(v))


def _mem_bar(v: tuple, width: int):
    used, total = v
    if used is None or not total:
        return fmt.bar(None, width)
    return fmt.bar(used / total, width, f"{humanize.size(used)}/{humanize.size(total)}")


# Bars and sparklines share the width left by the fixed columns: wider terminals get longer ones.
HOST_COLUMNS = [
    Column("HOST", 0),
    Column("STATE", 8, fmt=fmt.state),
    Column("GPUS", 5, "right", fmt=_used),
    Column("CPU", 0, fmt=_pct_bar, fit=True),
    Column("MEM", 0, fmt=_pct_bar, fit=True),
    Column("JOBS", 0),
]
GPU_COLUMNS = [
    Column("GPU", 3, "right"),
    Column("NAME", 0, fmt=lambda v: v.removeprefix("NVIDIA ")),  # the vendor is the same everywhere
    Column("UTIL", 0, fmt=_pct_bar, fit=True),
    Column("MEMORY", 0, fmt=_mem_bar, fit=True),
    Column("RECENT UTIL", 0, fmt=fmt.sparkline, fit=True),
    Column("TEMP", 4, "right", fmt=lambda v: "" if v is None else f"{v:.0f}C"),
    Column("POWER", 5, "right", fmt=lambda v: "" if v is None else f"{v:.0f}W"),
    Column("JOB", 6, "right"),
]


class ClusterScreen(PolledScreen):
    tab = "cluster"
    what = "the cluster screen"
    BINDINGS = [
        Binding("slash", "filter", "Filter", id="cluster.filter"),
        Binding("d", "drain", "Drain/undrain", id="cluster.drain"),
        Binding("tab", "focus_next", "GPUs/hosts", show=False, id="cluster.next"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="cluster.clear"),
    ]

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self._data: queries.Cluster | None = None
        self._history: dict[tuple[str, int], deque] = {}
        self._sampled: dict[tuple[str, int], float | None] = {}  # the timestamp of each GPU's last point
        self._seeded: set[str] = set()

    def compose(self) -> ComposeResult:
        yield StatusLine()
        hosts = LineTable(HOST_COLUMNS, sort=0, empty="no hosts in the inventory", id="hosts-table")
        yield FilterBar(hosts, id="hosts-filter")
        yield hosts
        yield Static("GPUs", id="gpus-title", classes="section")
        yield LineTable(GPU_COLUMNS, sort=0, empty="no telemetry yet for this host", id="gpus-table")
        yield Footer()

    def fetch(self, store):
        return queries.cluster(store, self.app.inventory)

    def show(self, data: queries.Cluster) -> None:
        self._data = data
        for key, util in data.samples.items():
            ts = data.gpus[key][4] if key in data.gpus else None
            if ts is not None and ts == self._sampled.get(key):
                continue  # a poll faster than the telemetry: the same sample is one point, not two
            self._sampled[key] = ts
            self._history.setdefault(key, deque(maxlen=HISTORY)).append(util)
        self.query_one("#hosts-table", LineTable).set_rows(data.hosts)
        self._show_gpus()

    @property
    def selected_host(self) -> str | None:
        return self.query_one("#hosts-table", LineTable).cursor_key

    @on(LineTable.Highlighted, "#hosts-table")
    def _host_moved(self, event: LineTable.Highlighted) -> None:
        self._show_gpus()
        if event.key is not None and event.key not in self._seeded:
            self._seeded.add(event.key)
            self._seed_history(event.key)

    def _show_gpus(self) -> None:
        host, data = self.selected_host, self._data
        title = self.query_one("#gpus-title", Static)
        if host is None or data is None:
            title.update("GPUs")
            return
        rows = {}
        for (h, g), row in data.gpus.items():
            if h == host:
                spark = tuple(self._history.get((h, g), ()))
                rows[g] = (*row[:4], spark, *row[4:])
        if rows:
            title.update(f"GPUs of {host}")
        elif data.hosts.get(host, (None,) * 4)[3] is not None:  # host telemetry arrives: it has no GPU
            title.update(f"GPUs of {host}: none (telemetry sees no GPU on it; CPU jobs run here)")
        else:
            title.update(f"GPUs of {host}: no telemetry yet")
        self.query_one("#gpus-table", LineTable).set_rows(rows)

    @work(thread=True, group="seed", exit_on_error=False)
    def _seed_history(self, host: str) -> None:
        since = fmt.now() - HISTORY * self.interval
        history = self.app.db.call(queries.gpu_history, host, since)
        self.app.call_from_thread(self._seeded_history, host, history)

    def _seeded_history(self, host: str, history: dict[int, list[float]]) -> None:
        for g, values in history.items():
            seen = self._history.setdefault((host, g), deque(maxlen=HISTORY))
            merged = values + list(seen)
            seen.clear()
            seen.extend(merged[-HISTORY:])
        self._show_gpus()

    def action_filter(self) -> None:
        self.query_one(FilterBar).open()

    def action_clear_filter(self) -> None:
        self.query_one(FilterBar).action_clear()

    def action_drain(self) -> None:
        if self.selected_host is not None:
            self.app.set_draining(self.selected_host, None)
