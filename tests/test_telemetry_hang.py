"""Hang and waste detection: the pure verdicts, then check_hangs on a real store."""

from __future__ import annotations

from types import SimpleNamespace

import json

import pytest

from scheduler.inventory import Settings
from scheduler.store import Store, loads
from scheduler.telemetry.hang import HANG, IDLE, Flag, check_hangs, detect_hang, detect_idle, last_looked, last_progress
from scheduler.telemetry.ingest import Received, ingest

NOW = 10_000.0
AFTER = 300.0


def gpu(util, power=500.0, limit=700.0, idle_since=None) -> dict:
    return {"index": 0, "util": util, "power": power, "power_limit": limit, "idle_since": idle_since}


def stalled(seconds: float) -> float:
    """The last progress stamp of a job that has not advanced for `seconds`."""
    return NOW - seconds


def test_a_job_that_progresses_is_never_hung_even_on_idle_gpus():
    assert detect_hang(stalled(10), [gpu(0)], [], NOW, AFTER) is None


def test_no_progress_with_idle_gpus_is_a_hang():
    assert detect_hang(stalled(400), [gpu(0), gpu(2)], [], NOW, AFTER) == Flag(HANG, "no progress for 400 s and its 2 GPUs idle")


def test_gpus_pinned_at_full_utilisation_on_low_power_are_a_communication_hang():
    flag = detect_hang(stalled(400), [gpu(100, power=120.0)], [], NOW, AFTER)
    assert flag.kind == HANG and "communication hang" in flag.reason


def test_busy_gpus_drawing_power_are_slow_not_hung():
    assert detect_hang(stalled(400), [gpu(100, power=650.0)], [], NOW, AFTER) is None


def test_unknown_utilisation_is_no_evidence():
    assert detect_hang(stalled(400), [gpu(None, power=None)], [], NOW, AFTER) is None


def test_cpu_only_ranks_that_sleep_are_a_hang_and_busy_ones_are_not():
    idle = [{"host": "a", "pids": [1, 2], "cpu_percent": 0.4}, {"host": "b", "pids": [3, 4], "cpu_percent": 1.0}]
    busy = [{"host": "a", "pids": [1, 2], "cpu_percent": 180.0}]
    assert detect_hang(stalled(400), [], idle, NOW, AFTER).reason == "no progress for 400 s and its 4 processes idle (1 % CPU)"
    assert detect_hang(stalled(400), [], busy, NOW, AFTER) is None


def test_without_any_telemetry_there_is_no_verdict():
    assert detect_hang(stalled(4000), [], [], NOW, AFTER) is None


def test_a_job_never_looked_at_has_no_verdict():
    assert detect_hang(stalled(400), [gpu(0)], [], None, AFTER) is None


def test_the_stall_ends_when_the_nodes_were_last_looked_at_not_at_the_wall_clock():
    nodes = [SimpleNamespace(last_seen=NOW - 5), SimpleNamespace(last_seen=NOW - 1)]
    assert last_looked(nodes) == NOW - 5  # the oldest: a node not looked at since may have progressed
    assert last_looked([*nodes, SimpleNamespace(last_seen=None)]) is None
    assert detect_hang(stalled(400), [gpu(0)], [], NOW - 200, AFTER) is None  # 200 s seen stalled, not 400


def test_the_last_progress_stamp_counts_whichever_it_is():
    job = SimpleNamespace(started_at=NOW - 3600, progress_at=NOW - 1000, metrics_at=NOW - 5)
    assert last_progress(job) == NOW - 5
    assert detect_hang(last_progress(job), [gpu(0)], [], NOW, AFTER) is None


def test_gpus_idle_for_long_are_waste_even_when_the_job_progresses():
    gpus = [gpu(0, idle_since=NOW - 400), gpu(90), gpu(1, idle_since=NOW - 10)]
    assert detect_idle(gpus, NOW, AFTER) == Flag(IDLE, "1 of its 3 GPUs idle for 400 s")
    assert detect_idle([gpu(90)], NOW, AFTER) is None


# --- check_hangs on a store ------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    with Store.for_state_dir(tmp_path) as s:
        yield s


