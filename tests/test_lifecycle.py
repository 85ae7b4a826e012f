"""lifecycle.py owns every job, attempt and node transition: the transitions as specs (a real store,
no hosts), and a scan of the sources that keeps every other module from writing those columns."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from scheduler import jobs, lifecycle
from scheduler import inventory
from scheduler.launch import NodeStatus
from scheduler.model import ACTIVE, LIVE, TERMINAL, AttemptState, Ending, HostReport, JobState, NodePlan, NodeState, Verdict
from scheduler.store import Store

ROOT = Path(__file__).resolve().parent.parent
# A write of a state-machine column: `UPDATE jobs|attempts|job_nodes SET ... state|attempt|cancel_requested =`,
# or a new row in attempts / job_nodes (a new row in jobs is a submit).
STATE_WRITE = re.compile(
    # In the SET list only: a WHERE clause that filters on the state writes nothing.
    r"UPDATE\s+(jobs|attempts|job_nodes)\s+SET\b(?:(?!\bWHERE\b)[^\"'])*?\b(state|attempt|cancel_requested)\s*="
    r"|INSERT\s+INTO\s+(jobs|attempts|job_nodes)\b",
    re.I,
)


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "s.db", actor="alice@head") as s:
        yield s


@pytest.fixture
def inv(tmp_path):
    path = tmp_path / "hosts.toml"
    path.write_text('[cluster]\nname = "t"\n' + "".join(f'[[hosts]]\nname = "h{i}"\naddress = "10.0.0.{i}"\ngpus = 2\n' for i in (1, 2)))
    return inventory.load(path)


def submitted(store, inv, **kw) -> int:
    return jobs.submit(store, inv, jobs.JobSpec(nodes=2, gpus_per_node=2, **kw)).id


def started(store, job_id) -> int:
    plans = [NodePlan(rank, f"h{rank + 1}", (0, 1), 29500, f"/w/runs/{job_id}") for rank in range(2)]
    attempt = lifecycle.start_attempt(store, job_id, plans, reason="starting", now=time.time())
    lifecycle.node_started(store, job_id, attempt, {0: 100, 1: 101})
    assert lifecycle.mark_running(store, job_id, attempt, "running")
    return attempt


CLEAN = Verdict.of([HostReport("h1", found=3), HostReport("h2", found=3)])


def test_the_named_state_sets_partition_the_job_states():
    assert LIVE | TERMINAL == set(JobState) and not LIVE & TERMINAL
    assert ACTIVE == {JobState.STARTING, JobState.RUNNING} and ACTIVE < LIVE


def test_a_job_goes_pending_starting_running_succeeded_with_one_event_per_step(store, inv):
    job_id = submitted(store, inv)
    attempt = lifecycle.start_attempt(store, job_id, [NodePlan(0, "h1", (0,), 29500, "/w")], reason="starting", now=time.time())
    assert (attempt, jobs.get(store, job_id).state, [n.state for n in jobs.nodes(store, job_id, 1)]) == (1, "STARTING", ["STARTING"])
    lifecycle.node_started(store, job_id, 1, {0: 4242})
    assert [(n.pid, n.state) for n in jobs.nodes(store, job_id, 1)] == [(4242, NodeState.RUNNING)]
    assert lifecycle.mark_running(store, job_id, 1, "running on h1")
    assert lifecycle.mark_running(store, job_id, 1, "running on h1") is False  # only once
    (node,) = jobs.nodes(store, job_id, 1)
    lifecycle.record_facts(store, node, NodeStatus(pid=4242, alive=False, exit=0, left=0, log_size=10, metrics_size=40,
                                              metrics_last='{"step": 5, "loss": 2.5}'), time.time())
    ended = lifecycle.end_attempt(store, jobs.get(store, job_id), Ending(AttemptState.SUCCEEDED, "all 1 nodes exited 0"),
                                  Verdict.of([HostReport("h1")]))
    assert ended == (JobState.SUCCEEDED, "all 1 nodes exited 0; verified: no process left on h1")
    job = jobs.get(store, job_id)
    assert (job.state, job.metrics, job.ended_at is not None) == ("SUCCEEDED", {"step": 5, "loss": 2.5}, True)
    (a,) = jobs.attempts(store, job_id)
    assert (a.state, a.verdict.verified) == (AttemptState.SUCCEEDED, True)
    assert [(n.state, n.exit_code, n.log_offset) for n in jobs.nodes(store, job_id, 1)] == [(NodeState.EXITED, 0, 10)]
    events = [e["what"] for e in jobs.show(store, job_id)["events"]]
    assert events == ["submitted", "STARTING", "RUNNING", "SUCCEEDED"]


def test_a_failed_attempt_is_retried_while_retries_last_then_fails_for_good(store, inv):
    job_id = submitted(store, inv, retries=1)
    started(store, job_id)
    state, reason = lifecycle.end_attempt(store, jobs.get(store, job_id), Ending(AttemptState.FAILED, "node 1 exited 1"), CLEAN)
    assert state == JobState.PENDING
    assert reason.endswith("retrying as attempt 2 (1 of 1 retries used)")
    started(store, job_id)
    state, _ = lifecycle.end_attempt(store, jobs.get(store, job_id), Ending(AttemptState.FAILED, "node 1 exited 1"), CLEAN)
    assert state == JobState.FAILED
    assert [a.state for a in jobs.attempts(store, job_id)] == [AttemptState.FAILED, AttemptState.FAILED]


def test_an_attempt_that_never_really_ran_is_requeued_without_charging_a_retry(store, inv):
    job_id = submitted(store, inv, retries=0)
    started(store, job_id)
    state, reason = lifecycle.end_attempt(store, jobs.get(store, job_id), Ending(AttemptState.ABORTED, "h2 did not answer"), CLEAN)
    assert (state, reason.endswith("retrying as attempt 2")) == (JobState.PENDING, True)
    assert lifecycle.next_state(AttemptState.FAILED, failures=1, retries=0) == JobState.FAILED
    assert lifecycle.next_state(AttemptState.TIMEOUT, failures=0, retries=5) == JobState.TIMEOUT


def test_a_cancel_is_recorded_only_once_every_host_is_verified(store, inv):
    job_id = submitted(store, inv)
    started(store, job_id)
    assert lifecycle.request_cancel(store, job_id, actor="bob@head") == JobState.RUNNING
    job = jobs.get(store, job_id)
    dirty = Verdict.of([HostReport("h1"), HostReport("h2", found=2, left=("pid 7 (python)",))])
    assert lifecycle.end_attempt(store, job, Ending(AttemptState.CANCELLED, "cancelled by bob@head"), dirty) is None
    job = jobs.get(store, job_id)
    assert (job.state, job.reason) == (
        "RUNNING", "cancelled by bob@head; stopping: NOT verified: h2 still runs pid 7 (python); no process left on h1"
    )
    assert jobs.attempt(store, job_id, 1).verdict == dirty  # kept for the canceller to read
    silent = Verdict.of([HostReport("h1")], {"h2": "no route to host"})
    assert lifecycle.end_attempt(store, job, Ending(AttemptState.CANCELLED, "cancelled by bob@head"), silent) is None
    state, _ = lifecycle.end_attempt(store, job, Ending(AttemptState.CANCELLED, "cancelled by bob@head"), CLEAN)
    assert state == JobState.CANCELLED


def test_a_failure_with_a_silent_host_ends_and_leaves_its_node_lost_until_swept(store, inv):
    job_id = submitted(store, inv)
    started(store, job_id)
    lost = Verdict.of([HostReport("h1", found=2)], {"h2": "silent for 61 s"})
    ending = Ending(AttemptState.FAILED, "NODE_LOST: h2 stopped answering")
    state, _ = lifecycle.end_attempt(store, jobs.get(store, job_id), ending, lost)
    assert state == JobState.FAILED
    assert [(n.host, n.state) for n in jobs.nodes(store, job_id, 1)] == [("h1", "EXITED"), ("h2", "LOST")]
    lifecycle.node_swept(store, job_id, "h2", "h2 answers again; verified")
    assert [n.state for n in jobs.nodes(store, job_id, 1)] == ["EXITED", "EXITED"]


def test_an_attempt_ended_by_someone_else_meanwhile_is_not_ended_twice(store, inv):
    job_id = submitted(store, inv)
    started(store, job_id)
    stale = jobs.get(store, job_id)
    assert lifecycle.end_attempt(store, stale, Ending(AttemptState.FAILED, "x"), CLEAN) is not None
    assert lifecycle.end_attempt(store, stale, Ending(AttemptState.FAILED, "x"), CLEAN) is None


def test_a_cancelled_pending_job_never_starts(store, inv):
    job_id = submitted(store, inv)
    assert lifecycle.request_cancel(store, job_id) == JobState.CANCELLED
    assert lifecycle.start_attempt(store, job_id, [NodePlan(0, "h1", (0,), 1, "/w")], reason="x", now=time.time()) is None
    assert lifecycle.request_cancel(store, 999) is None


def _python_sources():
    # The product's packages; benchmarks and test fixtures seed synthetic stores of 10,000 jobs by SQL.
    for folder in ("scheduler", "console", "trainer"):
        yield from (ROOT / folder).rglob("*.py")


def test_no_module_but_lifecycle_writes_job_attempt_or_node_state():
    offenders = []
    for path in _python_sources():
        if path == ROOT / "scheduler" / "lifecycle.py":
            continue
        text = path.read_text()
        for m in STATE_WRITE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            offenders.append(f"{path.relative_to(ROOT)}:{line}: {m.group(0)[:60]}")
    assert offenders == []


def test_the_state_write_scan_would_catch_a_write_elsewhere():
    assert STATE_WRITE.search('store.execute("UPDATE jobs SET reason = ?, state = \'FAILED\' WHERE id = ?")')
    assert STATE_WRITE.search("UPDATE job_nodes SET state = 'EXITED'")
    assert STATE_WRITE.search("INSERT INTO attempts (job_id) VALUES (1)")
    assert not STATE_WRITE.search("UPDATE jobs SET flags = ? WHERE id = ?")
    assert not STATE_WRITE.search("UPDATE jobs SET flags = ? WHERE id = ? AND state = ? AND attempt = ?")
    assert STATE_WRITE.search("UPDATE jobs SET flags = ?, state = ? WHERE id = ?")
