"""queue, show, cancel, wait and `scheduler status` over a real store; the loop's transitions are
made by calling lifecycle.py, as the loop does, without hosts."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from scheduler import jobs, lease, lifecycle
from scheduler.cli import main
from scheduler.launch import NodeStatus
from scheduler.model import AttemptState, Ending, HostReport, NodePlan, Verdict
from scheduler.store import Store, dumps


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "hosts.toml"
    path.write_text(
        '[cluster]\nname = "t"\nstate_dir = "state"\n\n'
        + "".join(f'[[hosts]]\nname = "h{i}"\naddress = "10.0.0.{i}"\ngpus = 2\n\n' for i in (1, 2))
    )
    return path


@pytest.fixture
def store(config: Path):
    with Store.for_state_dir(config.parent / "state", actor="alice@head") as s:
        yield s


def run(config: Path, *argv: str) -> int:
    return main(["--config", str(config), *argv])


def new_job(store: Store, config: Path, **kw) -> int:
    from scheduler import inventory

    return jobs.submit(store, inventory.load(config), jobs.JobSpec(**kw)).id


def start(store: Store, job_id: int, hosts=("h1", "h2"), *, port: int = 29500) -> None:
    """The transitions the loop makes when it launches an attempt and every node answers."""
    plans = [NodePlan(rank, host, (0, 1), port, f"/w/runs/{job_id}") for rank, host in enumerate(hosts)]
    attempt = lifecycle.start_attempt(store, job_id, plans, reason="starting", now=time.time())
    lifecycle.node_started(store, job_id, attempt, {rank: 1000 + rank for rank in range(len(hosts))})
    lifecycle.mark_running(store, job_id, attempt, f"all {len(hosts)} nodes started")


def finish(store: Store, job_id: int, state: str, reason: str, *, exit_codes=(0, 0)) -> None:
    """The loop's end of an attempt: the nodes' exit codes from their hosts, then a clean teardown."""
    job = jobs.get(store, job_id)
    nodes = jobs.nodes(store, job_id, job.attempt)
    for n, code in zip(nodes, exit_codes):
        lifecycle.record_facts(store, n, NodeStatus(n.pid, False, code, None, None, None, None), time.time())
    clean = Verdict.of([HostReport(h) for h in dict.fromkeys(n.host for n in nodes)])
    lifecycle.end_attempt(store, job, Ending(AttemptState(state), reason, actor="scheduler"), clean)


def out_json(capsys):
    return json.loads(capsys.readouterr().out)


# --- JOB lookup ------------------------------------------------------------------------------------


def test_a_job_is_found_by_id_or_by_its_unique_name(store, config):
    job_id = new_job(store, config, name="bert")
    assert jobs.find(store, str(job_id)).id == jobs.find(store, "bert").id == job_id


def test_a_name_shared_by_several_jobs_is_ambiguous_and_lists_their_ids(store, config, capsys):
    for _ in range(2):
        new_job(store, config, name="sweep")
    assert run(config, "show", "sweep") == 2
    assert capsys.readouterr().err == "headnode: job name 'sweep' is ambiguous: jobs 1, 2 have it; use the job id instead.\n"


def test_an_unknown_job_exits_3_with_one_sentence(store, config, capsys):
    assert run(config, "show", "17") == 3
    assert capsys.readouterr().err == "headnode: job 17 not found: no job has that id; run `headnode queue --all` to list jobs.\n"


# --- queue and show ----------------------------------------------------------------------------------


def test_queue_lists_running_then_pending_by_priority_and_hides_finished_unless_all(store, config, capsys):
    done = new_job(store, config, name="done")
    low = new_job(store, config, name="low")
    high = new_job(store, config, name="high", priority=5)
    running = new_job(store, config, name="running", nodes=2, gpus_per_node=2)
    start(store, done)
    finish(store, done, "SUCCEEDED", "all 2 nodes exited 0")
    start(store, running)
    with store.tx():
        store.execute("UPDATE jobs SET metrics = ? WHERE id = ?", (dumps({"step": 7, "loss": 2.5}), running))

    assert run(config, "queue", "--json") == 0
    rows = out_json(capsys)
    assert [r["id"] for r in rows] == [running, high, low]
    assert rows[0] == {
        "id": running, "name": "running", "state": "RUNNING", "reason": "all 2 nodes started", "nodes": 2,
        "gpus_per_node": 2, "procs_per_node": 2, "priority": 0, "submitted_at": rows[0]["submitted_at"],
        "started_at": rows[0]["started_at"],
        "ended_at": None, "attempt": 1, "step": 7, "loss": 2.5, "user": "alice", "data": None, "hosts": ["h1", "h2"],
        "flags": [],
    }
    assert run(config, "queue", "--all", "--json") == 0
    assert [r["id"] for r in out_json(capsys)] == [running, high, low, done]

    assert run(config, "queue") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATE", "NODES", "GPUS", "AGE", "STEP", "LOSS", "HOSTS", "REASON"]
    assert lines[1].split()[:3] == [str(running), "running", "RUNNING"] and "h1,h2" in lines[1]


def test_an_empty_queue_says_so(config, capsys):
    assert run(config, "queue") == 0
    assert "no pending or running jobs" in capsys.readouterr().out


def test_show_json_has_placement_ports_exit_codes_attempts_metrics_and_events(store, config, capsys):
    job_id = new_job(store, config, name="fit", nodes=2, gpus_per_node=2, retries=1, command=["python", "fit.py"])
    for _ in range(2):  # the first failure is retried, the second is final
        start(store, job_id)
        finish(store, job_id, "FAILED", "node 1 (h2) exited 1", exit_codes=(0, 1))
    with store.tx():
        store.execute("UPDATE jobs SET metrics = ? WHERE id = ?", (dumps({"step": 3, "loss": 4.0}), job_id))

    assert run(config, "show", "fit", "--json") == 0
    doc = out_json(capsys)
    assert {k: doc[k] for k in ("id", "name", "state", "reason", "attempt", "data", "metrics", "command", "retries")} == {
        "id": job_id, "name": "fit", "state": "FAILED", "reason": "node 1 (h2) exited 1; verified: no process left on h1, h2",
        "attempt": 2, "data": None, "metrics": {"step": 3, "loss": 4.0}, "command": ["python", "fit.py"], "retries": 1,
    }
    assert [{k: n[k] for k in ("host", "node_rank", "gpus", "port", "exit_code")} for n in doc["nodes"]] == [
        {"host": "h1", "node_rank": 0, "gpus": [0, 1], "port": 29500, "exit_code": 0},
        {"host": "h2", "node_rank": 1, "gpus": [0, 1], "port": 29500, "exit_code": 1},
    ]
    assert [(a["attempt"], a["state"], a["verified"], len(a["nodes"])) for a in doc["attempts"]] == [
        (1, "FAILED", True, 2), (2, "FAILED", True, 2)
    ]
    assert [e["what"] for e in doc["events"]] == ["submitted", *["STARTING", "RUNNING", "PENDING"], "STARTING", "RUNNING", "FAILED"]

    assert run(config, "show", str(job_id)) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"job {job_id}  fit  FAILED (attempt 2)\n")
    assert "node 1 (h2) exited 1" in text and "step 3  loss 4" in text


# --- wait ------------------------------------------------------------------------------------------


def test_wait_exits_0_when_the_job_succeeds_while_waiting(store, config, capsys):
    job_id = new_job(store, config)
    start(store, job_id)
    later = threading.Timer(0.5, lambda: _finish_in_thread(config, job_id, "SUCCEEDED", "all 2 nodes exited 0"))
    later.start()
    assert run(config, "wait", str(job_id)) == 0
    later.join()
    assert capsys.readouterr().out == f"job {job_id} SUCCEEDED: all 2 nodes exited 0; verified: no process left on h1, h2\n"


def _finish_in_thread(config: Path, job_id: int, state: str, reason: str) -> None:
    with Store.for_state_dir(config.parent / "state") as s:  # one Store per thread
        finish(s, job_id, state, reason)


@pytest.mark.parametrize("state", ["FAILED", "CANCELLED", "TIMEOUT"])
def test_wait_exits_1_with_state_and_reason_unless_the_job_succeeded(store, config, capsys, state):
    job_id = new_job(store, config)
    start(store, job_id)
    finish(store, job_id, state, "because")
    assert run(config, "wait", str(job_id)) == 1
    assert capsys.readouterr().out == f"job {job_id} {state}: because; verified: no process left on h1, h2\n"


def test_wait_exits_124_when_the_timeout_runs_out_first(store, config, capsys):
    job_id = new_job(store, config)
    assert run(config, "wait", str(job_id), "--timeout", "0.3", "--json") == 124
    captured = capsys.readouterr()
    assert json.loads(captured.out)["state"] == "PENDING"
    assert "no scheduler loop is running" in captured.err


# --- cancel ----------------------------------------------------------------------------------------


def test_cancel_of_a_pending_job_ends_it_at_once_with_who_did_it(store, config, capsys):
    job_id = new_job(store, config)
    assert run(config, "cancel", str(job_id)) == 0
    assert capsys.readouterr().out == f"job {job_id} cancelled before it started\n"
    job = jobs.get(store, job_id)
    assert job.state == "CANCELLED" and job.reason.startswith("cancelled by ") and job.reason.endswith(" before it started")
    assert job.ended_at is not None
    assert [e["what"] for e in jobs.show(store, job_id)["events"]] == ["submitted", "CANCELLED"]


def test_cancel_of_a_running_job_only_flags_it_for_the_loop(store, config):
    job_id = new_job(store, config)
    start(store, job_id)
    assert lifecycle.request_cancel(store, job_id, actor="bob@head") == "RUNNING"
    assert lifecycle.request_cancel(store, job_id, actor="bob@head") == "RUNNING"  # asking twice records it once
    job = jobs.get(store, job_id)
    assert (job.state, job.cancel_requested, job.reason) == (
        "RUNNING", True, "cancel requested by bob@head; stopping every node"
    )
    assert [e["what"] for e in jobs.show(store, job_id)["events"]] == ["submitted", "STARTING", "RUNNING", "cancel requested"]


def test_cancel_waits_for_the_loop_to_verify_and_names_the_hosts(store, config, capsys):
    job_id = new_job(store, config, nodes=2)
    start(store, job_id)
    lease.acquire(store, "loop@head", "foreground", ttl=60)

    def loop_tears_down():
        with Store.for_state_dir(config.parent / "state") as s:
            for _ in range(100):
                if jobs.get(s, job_id).cancel_requested:
                    break
                time.sleep(0.05)
            finish(s, job_id, "CANCELLED", "cancelled by alice", exit_codes=(143, 143))

    loop = threading.Thread(target=loop_tears_down)
    loop.start()
    assert run(config, "cancel", str(job_id)) == 0
    loop.join()
    assert capsys.readouterr().out == f"job {job_id} cancelled; verified: no process left on h1, h2\n"


def test_cancel_that_is_not_verified_in_time_exits_1_and_says_what_is_left(store, config, capsys):
    job_id = new_job(store, config)
    start(store, job_id)
    lease.acquire(store, "loop@head", "foreground", ttl=60)

    def loop_reports():  # the loop's teardown finds a process it cannot stop on h2
        time.sleep(0.3)
        with Store.for_state_dir(config.parent / "state") as s:
            left = Verdict.of([HostReport("h1", found=2), HostReport("h2", found=3, left=("pid 4242 (python)",))])
            lifecycle.note_stopping(s, jobs.get(s, job_id), Ending(AttemptState.CANCELLED, "cancelled by alice"), left)

    t = threading.Thread(target=loop_reports)
    t.start()
    assert run(config, "cancel", str(job_id), "--timeout", "0.8") == 1
    t.join()
    err = capsys.readouterr().err
    assert err.endswith(
        f"job {job_id} is not verified stopped after 0.8 s: still RUNNING, cancelled by alice; stopping: NOT verified:"
        f" h2 still runs pid 4242 (python); no process left on h1; run `headnode show {job_id}` for each node,"
        f" then `headnode cancel {job_id}` again.\n"
    )


def test_cancel_of_several_jobs_checks_every_name_before_cancelling_any(store, config, capsys):
    job_id = new_job(store, config)
    assert run(config, "cancel", str(job_id), "typo") == 3
    assert jobs.get(store, job_id).state == "PENDING"


def test_cancel_of_a_finished_job_changes_nothing(store, config, capsys):
    job_id = new_job(store, config)
    start(store, job_id)
    finish(store, job_id, "SUCCEEDED", "all 2 nodes exited 0")
    assert run(config, "cancel", str(job_id)) == 0
    assert capsys.readouterr().out == (
        f"job {job_id} had already ended: SUCCEEDED, all 2 nodes exited 0; verified: no process left on h1, h2\n"
    )
    assert jobs.get(store, job_id).cancel_requested is False


# --- scheduler status ------------------------------------------------------------------------------


def test_scheduler_status_exits_1_when_no_loop_holds_the_lease(config, capsys):
    assert run(config, "scheduler", "status") == 1
    assert "no scheduler loop has run" in capsys.readouterr().out


def test_scheduler_status_names_the_holder_and_its_last_cycle(store, config, capsys):
    lease.acquire(store, "77@head", "foreground", ttl=30)
    lease.renew(store, "77@head", ttl=30, last_cycle={"started": 1, "pending": 3})
    assert run(config, "scheduler", "status", "--json") == 0
    doc = out_json(capsys)
    assert (doc["running"], doc["holder"], doc["kind"], doc["last_cycle"]) == (True, "77@head", "foreground", {"started": 1, "pending": 3})
    assert run(config, "scheduler", "status") == 0
    text = capsys.readouterr().out
    assert "77@head (foreground) since" in text and "last cycle: pending 3, started 1" in text
