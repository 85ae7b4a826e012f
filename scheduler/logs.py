"""Job logs: read each node's log file on its host, prefix every line with its node and rank, merge.

Each node of an attempt writes `{run_dir}/attempt-{a}/node-{k}.log` on its host; torchrun prefixes
its workers' lines with their global rank (launch.LOG_PREFIX_RE). A one-shot read is one round trip
per host (remote/log_read.py). A follow is one long-lived command per node (remote/log_follow.py)
that sends only what was appended since its last read, ends by itself once the node's exit file
exists and the log is drained, or when the head closes the stream; lines from all nodes are merged
as they arrive.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from . import jobs
from .execute import Executor, HostUnreachable, python_argv
from .inventory import Inventory
from .launch import LOG_PREFIX_RE
from .model import JobState
from .remote import source
from .store import Store

READ_TIMEOUT = 30.0
DRAIN_GRACE = 3.0  # after the store says an attempt ended: how long to wait for lines still in flight

@dataclass(frozen=True)
class NodeLog:
    node_rank: int
    host: str
    log_path: str
    exit_path: str


@dataclass(frozen=True)
class Line:
    node_rank: int
    rank: int | None  # None: a line from torchrun itself, not from a worker
    text: str

    def __str__(self) -> str:
        who = f"node {self.node_rank}" if self.rank is None else f"node {self.node_rank} rank {self.rank}"
        return f"[{who}] {self.text}"


def node_logs(store: Store, job_id: int, attempt: int) -> list[NodeLog]:
    out = []
    for n in jobs.nodes(store, job_id, attempt):
        base = f"{n.run_dir}/attempt-{attempt}/node-{n.node_rank}"
        out.append(NodeLog(n.node_rank, n.host, f"{base}.log", f"{base}.exit"))
    return out


def parse(node_rank: int, raw: str) -> Line:
    m = LOG_PREFIX_RE.match(raw)
    if not m:
        return Line(node_rank, None, raw)
    return Line(node_rank, int(m.group(1)), raw[m.end():])


def _wanted(line: Line, rank: int | None) -> bool:
    return rank is None or line.rank == rank


def _select(logs: list[NodeLog], node: int | None) -> list[NodeLog]:
    return [n for n in logs if node is None or n.node_rank == node]


Warn = Callable[[str], None]


def read(
    executor: Executor,
    inventory: Inventory,
    logs: list[NodeLog],
    *,
    node: int | None = None,
    rank: int | None = None,
    warn: Warn = lambda s: None,
) -> Iterator[Line]:
    """Every line of the selected nodes' logs, node by node: one round trip per host."""
    logs = _select(logs, node)
    by_host: dict[str, list[NodeLog]] = {}
    for n in logs:
        by_host.setdefault(n.host, []).append(n)
    results = executor.python_many(
        [inventory.host(h) for h in by_host],
        source("log_read.py"),
        lambda h: [n.log_path for n in by_host[h.name]],
        timeout=READ_TIMEOUT,
    )
    for n in logs:
        r = results[n.host]
        if not r.ok:
            warn(f"node {n.node_rank} ({n.host}): cannot read its log: {r.reason}")
            continue
        entry = json.loads(r.stdout)[n.log_path]
        if "error" in entry:
            warn(f"node {n.node_rank} ({n.host}): no log yet at {n.log_path} ({entry['error']})")
            continue
        for raw in entry["text"].splitlines():
            line = parse(n.node_rank, raw)
            if _wanted(line, rank):
                yield line


def follow(
    store: Store,
    executor: Executor,
    inventory: Inventory,
    job_id: int,
    *,
    node: int | None = None,
    rank: int | None = None,
    poll: float = 0.5,
    warn: Warn = lambda s: None,
) -> Iterator[Line]:
    """Lines as they are written, attempt after attempt, until the job has ended and every log of its
    last attempt is drained."""
    followed, noted = 0, False
    while True:
        job = jobs.get(store, job_id)
        attempt = job.attempt
        logs = node_logs(store, job_id, attempt) if attempt > followed else []
        if not logs and not followed and not noted and job.state == JobState.PENDING:
            warn(f"job {job_id} is PENDING ({job.reason}); its logs follow once it starts")
            noted = True
        if logs:
            if followed:
                warn(f"attempt {attempt} started")
            yield from _follow_attempt(store, executor, inventory, job_id, attempt, _select(logs, node), rank, poll, warn)
            followed = attempt
            continue
        if job.terminal:
            return
        time.sleep(poll)


def _follow_attempt(store, executor, inventory, job_id, attempt, logs, rank, poll, warn) -> Iterator[Line]:
    lines: queue.Queue = queue.Queue()
    streams = []
    for n in logs:
        host = inventory.host(n.host)
        try:
            s = executor.stream(host, python_argv(host, source("log_follow.py"), [n.log_path, n.exit_path]))
        except HostUnreachable as e:
            warn(f"node {n.node_rank} ({n.host}): cannot follow its log: {e}")
            continue
        streams.append(s)
        threading.Thread(target=_pump, args=(s, n, lines), daemon=True).start()
    open_ = len(streams)
    ended_at = None  # when the store first said this attempt is over
    try:
        while open_:
            try:
                item = lines.get(timeout=poll)
            except queue.Empty:
                if ended_at is None and _attempt_over(store, job_id, attempt):
                    ended_at = time.monotonic()
                if ended_at is not None and time.monotonic() - ended_at > DRAIN_GRACE:
                    return  # a node that never wrote its exit file (killed, or its host is gone)
                continue
            if isinstance(item, Line):
                if _wanted(item, rank):
                    yield item
            else:
                open_ -= 1
                if item:
                    warn(item)
    finally:
        for s in streams:
            s.close()


def _pump(stream, n: NodeLog, out: queue.Queue) -> None:
    """Feed one node's lines into the merge queue; end with None, or a warning string."""
    try:
        for raw in stream:
            out.put(parse(n.node_rank, raw))
    except HostUnreachable as e:
        out.put(f"node {n.node_rank} ({n.host}): lost while following its log: {e}")
        return
    except Exception as e:  # a closed stream mid-read: the follow is over anyway
        out.put(f"node {n.node_rank} ({n.host}): log stream ended: {e}")
        return
    out.put(None)


def _attempt_over(store: Store, job_id: int, attempt: int) -> bool:
    job = jobs.get(store, job_id)
    return job.terminal or job.attempt != attempt or job.state == JobState.PENDING
