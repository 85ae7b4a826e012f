"""Placement policy: which pending jobs start now, on which hosts, GPUs and rendezvous ports.

Pure functions over plain data (no I/O, no clock, standard library only): the scheduler loop builds
the views from the store, calls `schedule`, and launches what it returns. Same inputs, same plan.

The policy, in the order it is applied:

- **Gangs.** A job of K nodes x G GPUs starts on K distinct hosts that are schedulable (up, not
  draining), carry all of its tags and are in its `allowed_hosts` (when set), with G free GPUs on
  each -- or not at all. Jobs share a host on disjoint GPUs. G = 0 is allowed (CPU hosts, tests):
  such jobs take no GPU and share hosts freely.
- **Order.** Priority (high first), then submit time, then id.
- **Packing.** Each node goes on the eligible host with the fewest free GPUs that still fit (ties by
  name), lowest GPU indices first, so whole hosts stay free for big gangs. Node rank 0 is the first
  chosen host by name (the rendezvous host).
- **Ports.** One rendezvous port per job, the same on all its hosts: the lowest in `port_range` that
  no live job and no earlier placement of this pass uses on any of them. If the packed hosts share no
  free port the job waits (ports are plentiful next to GPUs; this keeps placement deterministic).
- **Backfill (EASY).** The first job in order that cannot start now gets a reservation: the earliest
  time T at which it could start if running jobs (and the ones placed earlier in this pass) end when
  their time limits say, and the GPUs it would take then. Every lower job may start only if it fits
  now and cannot delay that reservation: it ends by T (its time limit says so), or it takes none of
  the reserved GPUs. When the reservation needs a job without a time limit to end, T is unknown and
  only the second way is open (no backfill onto the GPUs the reserved job needs). Jobs without a time
  limit likewise only ever start outside the reserved GPUs. Only the first blocked job is protected;
  that keeps a pass linear in the queue, and it is the job everybody is waiting for.
- A job that could not start even if every running job ended (`feasible` explains why to the user)
  gets no reservation: it would block the cluster for nothing.

Speed (goal: 10,000 pending jobs x 256 hosts x 8 GPUs in < 50 ms; benchmarks/schedule.py): hosts
sit in buckets by free-GPU count with a running count of hosts with at least g free, so most jobs
are turned down in O(1); a job shape that did not fit is not tried again in the same pass (free GPUs
only shrink during a pass); the scan stops once no host has as many free GPUs as any job left asks.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from collections.abc import Iterable, Mapping, Sequence

DEFAULT_PORT_RANGE = (29500, 29999)


@dataclass(frozen=True)
class HostView:
    """A host as the policy sees it. Busy GPUs/ports are `used_*` plus those of the running jobs."""

    name: str
    gpus: int | None  # usable GPUs in total (indices 0..gpus-1); None = not detected yet (none usable)
    used_gpus: frozenset[int] = frozenset()  # busy besides the running jobs' allocations (may overlap them)
    schedulable: bool = True  # up and not draining
    tags: frozenset[str] = frozenset()
    used_ports: frozenset[int] = frozenset()


@dataclass(frozen=True)
class PendingJob:
    id: int
    priority: int = 0
    submitted_at: float = 0.0
    nodes: int = 1
    gpus_per_node: int = 1
    time_limit: float | None = None  # seconds; None = unbounded
    tags: frozenset[str] = frozenset()  # required on every node
    allowed_hosts: frozenset[str] | None = None  # None = any (the dataset preflight narrows it)


@dataclass(frozen=True)
class RunningJob:
    id: int
    allocation: Mapping[str, frozenset[int]]  # host -> GPU indices
    ports: Mapping[str, int]  # host -> rendezvous port
    ends_at: float | None = None  # started + time_limit; None = unknown / unbounded


@dataclass(frozen=True)
class NodePlacement:
    host: str
    node_rank: int
    gpus: tuple[int, ...]
    port: int


@dataclass(frozen=True)
class Placement:
    job_id: int
    nodes: tuple[NodePlacement, ...]  # node_rank 0 first

    @property
    def allocation(self) -> dict[str, frozenset[int]]:
        return {n.host: frozenset(n.gpus) for n in self.nodes}


def feasible(hosts: Iterable[HostView], job: PendingJob) -> str | None:
    """Why no set of these hosts could ever run `job` (whatever runs now, up or not), else None."""
    if job.nodes < 1:
        return f"needs {job.nodes} nodes; a job runs on at least 1"
    if job.gpus_per_node < 0:
        return f"needs {job.gpus_per_node} GPUs per node; give 0 or more"
    # A host whose GPUs are not detected yet may have enough: only a probe can rule it out.
    fit = sum(1 for h in hosts if _eligible(h, job) and (h.gpus is None or h.gpus >= job.gpus_per_node))
    if fit >= job.nodes:
        return None
    need = f"needs {job.nodes} host{'s' if job.nodes != 1 else ''}"
    if job.gpus_per_node:
        need += f" with >= {job.gpus_per_node} GPUs"
    if job.tags:
        need += f" and tags {{{', '.join(sorted(job.tags))}}}"
    if job.allowed_hosts is not None:
        need += f" among {', '.join(sorted(job.allowed_hosts)) or 'no hosts'}"
    have = "no host has them" if fit == 0 else f"only {fit} {'has' if fit == 1 else 'have'} them"
    return f"{need}; {have}"


def schedule(
    hosts: Iterable[HostView],
    pending: Iterable[PendingJob],
    running: Iterable[RunningJob],
    now: float,
    port_range: tuple[int, int] = DEFAULT_PORT_RANGE,
) -> list[Placement]:
    """The jobs to start now, in order, with their hosts, GPUs and port (see the module docstring)."""
    views = {h.name: h for h in hosts if h.schedulable}
    busy = {name: set(h.used_gpus) for name, h in views.items()}
    used_ports = {name: set(h.used_ports) for name, h in views.items()}
    releases: list[tuple[float | None, int, Mapping[str, frozenset[int]]]] = []
    for r in running:
        for host, gpus in r.allocation.items():
            if host in busy:
                busy[host] |= gpus
        for host, port in r.ports.items():
            if host in used_ports:
                used_ports[host].add(port)
        releases.append((r.ends_at, r.id, r.allocation))
    pool = _Pool({name: set(range(h.gpus or 0)) - busy[name] for name, h in views.items()})
    ports = _Ports(used_ports, port_range)

    order = sorted(pending, key=lambda j: (-j.priority, j.submitted_at, j.id))
    # The fewest GPUs per node any job from position i on asks for: once no host has that many
    # free, nothing later can start.
    least = [0] * (len(order) + 1)
    least[-1] = 1 << 30
    for i in range(len(order) - 1, -1, -1):
        least[i] = min(order[i].gpus_per_node, least[i + 1])

    placements: list[Placement] = []
    reserved_until: float | None = None
    protected: _Pool | None = None  # the pool minus the reserved GPUs, once a job holds the reservation
    hopeless: set[tuple] = set()  # shapes that would not fit even if every job ended
    for i, job in enumerate(order):
        if pool.most_free < least[i]:
            break
        if job.nodes < 1 or job.gpus_per_node < 0:
            continue
        if protected is None:
            chosen = pool.fit(job, views)
            if chosen is None:
                if _shape(job) in hopeless:
                    continue
                reservation = _reserve(job, pool, views, releases, now)
                if reservation is None:
                    hopeless.add(_shape(job))  # all GPUs released, it still did not fit: that stays so
                    continue
                reserved_until, reserved = reservation
                protected = pool.without(reserved)
                continue
            source = pool
        else:
            ends = None if job.time_limit is None else now + job.time_limit
            in_time = reserved_until is not None and ends is not None and ends <= reserved_until
            source, chosen = protected, protected.fit(job, views)
            if chosen is None and in_time:
                # A job that ends by T may borrow reserved GPUs, but only when nothing else fits.
                source, chosen = pool, pool.fit(job, views)
            if chosen is None:
                continue

        port = ports.common(chosen)
        if port is None:
            continue
        nodes = []
        for rank, host in enumerate(sorted(chosen)):
            gpus = tuple(sorted(source.free[host])[: job.gpus_per_node])
            nodes.append(NodePlacement(host, rank, gpus, port))
            ports.add(host, port)
            pool.take(host, gpus)
            if protected is not None:
                protected.take(host, gpus)
        placement = Placement(job.id, tuple(nodes))
        placements.append(placement)
        ends = None if job.time_limit is None else now + job.time_limit
        releases.append((ends, job.id, placement.allocation))
    return placements


def _shape(job: PendingJob) -> tuple:
    """What decides whether a job fits: jobs of one shape fit or not alike."""
    return (job.nodes, job.gpus_per_node, job.tags, job.allowed_hosts)


def _eligible(host: HostView, job: PendingJob) -> bool:
    return job.tags <= host.tags and (job.allowed_hosts is None or host.name in job.allowed_hosts)


class _Pool:
    """Free GPUs per host, with hosts bucketed by free count (sorted by name) for best fit."""

    def __init__(self, free: dict[str, set[int]]):
        self.free = free
        self.buckets: list[list[str]] = [[] for _ in range(max(map(len, free.values()), default=0) + 1)]
        for name in sorted(free):
            self.buckets[len(free[name])].append(name)
        # at_least[g]: how many hosts have g or more free GPUs -- rejects most jobs in O(1).
        self.at_least = [0] * (len(self.buckets) + 1)
        for g in range(len(self.buckets) - 1, -1, -1):
            self.at_least[g] = self.at_least[g + 1] + len(self.buckets[g])
        # Job shapes that did not fit: free GPUs only shrink during a pass, so they never will.
        self.misfits: set[tuple] = set()
        self.most_free = len(self.buckets) - 1 if free else -1  # -1: no schedulable host at all

    def fit(self, job: PendingJob, views: Mapping[str, HostView]) -> list[str] | None:
        """The K hosts with the fewest free GPUs that still hold G each, or None."""
        need, k = job.gpus_per_node, job.nodes
        if need >= len(self.buckets) or self.at_least[need] < k:
            return None
        shape = _shape(job)
        if shape in self.misfits:
            return None
        chosen = []
        for bucket in self.buckets[need:]:
            for name in bucket:
                if _eligible(views[name], job):
                    chosen.append(name)
                    if len(chosen) == k:
                        return chosen
        self.misfits.add(shape)
        return None

    def take(self, host: str, gpus: Iterable[int]) -> None:
        free = self.free[host]
        before = len(free)
        free.difference_update(gpus)
        if len(free) != before:
            self.buckets[before].remove(host)
            bisect.insort(self.buckets[len(free)], host)
            for g in range(len(free) + 1, before + 1):
                self.at_least[g] -= 1
            while self.most_free > 0 and not self.buckets[self.most_free]:
                self.most_free -= 1

    def without(self, reserved: Mapping[str, Iterable[int]]) -> _Pool:
        free = {name: set(gpus) for name, gpus in self.free.items()}
        for host, gpus in reserved.items():
            free[host].difference_update(gpus)
        pool = _Pool(free)
        pool.misfits = set(self.misfits)  # fewer free GPUs: what did not fit still does not
        return pool


def _reserve(
    job: PendingJob,
    pool: _Pool,
    views: Mapping[str, HostView],
    releases: Sequence[tuple[float | None, int, Mapping[str, frozenset[int]]]],
    now: float,
) -> tuple[float | None, dict[str, tuple[int, ...]]] | None:
    """When `job` could start and on which GPUs, if jobs end as their time limits say.

    Releases jobs in order of their end (unbounded ones last, oldest id first) until K eligible
    hosts have G free GPUs. Returns (T, {host: gpus}); T is None when an unbounded job had to end
    first; None when the job cannot start even once everything has ended.
    """
    need, k = job.gpus_per_node, job.nodes
    sim = {name: set(free) for name, free in pool.free.items() if _eligible(views[name], job)}
    ready = sum(len(free) >= need for free in sim.values())
    when: float | None = now
    events = sorted(releases, key=lambda e: (e[0] is None, e[0] or 0.0, e[1]))
    i = 0
    while ready < k:
        if i == len(events):
            return None
        when = events[i][0]
        # Jobs that end at the same moment are released together; unbounded ones one at a time.
        j = i + 1
        while when is not None and j < len(events) and events[j][0] == when:
            j += 1
        for _, _, allocation in events[i:j]:
            for host, gpus in allocation.items():
                free = sim.get(host)
                if free is not None:
                    was_ready = len(free) >= need
                    free.update(g for g in gpus if g < (views[host].gpus or 0))
                    ready += not was_ready and len(free) >= need
        i = j
    # Best fit at T as for a start now; then reserve GPUs that are busy now before free ones (and hosts
    # with fewer free now), so that jobs without a short limit can still backfill the free ones.
    hosts = sorted(
        (name for name, free in sim.items() if len(free) >= need), key=lambda n: (len(sim[n]), len(pool.free[n]), n)
    )
    return when, {
        host: tuple(sorted(sim[host], key=lambda g: (g in pool.free[host], g))[:need]) for host in hosts[:k]
    }


class _Ports:
    """Rendezvous ports in use per host; finds the lowest port free on all of a job's hosts."""

    def __init__(self, used: dict[str, set[int]], port_range: tuple[int, int]):
        self.used = used
        self.lo, self.hi = port_range
        # The lowest port free on each host: ports are only added during a pass, so it only rises,
        # and a host that many CPU jobs share is not rescanned from the bottom for every job.
        self.floor = dict.fromkeys(used, self.lo)

    def common(self, hosts: Sequence[str]) -> int | None:
        port = max(self._floor(h) for h in hosts)
        while port <= self.hi:
            if not any(port in self.used[h] for h in hosts):
                return port
            port += 1
        return None

    def add(self, host: str, port: int) -> None:
        self.used[host].add(port)

    def _floor(self, host: str) -> int:
        port, used = self.floor[host], self.used[host]
        while port in used:
            port += 1
        self.floor[host] = port
        return port
