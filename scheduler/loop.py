"""The scheduler loop: reconcile -> schedule -> launch, once a cycle, while holding the lease.

The store is the truth and the hosts are the facts: every cycle asks each host with live nodes, in
one round trip, what is alive and what exited with which status (launch.probe_many), writes that
down (lifecycle.record_facts), ends the attempts that are over (control.finish: tear down first,
then lifecycle.end_attempt records), and starts what the policy places. Nothing is kept in memory that a restarted loop would need: a loop
killed mid-job is replaced by the next one, which reconciles from the store and the hosts.

Never launching twice: an attempt's job_nodes rows are committed (STARTING, no pid) *before* the
remote start; a loop that finds such a row after a crash looks for the node's marker on its host,
and only a node that left no trace at all counts as never started (after ORPHAN_START_GRACE when
the loop that started it is gone, else START_GRACE).

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
from dataclasses import dataclass, field, replace

from . import control, jobs, launch, lease, lifecycle, policy, rendezvous, rules, teardown
from .execute import Executor, HostUnreachable
from .inventory import Host, Inventory
from .model import AttemptState, Ending, HostReport, Job, JobState, Node, NodePlan, NodeState
from .store import Store, StoreGone, loads

log = logging.getLogger("headnode.scheduler")

START_GRACE = 60.0  # a STARTING node with no trace this long after its start did not start
ORPHAN_START_GRACE = 5.0  # ... when the loop that started it is gone and its host shows no trace
WAITING = "waiting for resources"  # a new job's reason (lifecycle.submit)
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
    # Whether a pending job may carry a rendezvous note to take back (a new loop looks once).
    noted: bool = True

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
        live = jobs.active(self.store)
        if not live:
            return
        nodes = {job.id: jobs.nodes(self.store, job.id, job.attempt) for job in live}
        known = {h.name: h for h in self.inventory.hosts}
        by_host: dict[Host, list[Node]] = {}
        now = self.clock()
        for n in (n for ns in nodes.values() for n in ns):
            if n.host in known:
                by_host.setdefault(known[n.host], []).append(n)
            else:  # removed from hosts.toml while the job ran: it can only be lost
                self.silent[n.host] = (now, "it is no longer in hosts.toml")
        asks = {h: [{"job": n.job_id, "attempt": n.attempt, "node": n.node_rank, "pid": n.pid,
                     "run_dir": n.run_dir or launch.run_dir(h, n.job_id, self.store.id)} for n in ns]
                for h, ns in by_host.items()}  # fmt: skip
        answers = launch.probe_many(self.executor, asks)
        now = self.clock()
        facts: dict[tuple[int, int], launch.NodeStatus] = {}
        with self.store.tx():  # one transaction for the whole round of answers
            for host, ns in by_host.items():
                answer = answers[host.name]
                if isinstance(answer, str):
                    self.silent[host.name] = (now, answer)
                    continue
                self.silent.pop(host.name, None)
                for n, st in zip(ns, answer):
                    lifecycle.record_facts(self.store, n, st, now)
                    facts[n.job_id, n.node_rank] = st
        for job in jobs.active(self.store):
            self._settle(job, facts, now, out)

    def _settle(self, job: Job, facts: dict, now: float, out: dict) -> None:
        """End the job's attempt if it is over, or move STARTING to RUNNING once every node runs."""
        nodes = jobs.nodes(self.store, job.id, job.attempt)
        ending = self._verdict(job, nodes, facts, now)
        if ending is None:
            if job.state == JobState.STARTING and all(n.state in (NodeState.RUNNING, NodeState.EXITED) for n in nodes):
                lifecycle.mark_running(self.store, job.id, job.attempt, _running_reason(nodes))
            if any(n.state == NodeState.EXITED for n in nodes):
                out["soon"] = True  # the rest of the gang ends within moments: look again shortly
            return
        # Every node exited and the probe saw none of the job's processes left: that is the verdict.
        seen = [facts.get((n.job_id, n.node_rank)) for n in nodes]
        clean = ending.state == AttemptState.SUCCEEDED and all(st is not None and st.left == 0 for st in seen)
        reports = [HostReport(h) for h in dict.fromkeys(n.host for n in nodes)] if clean else None
        ended = control.finish(self.store, self.executor, self.inventory, job, ending, reports=reports)
        if ended is not None:
            state, reason = ended
            out["ended"].append({"job": job.id, "state": state.value, "reason": reason})
            log.info("job %s %s: %s", job.id, state, reason)
        self.heartbeat()

    def _verdict(self, job: Job, nodes: list[Node], facts: dict, now: float) -> Ending | None:
        """How this attempt ends, if it is over; else None."""
        # A host is lost once it has not answered for node_lost_timeout; a restarted loop counts from
        # its own start, not from a last_seen written before it was down itself.
        lost = {}
        for n in nodes:
            silent = self.silent.get(n.host)
            if silent is not None:
                quiet = now - max(n.last_seen or 0.0, self.started_at)
                if quiet > self.settings.node_lost_timeout:
                    lost[n.host] = f"silent for {quiet:.0f} s: {silent[1]}"
        if lost:
            names = ", ".join(lost)
            why = f"NODE_LOST: {names} stopped answering for over {self.settings.node_lost_timeout:g} s"
            return Ending(AttemptState.FAILED, why, unreachable=lost)
        if job.cancel_requested:
            actor = lifecycle.cancel_actor(self.store, job.id)
            return Ending(AttemptState.CANCELLED, f"cancelled by {actor}", actor=actor)
        attempt = jobs.attempt(self.store, job.id, job.attempt)
        began = attempt.started_at if attempt else None
        if job.time_limit is not None and began is not None and now - began > job.time_limit:
            return Ending(AttemptState.TIMEOUT, f"TIMEOUT: ran longer than its time limit of {job.time_limit:g} s")
        answered = [n for n in nodes if n.host not in self.silent]
        for n in answered:
            if n.exit_code not in (None, 0):
                return Ending(AttemptState.FAILED, f"node {n.node_rank} on {n.host} exited with status {n.exit_code}")
        for n in answered:
            st = facts.get((n.job_id, n.node_rank))
            if n.pid is not None and st is not None and not st.alive and st.exit is None:
                return Ending(AttemptState.FAILED, (
                    f"node {n.node_rank} on {n.host} ended without an exit status "
                    "(killed by a signal, or its host restarted)"
                ))  # fmt: skip
            # A node without a pid was being started by a loop that died (this one records pids as
            # soon as the start returns). If its host shows no trace of it, ask no longer than it
            # takes a start already sent to land; else wait the whole grace for a slow host.
            no_trace = st is not None and st.pid is None and st.log_size is None and st.exit is None and not st.alive
            grace = ORPHAN_START_GRACE if no_trace and (began or now) < self.started_at else START_GRACE
            if n.pid is None and now - (began or now) > grace:
                why = f"node {n.node_rank} on {n.host} never started (the scheduler stopped while starting it)"
                return Ending(AttemptState.ABORTED, why)
        if nodes and all(n.exit_code == 0 for n in nodes):
            return Ending(AttemptState.SUCCEEDED, f"all {len(nodes)} nodes exited 0")
        return None

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
            out["swept"] += control.sweep_lost(self.store, self.executor, self.inventory, self.inventory.host(name))
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
        # Multi-node jobs go only where ranks can meet: hosts with a rendezvous address (rendezvous.py).
        unmet: list[str] = []
        if any(r[3] > 1 for r in rows):
            unmet = [n for n, m in rendezvous.meetings(self.store, self.inventory).items() if m.address is None]
        meet = frozenset(h.name for h in self.inventory.hosts) - set(unmet) if unmet else None
        pending, wide = [], []
        for id_, priority, submitted_at, nodes, gpus, limit, tag_text, ref in rows:
            if tag_text not in tags:
                tags[tag_text] = frozenset(loads(tag_text, []))
            if ref and ref not in data:
                data[ref] = _verified_hosts(self.store, ref)
            job = policy.PendingJob(
                id=id_, priority=priority, submitted_at=submitted_at, nodes=nodes, gpus_per_node=gpus, time_limit=limit,
                tags=tags[tag_text], allowed_hosts=data[ref] if ref else None,
            )  # fmt: skip
            if nodes > 1 and meet is not None:
                wide.append(job)
                job = replace(job, allowed_hosts=meet if job.allowed_hosts is None else job.allowed_hosts & meet)
            pending.append(job)
        views = self._host_views(now)
        placements = policy.schedule(views, pending, self._running(), now, self.settings.port_range)
        if unmet or self.noted:
            self._say_why_waiting(views, wide, meet, unmet, {p.job_id for p in placements})
        return placements

    def _say_why_waiting(self, views, wide: list[policy.PendingJob], meet, unmet: list[str], placed: set[int]) -> None:
        """A multi-node job that could start but for hosts without a rendezvous address says so in its
        reason (written once; taken back when that is no longer what it waits for)."""
        which = "nodes > 1" if unmet else "reason LIKE ?"  # with every address known, only the notes to take back
        current = {r["id"]: r["reason"] or "" for r in self.store.query(
            f"SELECT id, reason FROM jobs WHERE state = 'PENDING' AND {which}", () if unmet else (f"%{rendezvous.WAITING_PREFIX}%",)
        )}  # fmt: skip
        notes: dict[int, str] = {}
        shapes: dict[tuple, str | None] = {}
        for job in wide:
            if job.id in placed:
                continue
            shape = (job.nodes, job.gpus_per_node, job.tags, job.allowed_hosts)
            if shape not in shapes:
                shapes[shape] = None
                allowed = job.allowed_hosts
                only_met = replace(job, allowed_hosts=meet if allowed is None else allowed & meet)
                if policy.feasible(views, job) is None and policy.feasible(views, only_met) is not None:
                    fit = {v.name for v in views if job.tags <= v.tags and (v.gpus is None or v.gpus >= job.gpus_per_node)}
                    names = [n for n in unmet if n in fit and (allowed is None or n in allowed)]
                    shapes[shape] = rendezvous.waiting_reason(names)
            if shapes[shape]:
                notes[job.id] = shapes[shape]
        changed = []
        for job_id, reason in current.items():
            base = _without_note(reason)
            note = notes.get(job_id)
            wanted = base if note is None else note if base == WAITING else f"{base}; {note}"
            if wanted != reason:
                changed.append((wanted, job_id))
        if changed:
            lifecycle.note_waiting(self.store, changed)
        self.noted = bool(notes)

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
                gpus=rules.host_gpus(h.gpus, r.get("gpus_detected")),
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
            f"WHERE {rules.NODE_HOLDS_GPUS_SQL}"
        )
        live: dict[int, dict] = {}
        for r in rows:
            j = live.setdefault(r["job_id"], {"alloc": {}, "ports": {}, "ends": None})
            # A LOST node of an earlier attempt may share a host with the live one: both hold GPUs.
            j["alloc"][r["host"]] = j["alloc"].get(r["host"], frozenset()) | frozenset(loads(r["gpus"], []))
            j["ports"][r["host"]] = r["port"]
            if r["time_limit"] is not None and r["started_at"] is not None:
                j["ends"] = r["started_at"] + r["time_limit"]
        return [policy.RunningJob(i, j["alloc"], j["ports"], j["ends"]) for i, j in live.items()]

    def launch(self, placement: policy.Placement) -> str:
        """Commit the attempt (STARTING, nodes without pids), then start its nodes (launch.start).
        Returns "started", "port busy" (requeued at once, uncharged), "failed" or "cancelled"."""
        job = jobs.get(self.store, placement.job_id)
        attempt = job.attempt + 1
        hosts = self._meeting_hosts([self.inventory.host(n.host) for n in placement.nodes])
        if hosts is None:
            return "waiting"  # a host lost its rendezvous address since the plan: the next one says why
        specs = [
            launch.NodeSpec(
                job_id=job.id, attempt=attempt, node_rank=n.node_rank, nnodes=len(placement.nodes), host=h,
                gpus=n.gpus, port=n.port, endpoint=launch.address(hosts[0]), command=job.command,
                env=dict(job.env), data_path=_data_path(h, job.data), procs_per_node=job.procs_per_node,
                store_id=self.store.id,
            )
            for n, h in zip(placement.nodes, hosts)
        ]  # fmt: skip
        where = ", ".join(f"{s.host.name} (node {s.node_rank}, GPUs {list(s.gpus)})" for s in specs)
        reason = f"starting attempt {attempt} on {where}, port {placement.nodes[0].port}"
        if len(specs) > 1:
            reason += f", rendezvous {rendezvous.endpoint(specs[0].endpoint, specs[0].port)}"
        plans = [NodePlan(s.node_rank, s.host.name, tuple(s.gpus), s.port, s.run_dir, s.data_path) for s in specs]
        if lifecycle.start_attempt(self.store, job.id, plans, reason=reason, now=self.clock()) is None:
            return "cancelled"  # since we read the queue

        started = launch.start(self.executor, specs)
        lifecycle.node_started(self.store, job.id, attempt, {s.node_rank: s.pid for s in started if s.pid is not None})
        failed = [s for s in started if s.error]
        fresh = jobs.get(self.store, job.id)
        if not failed:
            lifecycle.mark_running(self.store, job.id, attempt, _running_reason(jobs.nodes(self.store, job.id, attempt)))
            log.info("job %s started: %s", job.id, reason)
            return "started"
        now = self.clock()
        busy = next((s for s in failed if s.port_busy), None)
        if busy is not None:
            # Not the job's fault, and nothing started anywhere (node 0 checks before starting, the
            # others wait for it): requeue uncharged, with no teardown round trip, and avoid the port.
            self.busy_ports[busy.host, specs[0].port] = now + BUSY_PORT_MEMORY
            clean = [HostReport(s.host.name) for s in specs]
            why = f"{busy.error}; trying another"
            control.finish(self.store, self.executor, self.inventory, fresh, Ending(AttemptState.ABORTED, why), reports=clean)
            log.info("job %s: %s", job.id, why)
            return "port busy"
        for s in failed:
            if s.unreachable:
                self.silent[s.host] = (now, s.error)
        why = "; ".join(f"could not start node {s.node_rank} on {s.host}: {s.error}" for s in failed)
        # A host that did not answer is not the job's fault: requeue without charging a retry.
        state = AttemptState.ABORTED if any(s.unreachable for s in failed) else AttemptState.FAILED
        control.finish(self.store, self.executor, self.inventory, fresh, Ending(state, why))
        return "failed"


    def _meeting_hosts(self, hosts: list[Host]) -> list[Host] | None:
        """The hosts, each carrying the rendezvous address its ranks meet on (launch.address reads it):
        the loopback address for a single-node job (nothing to meet across hosts), else the one
        rendezvous.py resolves; None if a host has none."""
        if len(hosts) == 1:
            return [replace(hosts[0], rdzv_address=rendezvous.LOOPBACK)]
        found = rendezvous.meetings(self.store, self.inventory, {h.name for h in hosts})
        if any(found[h.name].address is None for h in hosts):
            return None
        return [replace(h, rdzv_address=found[h.name].address) for h in hosts]


