"""Job: state and reason, placement per node with exit status, attempts, dataset, the loss chart,
throughput, and the merged log following live (`f` cycles the node filter, `r` the rank filter)."""

from __future__ import annotations

from typing import NamedTuple

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Footer, Log, Static

from scheduler import humanize
from scheduler.model import TERMINAL

from .. import format as fmt
from .. import queries
from ..follow import LogFollower, read_metrics
from ..widgets.line_table import Column, LineTable
from ..widgets.loss_chart import LossChart
from ..widgets.status_line import StatusLine
from .base import PolledScreen

NODE_COLUMNS = [
    Column("NODE", 4, "right"),
    Column("HOST", 0),
    Column("GPUS", 5, fmt=lambda v: ",".join(map(str, v)) or "cpu"),
    Column("PORT", 5, "right"),
    Column("STATE", 8, fmt=fmt.state),
    Column("EXIT", 4, "right"),
]
MAX_LOG_LINES = 20_000


class Cursor(NamedTuple):
    """Where the chart's next metrics read of rank 0's metrics file starts."""

    host: str | None = None
    run_dir: str | None = None
    offset: int = 0
    done: bool = False  # the job had ended at the last read: nothing more will be written


class Loaded(NamedTuple):
    detail: queries.JobDetail | None
    metrics: list[dict]  # the lines from the cursor the read started at
    cursor: Cursor  # where the next read starts


def summary(d: queries.JobDetail) -> Text:
    j = d.job
    m = j.metrics or {}
    t = Text()
    t.append(f"job {j.id} ", style="bold")
    t.append(f"{j.name}  ")
    t.append_text(fmt.state(j.state))
    if j.reason:
        t.append(f"  {j.reason}", style="italic")
    parts = [f"data {j.data or '-'}"]
    if j.retries or j.attempt > 1:  # a job without retries has one attempt: no need to say
        parts.insert(0, f"attempt {j.attempt}/{j.retries + 1}")
    if j.started_at:
        parts.append(f"ran {humanize.duration((j.ended_at or fmt.now()) - j.started_at)}")
    if m:
        parts += [f"step {m.get('step')}", f"loss {fmt.fixed(m.get('loss'), 3)}", f"{humanize.count(m.get('tokens_per_s'))} tok/s"]
        if m.get("mfu") is not None:  # null on CPUs, whose peak FLOP/s is unknown
            parts.append(f"MFU {100 * m['mfu']:.1f}%")
    t.append("\n" + "  ".join(parts))
    if len(d.attempts) > 1:
        t.append("\nattempts: " + "  ".join(f"{a.attempt} {a.state} ({a.reason})" for a in d.attempts),
                 style="dim")
    return t