def running_job(store: Store, host: str, gpus: list[int], progress_at: float, env: dict | None = None, seen: float = NOW) -> int:
    """A RUNNING job on one host whose node the loop last looked at `seen`."""
    with store.tx():
        job_id = store.execute(
            "INSERT INTO jobs (name, state, command, nodes, gpus_per_node, attempt, submitted_at, started_at, progress_at, env) "
            "VALUES ('t', 'RUNNING', '[]', 1, ?, 1, ?, ?, ?, ?)",
            (len(gpus), progress_at, progress_at, progress_at, json.dumps(env or {})),
        ).lastrowid
        store.execute("INSERT INTO job_nodes (job_id, attempt, node_rank, host, gpus, last_seen) VALUES (?, 1, 0, ?, ?, ?)",
                      (job_id, host, json.dumps(gpus), seen))
        store.execute("INSERT OR IGNORE INTO hosts (name, address) VALUES (?, '10.0.0.1')", (host,))
    return job_id


def gpus_at(util: float, power: float = 500.0) -> dict:
    return {
        "host": {"cpu_percent": 5.0, "mem_percent": 5.0},
        "gpus": [{"index": i, "util": util, "power": power, "power_limit": 700.0} for i in range(2)],
        "jobs": {},
    }


def test_check_hangs_flags_a_stuck_job_once_and_clears_the_flag_when_it_resumes(store):
    settings = Settings(hang_after=AFTER, down_after=10.0)
    job = running_job(store, "gpu01", [0, 1], progress_at=NOW - 400)
    ingest(store, [Received("gpu01", NOW - 1, gpus_at(100, power=90.0))])
    assert [(j, f.kind) for j, f in check_hangs(store, settings, NOW)] == [(job, HANG)]
    assert check_hangs(store, settings, NOW + 1) == []  # still hung: no second alert
    assert loads(store.one("SELECT flags FROM jobs")["flags"]) == [HANG]
    store.execute("UPDATE jobs SET progress_at = ?", (NOW + 2,))
    check_hangs(store, settings, NOW + 3)
    assert loads(store.one("SELECT flags FROM jobs")["flags"]) == []
    rows = store.query("SELECT what, reason FROM events WHERE object = ?", (f"job:{job}",))
    events = [(e["what"], e["reason"].split(":")[0]) for e in rows]
    assert events == [("alert", HANG), ("alert cleared", HANG)]


def test_a_job_the_loop_could_not_look_at_is_not_hung_however_long_ago_it_progressed(store):
    settings = Settings(hang_after=AFTER, down_after=10.0)
    running_job(store, "gpu01", [0, 1], progress_at=NOW - 400, seen=NOW - 400)  # no probe answered since
    ingest(store, [Received("gpu01", NOW - 1, gpus_at(0))])
    assert check_hangs(store, settings, NOW) == []
    assert loads(store.one("SELECT flags FROM jobs")["flags"]) == []


def test_the_flags_of_a_job_that_stopped_running_are_cleared(store):
    settings = Settings(hang_after=AFTER, down_after=10.0)
    job = running_job(store, "gpu01", [0, 1], progress_at=NOW - 400)
    ingest(store, [Received("gpu01", NOW - 1, gpus_at(0))])
    assert [(j, f.kind) for j, f in check_hangs(store, settings, NOW)] == [(job, HANG)]
    store.execute("UPDATE jobs SET state = 'CANCELLED' WHERE id = ?", (job,))
    assert check_hangs(store, settings, NOW + 1) == []
    assert loads(store.one("SELECT flags FROM jobs")["flags"]) == []
    whats = [e["what"] for e in store.query("SELECT what FROM events WHERE object = ? ORDER BY id", (f"job:{job}",))]
    assert whats == ["alert", "alert cleared"]


def test_stale_telemetry_is_not_evidence(store):
    settings = Settings(hang_after=AFTER, down_after=10.0)
    running_job(store, "gpu01", [0, 1], progress_at=NOW - 400)
    ingest(store, [Received("gpu01", NOW - 60, gpus_at(0))])  # the host went silent a minute ago
    assert check_hangs(store, settings, NOW) == []


def test_a_job_that_asked_for_it_is_cancelled_when_it_hangs(store):
    settings = Settings(hang_after=AFTER, down_after=10.0)
    job = running_job(store, "gpu01", [0], progress_at=NOW - 400, env={"HEADNODE_ON_HANG": "cancel"})
    ingest(store, [Received("gpu01", NOW - 1, gpus_at(0))])
    check_hangs(store, settings, NOW)
    assert store.one("SELECT cancel_requested FROM jobs WHERE id = ?", (job,))["cancel_requested"] == 1