def _without_note(reason: str) -> str:
    """A pending job's reason without the rendezvous note _say_why_waiting added to it."""
    at = reason.find(rendezvous.WAITING_PREFIX)
    if at < 0:
        return reason
    return reason[:at].rstrip("; ") or WAITING


def _running_reason(nodes: list[Node]) -> str:
    return "running on " + ", ".join(f"{n.host} (node {n.node_rank})" for n in nodes)


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
        if store.execute("PRAGMA data_version").fetchone()[0] != version or not store.intact():
            return  # news; or the store file vanished or changed (the next cycle's check says so)


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
        "SELECT n.host, n.job_id AS job, n.attempt, n.node_rank AS node, n.pid, n.run_dir FROM job_nodes n "
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


def _stopped(e: StoreGone) -> StoreGone:
    """The loop's own sentence for a store that vanished or changed under it."""
    return StoreGone(f"the scheduler loop stopped: {e.what}", e.why, e.fix)


def run_forever(
    inventory: Inventory,
    *,
    kind: str = "foreground",
    stop_event: threading.Event | None = None,
    holder: str | None = None,
    telemetry: bool = True,
    on_wait: Callable[[lease.Lease], None] | None = None,
) -> None:
    """Hold the lease and cycle until stop_event is set (or SIGTERM, in the foreground); raises
    lease.LeaseHeld if another loop runs (a cancel tearing down is waited for: `on_wait` hears of
    it). A lease.Keeper thread renews the lease throughout, so no teardown or start outlives it.
    With `telemetry`, the collector runs alongside.

    Jobs outlive the loop: stopping it leaves them running, and the next loop picks them up. A loop
    whose store file vanishes or changes under it (deleted, replaced, emptied, another store's id:
    Store.check, every cycle) stops at once with StoreGone, writing nothing more to it.
    """
    stop_event = stop_event or threading.Event()
    if kind == "foreground" and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop_event.set())  # systemd's stop: release the lease
    settings = inventory.settings
    store = Store.for_state_dir(inventory.state_dir, actor="scheduler")
    holder = holder or lease.holder_id()
    try:
        # A cancel tearing down from the CLI holds the lease for as long as its teardown takes: wait.
        wait = settings.grace_period + teardown.KILL_WAIT + 60
        lease.wait_for_cancel(store, holder, kind, settings.lease_ttl, timeout=wait, note=on_wait)
    except BaseException:
        store.close()
        raise
    executor = Executor(inventory)
    keeper = lease.Keeper(store.path, holder, settings.lease_ttl).__enter__()

    def heartbeat() -> None:
        if keeper.lost.is_set():
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
            store.check()
            try:
                summary = loop.cycle()
            except (LeaseLost, StoreGone):
                raise
            except Exception as e:  # a bug or a busy store must not stop the jobs' bookkeeping for good
                store.check()  # ... unless the store itself went away under the cycle
                log.exception("scheduler cycle failed")
                summary = {"error": f"{type(e).__name__}: {e}"}
            if keeper.lost.is_set() or not lease.renew(store, holder, settings.lease_ttl, last_cycle=summary):
                raise LeaseLost(f"{holder} lost the scheduler lease")
            nodes = _watched(loop)
            if watch is None or watch.key != _watch_key(nodes) or watch.stale():
                if watch is not None:
                    watch.close()
                watch = _Watch(executor, nodes)
            rest = (SOON if summary.get("soon") else settings.cycle_interval) - (time.monotonic() - t0)
            _idle(store, stop_event, rest, watch.event)
    except StoreGone as e:
        log.error("%s", _stopped(e).sentence())
        raise _stopped(e) from None
    finally:
        keeper.__exit__(None, None, None)
        if watch is not None:
            watch.close()
        if collector is not None:
            collector.stop()
        if store.gone is None:  # nothing is written to a file that is no longer the store
            try:
                lease.release(store, holder)
            except StoreGone as e:  # it went in the last instant: the next loop will say so
                log.error("%s", e.sentence())
        executor.close()
        store.close()
