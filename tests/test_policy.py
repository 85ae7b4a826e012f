"""The placement policy, as pure functions over plain data: no hosts, no store, no clock."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.policy import (
    HostView,
    NodePlacement,
    PendingJob,
    Placement,
    RunningJob,
    feasible,
    schedule,
)

NOW = 1000.0


def hosts(*specs: str, gpus: int = 8) -> list[HostView]:
    return [HostView(name, gpus) for name in specs]


def running(id: int, allocation: dict[str, set[int]], *, ends_at: float | None = None, port: int = 29500) -> RunningJob:
    return RunningJob(id, {h: frozenset(g) for h, g in allocation.items()}, {h: port for h in allocation}, ends_at)


def plan(placements: list[Placement]) -> dict[int, list[tuple[str, tuple[int, ...]]]]:
    """Job id -> [(host, GPUs)] in node-rank order: the part of a placement most tests are about."""
    return {p.job_id: [(n.host, n.gpus) for n in p.nodes] for p in placements}


# --- gangs, sharing, packing -----------------------------------------------------------------------


def test_a_gang_gets_its_gpus_on_distinct_hosts_with_rank_zero_first_by_name():
    placements = schedule(hosts("b", "a"), [PendingJob(1, nodes=2, gpus_per_node=4)], [], NOW)
    assert placements == [
        Placement(
            1,
            (
                NodePlacement("a", 0, (0, 1, 2, 3), 29500),
                NodePlacement("b", 1, (0, 1, 2, 3), 29500),
            ),
        )
    ]


def test_a_gang_that_does_not_fit_whole_takes_nothing():
    # Two hosts have room for one node each; the 3-node job must not start on two of them.
    placements = schedule(hosts("a", "b", "c"), [PendingJob(1, nodes=3, gpus_per_node=8)], [running(9, {"c": {0}})], NOW)
    assert placements == []


def test_jobs_share_a_host_on_disjoint_gpus():
    placements = schedule(hosts("a"), [PendingJob(1, gpus_per_node=3), PendingJob(2, gpus_per_node=3)], [running(9, {"a": {0}})], NOW)
    assert plan(placements) == {1: [("a", (1, 2, 3))], 2: [("a", (4, 5, 6))]}


def test_a_small_job_goes_on_the_fullest_host_that_fits_so_whole_hosts_stay_free():
    busy = [running(9, {"b": {0, 1, 2, 3, 4, 5}}), running(8, {"c": {0, 1, 2, 3}})]
    placements = schedule(hosts("a", "b", "c"), [PendingJob(1, gpus_per_node=2), PendingJob(2, gpus_per_node=8)], busy, NOW)
    assert plan(placements) == {1: [("b", (6, 7))], 2: [("a", tuple(range(8)))]}


def test_hosts_that_are_down_or_draining_get_nothing():
    views = [HostView("a", 8, schedulable=False), HostView("b", 8)]
    placements = schedule(views, [PendingJob(1, gpus_per_node=8), PendingJob(2, gpus_per_node=8)], [], NOW)
    assert plan(placements) == {1: [("b", tuple(range(8)))]}


def test_gpus_busy_outside_the_running_jobs_are_not_given_out():
    placements = schedule([HostView("a", 4, used_gpus=frozenset({0, 2}))], [PendingJob(1, gpus_per_node=2)], [], NOW)
    assert plan(placements) == {1: [("a", (1, 3))]}


def test_required_tags_must_be_on_every_node():
    views = [HostView("a", 8, tags=frozenset({"h100"})), HostView("b", 8), HostView("c", 8, tags=frozenset({"h100", "ib"}))]
    job = PendingJob(1, nodes=2, gpus_per_node=8, tags=frozenset({"h100"}))
    assert plan(schedule(views, [job], [], NOW)) == {1: [("a", tuple(range(8))), ("c", tuple(range(8)))]}


def test_a_job_restricted_to_some_hosts_starts_only_there():
    job = PendingJob(1, gpus_per_node=1, allowed_hosts=frozenset({"c"}))
    assert plan(schedule(hosts("a", "b", "c"), [job], [], NOW)) == {1: [("c", (0,))]}


def test_a_job_restricted_to_hosts_without_room_waits():
    job = PendingJob(1, gpus_per_node=1, allowed_hosts=frozenset({"a"}))
    assert schedule(hosts("a", "b", gpus=1), [job], [running(9, {"a": {0}})], NOW) == []


def test_zero_gpu_jobs_start_on_cpu_hosts_and_share_them():
    views = [HostView("cpu", 0), HostView("gpu", 1, used_gpus=frozenset({0}))]
    jobs = [PendingJob(1, nodes=2, gpus_per_node=0), PendingJob(2, gpus_per_node=0)]
    assert schedule(views, jobs, [], NOW) == [
        Placement(1, (NodePlacement("cpu", 0, (), 29500), NodePlacement("gpu", 1, (), 29500))),
        Placement(2, (NodePlacement("cpu", 0, (), 29501),)),
    ]


def test_a_host_whose_gpus_are_not_detected_yet_takes_only_cpu_jobs():
    views = [HostView("new", None)]
    placements = schedule(views, [PendingJob(1, gpus_per_node=1), PendingJob(2, gpus_per_node=0)], [], NOW)
    assert plan(placements) == {2: [("new", ())]}


def test_a_cpu_job_behind_gpu_jobs_still_starts_when_every_gpu_is_taken():
    queue = [PendingJob(1, gpus_per_node=1), PendingJob(2, gpus_per_node=0)]
    assert plan(schedule(hosts("a", gpus=1), queue, [running(9, {"a": {0}})], NOW)) == {2: [("a", ())]}


# --- order -----------------------------------------------------------------------------------------


def test_higher_priority_starts_first_even_when_submitted_later():
    jobs = [PendingJob(1, priority=0, submitted_at=1.0), PendingJob(2, priority=5, submitted_at=2.0)]
    assert plan(schedule(hosts("a", gpus=1), jobs, [], NOW)) == {2: [("a", (0,))]}


def test_equal_priority_starts_in_submit_order_then_by_id():
    jobs = [PendingJob(3, submitted_at=2.0), PendingJob(2, submitted_at=1.0), PendingJob(1, submitted_at=2.0)]
    assert [p.job_id for p in schedule(hosts("a", gpus=2), jobs, [], NOW)] == [2, 1]


def test_the_plan_does_not_depend_on_the_order_of_the_inputs():
    views = hosts("a", "b", "c", gpus=4)
    jobs = [PendingJob(i, nodes=1 + i % 2, gpus_per_node=i % 3 + 1, time_limit=10.0 * i) for i in range(1, 9)]
    live = [running(20, {"a": {0, 1}}, ends_at=NOW + 5), running(21, {"b": {3}}, ends_at=NOW + 50, port=29501)]
    assert schedule(views, jobs, live, NOW) == schedule(views[::-1], jobs[::-1], live[::-1], NOW)


# --- ports -----------------------------------------------------------------------------------------


def test_a_job_gets_the_lowest_port_free_on_all_of_its_hosts():
    live = [running(8, {"a": {0}}, port=29500), running(9, {"b": {0}}, port=29501)]
    views = [HostView("a", 2), HostView("b", 2, used_ports=frozenset({29502}))]
    placements = schedule(views, [PendingJob(1, nodes=2, gpus_per_node=1)], live, NOW)
    assert [n.port for n in placements[0].nodes] == [29503, 29503]


def test_two_jobs_placed_in_one_pass_on_a_host_get_different_ports():
    placements = schedule(hosts("a", gpus=2), [PendingJob(1), PendingJob(2)], [], NOW, port_range=(40000, 40009))
    assert [p.nodes[0].port for p in placements] == [40000, 40001]


def test_jobs_sharing_a_host_take_the_gaps_between_ports_in_use_first():
    views = [HostView("a", 0, used_ports=frozenset({29500, 29502}))]
    placements = schedule(views, [PendingJob(i, gpus_per_node=0) for i in (1, 2, 3)], [], NOW)
    assert [p.nodes[0].port for p in placements] == [29501, 29503, 29504]


def test_a_job_waits_when_its_hosts_have_no_common_free_port():
    placements = schedule(hosts("a", gpus=2), [PendingJob(1), PendingJob(2)], [], NOW, port_range=(40000, 40000))
    assert plan(placements) == {1: [("a", (0,))]}


# --- backfill ----------------------------------------------------------------------------------------
# One 8-GPU host; a running 4-GPU job ends at NOW+100, so the 8-GPU job at the head of the queue is
# reserved to start then, on all 8 GPUs. Four GPUs are free until then.


def reserved_big_job(*lower: PendingJob, ends_at: float | None = NOW + 100) -> list[Placement]:
    big = PendingJob(1, priority=10, gpus_per_node=8)
    return schedule(hosts("a"), [big, *lower], [running(9, {"a": {4, 5, 6, 7}}, ends_at=ends_at)], NOW)


def test_backfill_starts_a_short_job_around_a_reserved_big_job_when_it_ends_before_the_reservation():
    assert plan(reserved_big_job(PendingJob(2, gpus_per_node=4, time_limit=100.0))) == {2: [("a", (0, 1, 2, 3))]}


def test_backfill_holds_a_job_that_would_still_run_when_the_big_job_is_due():
    assert reserved_big_job(PendingJob(2, gpus_per_node=4, time_limit=101.0)) == []


def test_backfill_holds_a_job_without_a_time_limit_on_reserved_gpus():
    assert reserved_big_job(PendingJob(2, gpus_per_node=1)) == []


def test_backfill_holds_even_a_short_job_when_the_reservation_waits_on_a_job_without_a_time_limit():
    assert reserved_big_job(PendingJob(2, gpus_per_node=1, time_limit=1.0), ends_at=None) == []


def test_backfill_starts_a_long_job_on_gpus_the_reservation_does_not_need():
    # Host b's GPUs are not part of the reservation (it is on a), so a job without a limit may use them.
    big = PendingJob(1, priority=10, gpus_per_node=8)
    live = [running(9, {"a": {4, 5, 6, 7}}, ends_at=NOW + 100), running(8, {"b": {0, 1, 2, 3, 4, 5}})]
    placements = schedule(hosts("a", "b"), [big, PendingJob(2, gpus_per_node=2)], live, NOW)
    assert plan(placements) == {2: [("b", (6, 7))]}


def test_the_reservation_takes_gpus_that_are_busy_now_leaving_free_ones_to_long_jobs():
    # The 6-GPU head job is due when job 9 ends; it is promised GPUs 4-7 and 0-1, so 2-3 stay open.
    big = PendingJob(1, priority=10, gpus_per_node=6)
    live = [running(9, {"a": {4, 5, 6, 7}}, ends_at=NOW + 100)]
    placements = schedule(hosts("a"), [big, PendingJob(2, gpus_per_node=2)], live, NOW)
    assert plan(placements) == {2: [("a", (2, 3))]}


def test_jobs_backfilled_beside_a_reservation_get_disjoint_gpus():
    live = [running(9, {"a": {0, 1, 2, 3}}, ends_at=NOW + 100), running(8, {"b": set(range(6))})]
    queue = [PendingJob(1, priority=10, gpus_per_node=8), PendingJob(2), PendingJob(3)]
    assert plan(schedule(hosts("a", "b"), queue, live, NOW)) == {2: [("b", (6,))], 3: [("b", (7,))]}


def test_the_reservation_goes_to_the_host_with_fewer_free_gpus_when_both_are_due_at_once():
    # Hosts a and b both free up at NOW+100; reserving b (all busy now) leaves a's free GPUs usable.
    live = [running(8, {"a": {0, 1, 2, 3}}, ends_at=NOW + 100), running(9, {"b": set(range(8))}, ends_at=NOW + 100)]
    queue = [PendingJob(1, priority=10, gpus_per_node=8), PendingJob(2, gpus_per_node=4)]
    assert plan(schedule(hosts("a", "b"), queue, live, NOW)) == {2: [("a", (4, 5, 6, 7))]}


def test_backfill_protects_every_host_of_a_multi_node_reservation():
    # Host a is free by NOW+30 in three steps, b only at NOW+100: the 2-node job is due at NOW+100
    # and holds 7 GPUs on each, so no 2-GPU job without a limit fits beside it on either host.
    live = [
        running(5, {"a": {0, 1, 2}}, ends_at=NOW + 10),
        running(6, {"a": {3, 4, 5}}, ends_at=NOW + 20),
        running(7, {"a": {6}}, ends_at=NOW + 30),
        running(8, {"b": set(range(6))}, ends_at=NOW + 100),
    ]
    queue = [PendingJob(1, priority=10, nodes=2, gpus_per_node=7), PendingJob(2, gpus_per_node=2)]
    assert schedule(hosts("a", "b"), queue, live, NOW) == []


def test_a_job_held_back_by_its_tags_does_not_hold_back_a_job_of_the_same_size_without_them():
    queue = [PendingJob(1, priority=1, tags=frozenset({"h100"})), PendingJob(2)]
    assert plan(schedule(hosts("a"), queue, [], NOW)) == {2: [("a", (0,))]}


def test_a_job_that_can_never_start_here_reserves_nothing_and_blocks_no_one():
    impossible = PendingJob(1, priority=10, nodes=2, gpus_per_node=8)
    placements = schedule(hosts("a"), [impossible, PendingJob(2, gpus_per_node=8)], [], NOW)
    assert plan(placements) == {2: [("a", tuple(range(8)))]}


def test_only_the_first_blocked_job_is_protected():
    # Job 1 is promised host a when job 9 ends. Job 2 could have had b's GPUs 4-7 once job 8 ends,
    # but nothing is promised to it, so job 3 (no limit) takes them now.
    live = [running(9, {"a": set(range(8))}, ends_at=NOW + 100), running(8, {"b": {0, 1, 2, 3}}, ends_at=NOW + 200)]
    queue = [PendingJob(1, priority=10, gpus_per_node=8), PendingJob(2, priority=5, gpus_per_node=6), PendingJob(3, gpus_per_node=4)]
    assert plan(schedule(hosts("a", "b"), queue, live, NOW)) == {3: [("b", (4, 5, 6, 7))]}


# --- feasible ----------------------------------------------------------------------------------------


def test_feasible_is_silent_when_some_hosts_could_run_the_job_even_if_busy_or_down_now():
    views = [HostView("a", 8, schedulable=False, used_gpus=frozenset(range(8))), HostView("b", 8)]
    assert feasible(views, PendingJob(1, nodes=2, gpus_per_node=8)) is None


def test_feasible_counts_hosts_with_undetected_gpus_as_possible():
    assert feasible([HostView("a", None)], PendingJob(1, gpus_per_node=4)) is None


def test_feasible_says_how_many_hosts_have_what_the_job_needs():
    views = [HostView("a", 8, tags=frozenset({"h100"})), HostView("b", 8, tags=frozenset({"h100"})), HostView("c", 2)]
    job = PendingJob(1, nodes=3, gpus_per_node=4, tags=frozenset({"h100"}))
    assert feasible(views, job) == "needs 3 hosts with >= 4 GPUs and tags {h100}; only 2 have them"


def test_feasible_names_the_allowed_hosts_when_none_of_them_fit():
    job = PendingJob(1, gpus_per_node=16, allowed_hosts=frozenset({"b", "a"}))
    assert feasible(hosts("a", "b"), job) == "needs 1 host with >= 16 GPUs among a, b; no host has them"


def test_feasible_refuses_a_job_without_nodes():
    assert feasible(hosts("a"), PendingJob(1, nodes=0)) == "needs 0 nodes; a job runs on at least 1"


# --- invariants over random clusters ---------------------------------------------------------------

TAGS = ("x", "y")


@st.composite
def scenarios(draw, bounded: bool = False):
    """Hosts, a consistent set of running jobs, and a queue; `bounded`: every job has a time limit."""
    views, live, next_id = [], [], 100
    for i in range(draw(st.integers(1, 4))):
        name, total = f"h{i}", draw(st.integers(0, 6))
        gpus = list(range(total))
        foreign = frozenset(draw(st.sets(st.sampled_from(gpus))) if gpus else ())
        free = [g for g in gpus if g not in foreign]
        while free and draw(st.booleans()):
            take = frozenset(draw(st.sets(st.sampled_from(free), min_size=1)))
            free = [g for g in free if g not in take]
            ends = NOW + draw(st.integers(1, 50)) if bounded or draw(st.booleans()) else None
            live.append(RunningJob(next_id, {name: take}, {name: 29500 + draw(st.integers(0, 5))}, ends))
            next_id += 1
        tags = frozenset(draw(st.sets(st.sampled_from(TAGS))))
        views.append(HostView(name, total, foreign, draw(st.booleans()) or i == 0, tags))
    queue = []
    for j in range(draw(st.integers(1, 10))):
        limit = draw(st.integers(1, 60)) if bounded else draw(st.none() | st.integers(1, 60))
        allowed = draw(st.none() | st.none() | st.sets(st.sampled_from([h.name for h in views]), min_size=1).map(frozenset))
        queue.append(
            PendingJob(
                j + 1,
                priority=draw(st.integers(0, 2)),
                submitted_at=draw(st.integers(0, 3)),
                nodes=draw(st.sampled_from([1, 1, 2, 3])),
                gpus_per_node=draw(st.integers(0, 4)),
                time_limit=None if limit is None else float(limit),
                tags=frozenset(draw(st.sets(st.sampled_from(TAGS), max_size=1)) if draw(st.booleans()) else ()),
                allowed_hosts=allowed,
            )
        )
    return views, queue, live


def in_order(queue: list[PendingJob]) -> list[PendingJob]:
    return sorted(queue, key=lambda j: (-j.priority, j.submitted_at, j.id))


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.integers(1, 6))
def test_no_gpu_or_port_is_given_twice_and_gangs_are_whole(scenario, ports):
    views, queue, live = scenario
    placements = schedule(views, queue, live, NOW, port_range=(29500, 29500 + ports - 1))
    by_name, jobs = {h.name: h for h in views}, {j.id: j for j in queue}
    gpus_taken = {h.name: set(h.used_gpus) for h in views}
    ports_taken = {h.name: set(h.used_ports) for h in views}
    for r in live:
        for host, gpus in r.allocation.items():
            gpus_taken[host] |= gpus
            ports_taken[host].add(r.ports[host])
    for p in placements:
        job = jobs[p.job_id]
        assert [n.node_rank for n in p.nodes] == list(range(job.nodes))
        assert len({n.host for n in p.nodes}) == job.nodes
        assert len({n.port for n in p.nodes}) == 1
        for n in p.nodes:
            host = by_name[n.host]
            assert host.schedulable and job.tags <= host.tags
            assert job.allowed_hosts is None or n.host in job.allowed_hosts
            assert len(n.gpus) == job.gpus_per_node and all(0 <= g < host.gpus for g in n.gpus)
            assert not gpus_taken[n.host] & set(n.gpus)
            assert n.port not in ports_taken[n.host] and 29500 <= n.port < 29500 + ports
            gpus_taken[n.host] |= set(n.gpus)
            ports_taken[n.host].add(n.port)


def earliest_start(job: PendingJob, views: list[HostView], jobs: list[tuple[float | None, dict]], now: float) -> float | None:
    """Brute force: the first moment `job` has room if every job ends when its time limit says."""
    for t in sorted({now} | {end for end, _ in jobs if end is not None}):
        fit = 0
        for h in views:
            busy = set(h.used_gpus).union(*(alloc.get(h.name, ()) for end, alloc in jobs if end is None or end > t))
            eligible = h.schedulable and job.tags <= h.tags and (job.allowed_hosts is None or h.name in job.allowed_hosts)
            fit += eligible and (h.gpus or 0) - len(busy & set(range(h.gpus or 0))) >= job.gpus_per_node
        if fit >= job.nodes:
            return t
    return None


@settings(max_examples=300, deadline=None)
@given(scenarios(bounded=True))
def test_a_job_started_out_of_order_never_delays_the_first_blocked_job(scenario):
    views, queue, live = scenario
    placements = schedule(views, queue, live, NOW)
    placed = {p.job_id: p for p in placements}
    jobs = [(r.ends_at, dict(r.allocation)) for r in live]
    before = []  # what started ahead of the first blocked job, in order
    for job in in_order(queue):
        if job.id in placed:
            before.append(job)
            continue
        alloc = lambda j: (NOW + j.time_limit, placed[j.id].allocation)  # noqa: E731
        due = earliest_start(job, views, jobs + [alloc(j) for j in before], NOW)
        if due is None:
            continue  # it could not start even on an idle cluster: it reserves nothing
        assert due > NOW, "a job that fits now must start now"
        everything = jobs + [alloc(j) for j in in_order(queue) if j.id in placed]
        assert earliest_start(job, views, everything, NOW) == due
        return
