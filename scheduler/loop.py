"""The scheduler loop: reconcile -> schedule -> launch, once a cycle, while holding the lease.

The store is the truth and the hosts are the facts: every cycle asks each host with live nodes, in
one round trip, what is alive and what exited with which status (launch.probe_many), writes that
down, ends the attempts that are over (teardown.end_attempt: tear down first, record after), and
starts what the policy places. Nothing is kept in memory that a restarted loop would need: a loop
killed mid-job is replaced by the next one, which reconciles from the store and the hosts.

Never launching twice: an attempt's job_nodes rows are committed (STARTING, no pid) *before* the
remote start; a loop that finds such a row after a crash looks for the node's marker on its host,
and only a node that left no trace at all after START_GRACE counts as never started.

Between cycles the loop idles, but not deaf: a commit by another process (submit, cancel) or a
running node's end (seen by a watch stream on its host) starts the next cycle at once.

Runs as `headnode scheduler run` (kind "foreground") or in a thread of the console (kind "console"):
`run_forever(inventory, kind=..., stop_event=...)`.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import launch, lease, policy, teardown
from .execute import Executor, HostUnreachable
from .inventory import Host, Inventory
from .store import Store, dumps, loads

log = logging.getLogger("headnode.scheduler")

START_GRACE = 60.0  # a STARTING node with no trace this long after its start did not start
BUSY_PORT_MEMORY = 300.0  # a rendezvous port found taken on a host is not placed there for this long


@dataclass
class Loop:
    inventory: Inventory
    store: Store
    executor: Executor
    heartbeat: Callable[[], None] = lambda: None  # renews the lease between long steps
    clock: Callable[[], float] = time.time
    started_at: float = field(default_factory=time.time)
    # host -> (last failure, why): hosts that did not answer us lately are not placed on for a while.
    silent: dict[str, tuple[float, str]] = field(default_factory=dict)
    next_sweep: dict[str, float] = field(default_factory=dict)
    # (host, port) -> until when: rendezvous ports that something not ours was found listening on.
    busy_ports: dict[tuple[str, int], float] = field(default_factory=dict)

    @property
    def settings(self):
        return self.inventory.settings

    def cycle(self) -> dict:
        """One pass; returns what it did (stored as the lease's last_cycle)."""
        t0 = time.monotonic()
        out: dict = {"ended": [], "started": [], "swept": []}
        self.reconcile(out)
        self.sweep(out)
        self.schedule(out)
        out["silent"] = sorted(self.silent)
        out["seconds"] = round(time.monotonic() - t0, 3)
        return out

    # --- reconcile ------------------------------------------------------------------------------

    def reconcile(self, out: dict) -> None:
        nodes = self.store.query(
            "SELECT n.* FROM job_nodes n JOIN jobs j ON j.id = n.job_id AND j.attempt = n.attempt "
            "WHERE j.state IN ('STARTING', 'RUNNING') ORDER BY n.job_id, n.node_rank"
        )
        if not nodes:
            return
        known = {h.name: h for h in self.inventory.hosts}
        by_host: dict[Host, list[dict]] = {}
        now = self.clock()
        for n in nodes:
            if n["host"] in known:
                by_host.setdefault(known[n["host"]], []).append(n)
            else:  # removed from hosts.toml while the job ran: it can only be lost
                self.silent[n["host"]] = (now, "it is no longer in hosts.toml")
        asks = {h: [{"job": n["job_id"], "attempt": n["attempt"], "node": n["node_rank"], "pid": n["pid"]} for n in ns]
                for h, ns in by_host.items()}  # fmt: skip
        answers = launch.probe_many(self.executor, asks)
        now = self.clock()
        facts: dict[tuple[int, int], launch.NodeStatus] = {}
        with self.store.tx():
            for host, ns in by_host.items():
                answer = answers[host.name]
                if isinstance(answer, str):
                    self.silent[host.name] = (now, answer)
                    continue
                self.silent.pop(host.name, None)
                for n, st in zip(ns, answer):
                    self._record(n, st, now)
                    facts[n["job_id"], n["node_rank"]] = st
        jobs = self.store.query(
            "SELECT j.*, a.started_at AS attempt_started_at FROM jobs j "
            "JOIN attempts a ON a.job_id = j.id AND a.attempt = j.attempt "
            "WHERE j.state IN ('STARTING', 'RUNNING') ORDER BY j.id"
        )
        for job in jobs:
            self._settle(job, facts, now, out)

    def _record(self, n: dict, st: launch.NodeStatus, now: float) -> None:
        """Write down one node's facts; note progress and the newest metrics line on its job."""
        state = "EXITED" if st.exit is not None else "RUNNING" if st.alive else n["state"]
        log_size = st.log_size if st.log_size is not None else n["log_offset"]
        self.store.execute(
            "UPDATE job_nodes SET pid = ?, state = ?, exit_code = ?, log_offset = ?, last_seen = ? "
            "WHERE job_id = ? AND attempt = ? AND node_rank = ?",
            (st.pid or n["pid"], state, st.exit, log_size, now, n["job_id"], n["attempt"], n["node_rank"]),
        )
        if log_size > n["log_offset"]:
            self.store.execute("UPDATE jobs SET progress_at = ? WHERE id = ?", (now, n["job_id"]))
        if st.metrics_last:
            try:
                metrics = dumps(loads(st.metrics_last))
            except ValueError:
                return
            self.store.execute(
                "UPDATE jobs SET metrics = ?, metrics_at = ?, progress_at = ? WHERE id = ? AND metrics IS NOT ?",
                (metrics, now, now, n["job_id"], metrics),
            )

    def _settle(self, job: dict, facts: dict, now: float, out: dict) -> None:
        """End the job's attempt if it is over, or move STARTING to RUNNING once every node runs."""
        nodes = self.store.query(
            "SELECT * FROM job_nodes WHERE job_id = ? AND attempt = ? ORDER BY node_rank", (job["id"], job["attempt"])
        )
        ending = self._verdict(job, nodes, facts, now)
        if ending is None:
            if job["state"] == "STARTING" and all(n["state"] in ("RUNNING", "EXITED") for n in nodes):
                self._mark_running(job, nodes)
            if any(n["state"] == "EXITED" for n in nodes):
                out["soon"] = True  # the rest of the gang ends within moments: look again shortly
            return
        state, reason, unreachable = ending
        actor = teardown.cancel_actor(self.store, job["id"]) if state == "CANCELLED" else "scheduler"
        # Every node exited and the probe saw none of the job's processes left: that is the verdict.
        seen = [facts.get((n["job_id"], n["node_rank"])) for n in nodes]
        clean = state == "SUCCEEDED" and all(st is not None and st.left == 0 for st in seen)
        reports = [teardown.HostReport(h) for h in dict.fromkeys(n["host"] for n in nodes)] if clean else None
        if teardown.end_attempt(
            self.store, self.executor, self.inventory, job,
            state=state, reason=reason, unreachable=unreachable, actor=actor, reports=reports,
        ):  # fmt: skip
            after = self.store.one("SELECT state, reason FROM jobs WHERE id = ?", (job["id"],))
            out["ended"].append({"job": job["id"], **after})
            log.info("job %s %s: %s", job["id"], after["state"], after["reason"])
        self.heartbeat()

    def _verdict(self, job: dict, nodes: list[dict], facts: dict, now: float) -> tuple[str, str, dict] | None:
        """(state, reason, unreachable hosts) if this attempt is over, else None."""
        # A host is lost once it has not answered for node_lost_timeout; a restarted loop counts from
        # its own start, not from a last_seen written before it was down itself.
        lost = {}
        for n in nodes:
            silent = self.silent.get(n["host"])
            if silent is not None:
                quiet = now - max(n["last_seen"] or 0.0, self.started_at)
                if quiet > self.settings.node_lost_timeout:
                    lost[n["host"]] = f"silent for {quiet:.0f} s: {silent[1]}"
        if lost:
            names = ", ".join(lost)
            return "FAILED", f"NODE_LOST: {names} stopped answering for over {self.settings.node_lost_timeout:g} s", lost
        if job["cancel_requested"]:
            return "CANCELLED", f"cancelled by {teardown.cancel_actor(self.store, job['id'])}", {}
        limit, began = job["time_limit"], job["attempt_started_at"]
        if limit is not None and began is not None and now - began > limit:
            return "TIMEOUT", f"TIMEOUT: ran longer than its time limit of {limit:g} s", {}
        answered = [n for n in nodes if n["host"] not in self.silent]
        for n in answered:
            if n["exit_code"] not in (None, 0):
                return "FAILED", f"node {n['node_rank']} on {n['host']} exited with status {n['exit_code']}", {}
        for n in answered:
            st = facts.get((n["job_id"], n["node_rank"]))
            if n["pid"] is not None and st is not None and not st.alive and st.exit is None:
                return "FAILED", (
                    f"node {n['node_rank']} on {n['host']} ended without an exit status "
                    "(killed by a signal, or its host restarted)"
                ), {}
            if n["pid"] is None and now - (job["attempt_started_at"] or now) > START_GRACE:
                return "PENDING", f"node {n['node_rank']} on {n['host']} never started (the scheduler stopped while starting it)", {}
        if nodes and all(n["exit_code"] == 0 for n in nodes):
            return "SUCCEEDED", f"all {len(nodes)} nodes exited 0", {}
        return None

    def _mark_running(self, job: dict, nodes: list[dict]) -> None:
        reason = "running on " + ", ".join(f"{n['host']} (node {n['node_rank']})" for n in nodes)
        with self.store.tx():
            self.store.execute("UPDATE jobs SET state = 'RUNNING', reason = ? WHERE id = ? AND state = 'STARTING'", (reason, job["id"]))
            self.store.execute(
                "UPDATE attempts SET state = 'RUNNING' WHERE job_id = ? AND attempt = ?", (job["id"], job["attempt"])
            )
            self.store.event(f"job:{job['id']}", "RUNNING", reason)

    # --- LOST nodes: what a vanished host may still run -------------------------------------------

    def sweep(self, out: dict) -> None:
        """Stop the leftovers of LOST nodes on hosts that answer again (tried every node_lost_timeout)."""
        now = self.clock()
        known = {h.name for h in self.inventory.hosts}
        for row in self.store.query("SELECT DISTINCT host FROM job_nodes WHERE state = 'LOST'"):
            name = row["host"]
            if name not in known or self.next_sweep.get(name, 0.0) > now:
                continue
            self.next_sweep[name] = now + self.settings.node_lost_timeout
            out["swept"] += teardown.sweep_lost(self.store, self.executor, self.inventory, self.inventory.host(name))
            self.heartbeat()

    # --- schedule and launch ----------------------------------------------------------------------

    def schedule(self, out: dict) -> None:
        for p in self.plan():
            outcome = self.launch(p)
            if outcome == "started":
                out["started"].append(p.job_id)
            elif outcome == "port busy":
                out["soon"] = True  # placed again on another port next cycle, without the idle wait
            self.heartbeat()

    def plan(self) -> list[policy.Placement]:
        """What the policy places now. Reads only the columns it needs, as tuples, and parses each
        distinct tag list once: with 10,000 pending jobs, dicts and JSON would cost 5x the policy."""
        rows = self.store.execute(
            "SELECT id, priority, submitted_at, nodes, gpus_per_node, time_limit, tags, data FROM jobs "
            "WHERE state = 'PENDING' AND cancel_requested = 0"
        ).fetchall()
        if not rows:
            return []
        now = self.clock()
        tags: dict[str, frozenset[str]] = {}
        data: dict[str, frozenset[str]] = {}
        pending = []
        for id_, priority, submitted_at, nodes, gpus, limit, tag_text, ref in rows:
            if tag_text not in tags:
                tags[tag_text] = frozenset(loads(tag_text, []))
            if ref and ref not in data:
                data[ref] = _verified_hosts(self.store, ref)
            pending.append(policy.PendingJob(
                id_, priority, submitted_at, nodes, gpus, limit, tags[tag_text], data[ref] if ref else None
            ))  # fmt: skip
        return policy.schedule(self._host_views(now), pending, self._running(), now, self.settings.port_range)

    def _host_views(self, now: float) -> list[policy.HostView]:
        rows = {r["name"]: r for r in self.store.query("SELECT * FROM hosts")}
        cooldown = self.settings.node_lost_timeout
        self.busy_ports = {k: until for k, until in self.busy_ports.items() if until > now}
        busy: dict[str, set[int]] = {}
        for host, port in self.busy_ports:
            busy.setdefault(host, set()).add(port)
        views = []
        for h in self.inventory.hosts:
            r = rows.get(h.name, {})
            quiet = h.name in self.silent and now - self.silent[h.name][0] < cooldown
            views.append(policy.HostView(
                name=h.name,
                gpus=h.gpus if h.gpus is not None else r.get("gpus_detected"),
                schedulable=not r.get("draining") and r.get("state") != "down" and not quiet,
                tags=frozenset(h.tags),
                used_ports=frozenset(busy.get(h.name, ())),
            ))  # fmt: skip
        return views

    def _running(self) -> list[policy.RunningJob]:
        """Live attempts, and LOST nodes whose processes may still hold their GPUs and ports."""
        rows = self.store.query(
            "SELECT n.job_id, n.host, n.gpus, n.port, j.time_limit, a.started_at FROM job_nodes n "
            "JOIN jobs j ON j.id = n.job_id JOIN attempts a ON a.job_id = n.job_id AND a.attempt = n.attempt "
            "WHERE (j.state IN ('STARTING', 'RUNNING') AND n.attempt = j.attempt) OR n.state = 'LOST'"
        )
        jobs: dict[int, dict] = {}
        for r in rows:
            j = jobs.setdefault(r["job_id"], {"alloc": {}, "ports": {}, "ends": None})
            j["alloc"][r["host"]] = frozenset(loads(r["gpus"], []))
            j["ports"][r["host"]] = r["port"]
            if r["time_limit"] is not None and r["started_at"] is not None:
                j["ends"] = r["started_at"] + r["time_limit"]
        return [policy.RunningJob(i, j["alloc"], j["ports"], j["ends"]) for i, j in jobs.items()]

    def launch(self, placement: policy.Placement) -> str:
        """Commit the attempt (STARTING, nodes without pids), then start its nodes (launch.start).
        Returns "started", "port busy" (requeued at once, uncharged), "failed" or "cancelled"."""
        job = self.store.one("SELECT * FROM jobs WHERE id = ?", (placement.job_id,))
        attempt = job["attempt"] + 1
        hosts = [self.inventory.host(n.host) for n in placement.nodes]
        specs = [
            launch.NodeSpec(
                job_id=job["id"], attempt=attempt, node_rank=n.node_rank, nnodes=len(placement.nodes), host=h,
                gpus=n.gpus, port=n.port, endpoint=launch.address(hosts[0]), command=tuple(loads(job["command"])),
                env=loads(job["env"], {}), data_path=_data_path(h, job["data"]),
                procs_per_node=job["procs_per_node"] or 1,
            )
            for n, h in zip(placement.nodes, hosts)
        ]  # fmt: skip
        where = ", ".join(f"{s.host.name} (node {s.node_rank}, GPUs {list(s.gpus)})" for s in specs)
        reason = f"starting attempt {attempt} on {where}, port {placement.nodes[0].port}"
        now = self.clock()
        with self.store.tx():
            cur = self.store.one("SELECT state, cancel_requested FROM jobs WHERE id = ?", (job["id"],))
            if cur["state"] != "PENDING" or cur["cancel_requested"]:
                return "cancelled"  # since we read the queue
            self.store.execute(
                "UPDATE jobs SET state = 'STARTING', attempt = ?, reason = ?, started_at = COALESCE(started_at, ?), "
                "progress_at = ? WHERE id = ?",
                (attempt, reason, now, now, job["id"]),
            )
            self.store.execute(
                "INSERT INTO attempts (job_id, attempt, state, started_at) VALUES (?, ?, 'STARTING', ?)",
                (job["id"], attempt, now),
            )
            for s in specs:
                self.store.execute(
                    "INSERT INTO job_nodes (job_id, attempt, node_rank, host, gpus, port, run_dir, data_path, state, last_seen) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'STARTING', ?)",
                    (job["id"], attempt, s.node_rank, s.host.name, dumps(list(s.gpus)), s.port, s.run_dir, s.data_path, now),
                )
            self.store.event(f"job:{job['id']}", "STARTING", reason)

        started = launch.start(self.executor, specs)
        with self.store.tx():
            for s in started:
                if s.pid is not None:
                    self.store.execute(
                        "UPDATE job_nodes SET pid = ?, state = 'RUNNING' WHERE job_id = ? AND attempt = ? AND node_rank = ?",
                        (s.pid, job["id"], attempt, s.node_rank),
                    )
        failed = [s for s in started if s.error]
        fresh = self.store.one("SELECT * FROM jobs WHERE id = ?", (job["id"],))
        if not failed:
            self._mark_running(fresh, self.store.query(
                "SELECT * FROM job_nodes WHERE job_id = ? AND attempt = ? ORDER BY node_rank", (job["id"], attempt)
            ))  # fmt: skip
            log.info("job %s started: %s", job["id"], reason)
            return "started"
        now = self.clock()
        busy = next((s for s in failed if s.port_busy), None)
        if busy is not None:
            # Not the job's fault, and nothing started anywhere (node 0 checks before starting, the
            # others wait for it): requeue uncharged, with no teardown round trip, and avoid the port.
            port = specs[0].port
            self.busy_ports[busy.host, port] = now + BUSY_PORT_MEMORY
            clean = [teardown.HostReport(s.host.name) for s in specs]
            why = f"{busy.error}; trying another"
            teardown.end_attempt(self.store, self.executor, self.inventory, fresh, state="PENDING", reason=why, reports=clean)
            log.info("job %s: %s", job["id"], why)
            return "port busy"
        for s in failed:
            if s.unreachable:
                self.silent[s.host] = (now, s.error)
        why = "; ".join(f"could not start node {s.node_rank} on {s.host}: {s.error}" for s in failed)
        # A host that did not answer is not the job's fault: requeue without charging a retry.
        state = "PENDING" if any(s.unreachable for s in failed) else "FAILED"
        teardown.end_attempt(self.store, self.executor, self.inventory, fresh, state=state, reason=why)
        return "failed"


def _verified_hosts(store: Store, data: str) -> frozenset[str]:
    from .data import versions  # only jobs with a dataset pay for the import

    name, version = data.split("@", 1)
    return frozenset(h for h, state in versions.preflight(store, name, version).items() if state == "verified")


def _data_path(host: Host, data: str | None) -> str | None:
    if not data:
        return None
    from .data import versions

    name, version = data.split("@", 1)
    return versions.host_path(host, name, version)


# --- running it -------------------------------------------------------------------------------------


WAKE_POLL = 0.05  # how often an idle loop looks for news in the store
SOON = 0.1  # the next cycle, when part of a gang has exited and the rest is about to


def _idle(store: Store, stop_event: threading.Event, seconds: float, wake: threading.Event) -> None:
    """Wait until the next cycle is due, or sooner: when another process wrote to the store (a
    submit, a cancel: SQLite's data_version changes on every commit made by another connection, and
    reading it costs microseconds), or when `wake` is set (a running node ended)."""
    version = store.execute("PRAGMA data_version").fetchone()[0]
    deadline = time.monotonic() + seconds
    while not stop_event.wait(max(0.0, min(WAKE_POLL, deadline - time.monotonic()))):
        if wake.is_set() or time.monotonic() >= deadline:
            return
        if store.execute("PRAGMA data_version").fetchone()[0] != version:
            return


class _Watch:
    """One launch.watch stream per host with running nodes, kept open across cycles while the running
    nodes stay the same; `event` is set the moment one of them ends. Streams open in threads of their
    own, so a slow or dead host delays nothing."""

    READ_TIMEOUT = 75.0  # remote/watch.py gives up after a minute; silence past that means a dead link

    def __init__(self, executor: Executor, nodes: dict[Host, list[dict]]):
        self.key = _watch_key(nodes)
        self.event = threading.Event()
        self._streams: list = []
        self._lock = threading.Lock()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._watch, args=(executor, h, ns), name=f"watch-{h.name}", daemon=True)
            for h, ns in nodes.items()
        ]
        for t in self._threads:
            t.start()

    def stale(self) -> bool:
        """Fired, or a stream ended without news (its minute is up, or its host went away)."""
        return self.event.is_set() or not all(t.is_alive() for t in self._threads)

    def _watch(self, executor: Executor, host: Host, nodes: list[dict]) -> None:
        try:
            stream = launch.watch(executor, host, nodes, timeout=self.READ_TIMEOUT)
        except HostUnreachable:
            return  # the next reconcile says what became of the host
        with self._lock:
            if self._closed:
                stream.close()
                return
            self._streams.append(stream)
        try:
            for _ in stream:
                self.event.set()
                return
        except HostUnreachable:
            pass

    def close(self) -> None:
        with self._lock:
            self._closed = True
            streams, self._streams = self._streams, []
        for s in streams:
            s.close()