class JobScreen(PolledScreen):
    tab = "queue"
    interval = 0.5
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="job.back"),
        Binding("x", "cancel", "Cancel", id="job.cancel"),
        Binding("f", "node_filter", "Node", id="job.node"),
        Binding("r", "rank_filter", "Rank", id="job.rank"),
    ]

    def __init__(self, job_id: int, **kw) -> None:
        self.job_id = job_id
        self.what = f"job {job_id}"  # before PolledScreen.__init__, which names the poll with it
        super().__init__(**kw)
        self.detail: queries.JobDetail | None = None
        self._follower: LogFollower | None = None
        self._cursor = Cursor()  # changed only by show(), on the UI thread
        self._lines: list = []
        self._node: int | None = None
        self._rank: int | None = None

    def compose(self) -> ComposeResult:
        yield StatusLine()
        yield Static(f"job {self.job_id}: loading", id="job-summary")
        with Horizontal(id="job-top"):
            yield LineTable(NODE_COLUMNS, sort=0, empty="not placed yet", id="nodes-table")
            yield LossChart(id="loss-chart")
        yield Static("log", id="log-title", classes="section")
        yield Log(max_lines=MAX_LOG_LINES, id="job-log")
        yield Footer()

    def on_mount(self) -> None:
        self._follower = LogFollower(self.app.inventory.state_dir, self.app.inventory, self.job_id)

    def on_unmount(self) -> None:
        if self._follower is not None:
            self._follower.stop()

    def fetch(self, store):
        return queries.job_detail(store, self.job_id)

    def load(self) -> Loaded:
        """The store read, then the metrics lines written since the cursor on rank 0's host (over SSH
        when remote). Polls never overlap, so the cursor read here is the one the last show() left."""
        detail = self.app.db.call(self.fetch)
        at = self._cursor
        rank0 = next((n for n in detail.nodes if n.node_rank == 0 and n.run_dir), None) if detail else None
        if rank0 is None or at.done:
            return Loaded(detail, [], at)
        host, run_dir = rank0.host, rank0.run_dir
        offset = at.offset if (at.host, at.run_dir) == (host, run_dir) else 0
        metrics, offset = read_metrics(self.app.executor, self.app.inventory, host, run_dir, offset)
        done = detail.job.terminal  # this was the last read
        return Loaded(detail, metrics, Cursor(host, run_dir, offset, done))

    def show(self, data: Loaded) -> None:
        detail, metrics, cursor = data
        chart = self.query_one(LossChart)
        if self._cursor.host is not None and cursor[:2] != self._cursor[:2]:
            chart.reset()  # rank 0 moved (a new attempt elsewhere): its file starts over
        self._cursor = cursor
        chart.add(metrics)
        if detail is None:
            self.query_one("#job-summary", Static).update(f"job {self.job_id} not found")
            return
        was = self.detail.job.state if self.detail else None
        self.detail = detail
        state = detail.job.state
        if was is not None and was not in TERMINAL and state in TERMINAL:
            self.app.job_ended(detail.job)
        self.query_one("#job-summary", Static).update(summary(detail))
        if state in TERMINAL and self.app.on_job_end:  # stays on screen, unlike the notice
            self.query_one("#log-title", Static).update(Text(f"log (job ended: {self.app.on_job_end})", style="bold"))
        rows = {n.node_rank: (n.node_rank, n.host, n.gpus, n.port, n.state.value, n.exit_code) for n in detail.nodes}
        self.query_one("#nodes-table", LineTable).set_rows(rows)
        self._append_log(self._follower.drain() if self._follower else [])

    def _append_log(self, new: list) -> None:
        if not new:
            return
        self._lines.extend(new)
        del self._lines[:-MAX_LOG_LINES]
        shown = [str(x) for x in new if self._wanted(x)]
        if shown:
            self.query_one(Log).write_lines(shown)

    def _wanted(self, line) -> bool:
        if isinstance(line, str):
            return True
        return (self._node is None or line.node_rank == self._node) and (self._rank is None or line.rank == self._rank)

    def _refilter(self) -> None:
        log = self.query_one(Log)
        log.clear()
        log.write_lines([str(x) for x in self._lines if self._wanted(x)])
        node = "all nodes" if self._node is None else f"node {self._node}"
        rank = "all ranks" if self._rank is None else f"rank {self._rank}"
        self.query_one("#log-title", Static).update(f"log: {node}, {rank}  (f: node, r: rank)")

    def action_node_filter(self) -> None:
        nodes = sorted({x.node_rank for x in self._lines if not isinstance(x, str)})
        self._node = _cycle(self._node, nodes)
        self._refilter()

    def action_rank_filter(self) -> None:
        ranks = sorted({x.rank for x in self._lines if not isinstance(x, str) and x.rank is not None})
        self._rank = _cycle(self._rank, ranks)
        self._refilter()

    def action_cancel(self) -> None:
        self.app.confirm_cancel(self.job_id)


def _cycle(current, values: list):
    """None (all) -> first -> ... -> last -> None."""
    if not values:
        return None
    if current is None:
        return values[0]
    i = values.index(current) + 1 if current in values else len(values)
    return values[i] if i < len(values) else None