def _watched(loop: Loop) -> dict[Host, list[dict]]:
    """The running nodes worth watching, by host (hosts that did not answer lately are left out)."""
    rows = loop.store.query(
        "SELECT n.host, n.job_id AS job, n.attempt, n.node_rank AS node, n.pid FROM job_nodes n "
        "JOIN jobs j ON j.id = n.job_id AND j.attempt = n.attempt "
        "WHERE j.state = 'RUNNING' AND n.state = 'RUNNING' AND n.pid IS NOT NULL ORDER BY n.job_id, n.node_rank"
    )
    known = {h.name: h for h in loop.inventory.hosts}
    out: dict[Host, list[dict]] = {}
    for r in rows:
        name = r.pop("host")
        if name in known and name not in loop.silent:
            out.setdefault(known[name], []).append(r)
    return out


def _watch_key(nodes: dict[Host, list[dict]]) -> frozenset:
    return frozenset((h.name, n["job"], n["attempt"], n["node"], n["pid"]) for h, ns in nodes.items() for n in ns)


class LeaseLost(RuntimeError):
    """Another loop took the lease after ours expired (this one stalled): stop acting at once."""


def run_forever(
    inventory: Inventory,
    *,
    kind: str = "foreground",
    stop_event: threading.Event | None = None,
    holder: str | None = None,
    telemetry: bool = True,
) -> None:
    """Hold the lease and cycle until stop_event is set (or SIGTERM, in the foreground); raises
    lease.LeaseHeld if another loop runs. With `telemetry`, the collector runs alongside.

    Jobs outlive the loop: stopping it leaves them running, and the next loop picks them up.
    """
    stop_event = stop_event or threading.Event()
    if kind == "foreground" and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop_event.set())  # systemd's stop: release the lease
    settings = inventory.settings
    store = Store.for_state_dir(inventory.state_dir, actor="scheduler")
    holder = holder or lease.holder_id()
    try:
        lease.acquire(store, holder, kind, settings.lease_ttl)
    except BaseException:
        store.close()
        raise
    executor = Executor(inventory)

    def heartbeat() -> None:
        if not lease.renew(store, holder, settings.lease_ttl):
            raise LeaseLost(f"{holder} lost the scheduler lease")

    loop = Loop(inventory, store, executor, heartbeat=heartbeat)
    collector = None
    watch: _Watch | None = None
    try:
        if telemetry:  # marks hosts up and down, and flags hung jobs, from threads of its own
            from .telemetry.collector import Collector  # threads and SSH streams: only a loop pays for them

            collector = Collector(inventory).start()
        while not stop_event.is_set():
            t0 = time.monotonic()
            try:
                summary = loop.cycle()
            except LeaseLost:
                raise
            except Exception as e:  # a bug or a busy store must not stop the jobs' bookkeeping for good
                log.exception("scheduler cycle failed")
                summary = {"error": f"{type(e).__name__}: {e}"}
            if not lease.renew(store, holder, settings.lease_ttl, last_cycle=summary):
                raise LeaseLost(f"{holder} lost the scheduler lease")
            nodes = _watched(loop)
            if watch is None or watch.key != _watch_key(nodes) or watch.stale():
                if watch is not None:
                    watch.close()
                watch = _Watch(executor, nodes)
            rest = (SOON if summary.get("soon") else settings.cycle_interval) - (time.monotonic() - t0)
            _idle(store, stop_event, rest, watch.event)
    finally:
        if watch is not None:
            watch.close()
        if collector is not None:
            collector.stop()
        lease.release(store, holder)
        executor.close()
        store.close()
