"""The scheduler loop on this machine alone (`localhost`, no SSH): lease, launch, reconcile, teardown.

Real torchrun, real detached processes, a real store; the multi-host behaviour is in
test_loop_cluster.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from scheduler import control, inventory, jobs, launch, lease, lifecycle, loop, teardown
from scheduler.cli import main
from scheduler.execute import Executor
from scheduler.model import AttemptState, Ending, HostReport, NodePlan, Verdict
from scheduler.store import DB_NAME, Store, read_marker

PY = sys.executable
FAST = "\n[scheduler]\ncycle_interval = 0.2\ngrace_period = 1\nlease_ttl = 3\nnode_lost_timeout = 5\n"


@pytest.fixture
def inv(local_config: Path) -> inventory.Inventory:
    # localhost's ports are shared with everything else on this machine: a random range keeps
    # parallel test runs from taking each other's rendezvous port.
    low = random.randrange(20000, 60000, 100)
    local_config.write_text(local_config.read_text() + FAST + f"port_range = [{low}, {low + 99}]\n")
    return inventory.load(local_config)


@pytest.fixture
def store(inv):
    with Store.for_state_dir(inv.state_dir) as s:
        yield s


@pytest.fixture
def sched(inv, store):
    ex = Executor(inv)
    yield loop.Loop(inv, store, ex)
    ex.close()


def submit(store, inv, command, **kw) -> int:
    return jobs.submit(store, inv, jobs.JobSpec(command=list(command), gpus_per_node=0, **kw)).id


def job(store, job_id: int) -> dict:
    return store.one("SELECT * FROM jobs WHERE id = ?", (job_id,))


def cycle_until(sched, store, job_id: int, states, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sched.cycle()
        row = job(store, job_id)
        if row["state"] in states:
            return row
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {row['state']} ({row['reason']}) after {timeout} s")


def run_dir(inv, job_id: int) -> Path:
    """Where the job runs: under the id of the store in inv's state dir (its marker says which)."""
    return Path(launch.run_dir(inv.hosts[0], job_id, read_marker(inv.state_dir / DB_NAME).store_id))


def marked(inv, job_id: int) -> list[int]:
    """Live processes carrying the job's marker, read straight from /proc (not through headnode).
    The run dir keeps other tests' job of the same id (this machine is shared) out of it."""
    want = {f"HEADNODE_JOB_ID={job_id}".encode(), f"HEADNODE_RUN_DIR={run_dir(inv, job_id).resolve()}".encode()}
    pids = []
    for p in os.listdir("/proc"):
        try:
            env = set(Path(f"/proc/{p}/environ").read_bytes().split(b"\0"))
            state = Path(f"/proc/{p}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if want <= env and state != b"Z":
            pids.append(int(p))
    return pids


# --- lease ------------------------------------------------------------------------------------------


def test_a_second_loop_is_told_who_holds_the_lease(store):
    lease.acquire(store, "111@head", "foreground", 30)
    with pytest.raises(lease.LeaseHeld, match=r"another scheduler loop is running: the lease is held by 111@head \(foreground\)"):
        lease.acquire(store, "222@head", "console", 30)


def test_an_expired_lease_is_taken_over_and_its_old_holder_can_no_longer_renew(store):
    lease.acquire(store, "111@head", "foreground", 30, now=1000.0)
    lease.acquire(store, "222@head", "console", 30, now=1031.0)
    assert lease.renew(store, "111@head", 30, now=1032.0) is False
    assert lease.renew(store, "222@head", 30, now=1032.0) is True
    assert lease.current(store).holder == "222@head"


def test_a_released_lease_is_free_at_once_and_keeps_the_last_cycle(store):
    lease.acquire(store, "111@head", "foreground", 30)
    lease.renew(store, "111@head", 30, last_cycle={"started": [4]})
    lease.release(store, "111@head")
    assert lease.active(store) is None
    assert lease.current(store).last_cycle == {"started": [4]}
    lease.acquire(store, "222@head", "foreground", 30)


def test_run_forever_refuses_to_start_beside_another_loop_and_releases_on_stop(inv, store):
    lease.acquire(store, "111@head", "foreground", 30)
    with pytest.raises(lease.LeaseHeld):
        loop.run_forever(inv, kind="console", telemetry=False)
    lease.release(store, "111@head")

    stop = threading.Event()
    t = threading.Thread(target=loop.run_forever, args=(inv,), kwargs={"kind": "console", "stop_event": stop, "telemetry": False})
    t.start()
    deadline = time.monotonic() + 10
    while (lease.active(store) is None or lease.current(store).last_cycle is None) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lease.active(store).kind == "console"
    stop.set()
    t.join(10)
    assert lease.active(store) is None


def scheduler_run(config: Path) -> subprocess.Popen:
    """`headnode scheduler run` in a process of its own, as a user starts it on the head."""
    return subprocess.Popen([PY, "-m", "scheduler", "scheduler", "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip


def held_by(store, proc: subprocess.Popen, timeout: float = 30.0) -> lease.Lease:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        held = lease.active(store)
        if held is not None and held.holder == f"{proc.pid}@{socket.gethostname()}":
            return held
        time.sleep(0.05)
    raise AssertionError(f"the loop {proc.pid} did not take the lease (exit status {proc.poll()})")


@pytest.fixture
def slow_lease(local_config: Path) -> Path:
    """A lease that would take 5 minutes to expire: only the dead holder's pid can free it sooner."""
    low = random.randrange(20000, 60000, 100)
    local_config.write_text(local_config.read_text() + f"\n[scheduler]\nlease_ttl = 300\nport_range = [{low}, {low + 99}]\n")
    return local_config


def test_the_lease_of_a_loop_killed_on_this_machine_is_free_at_once_and_the_takeover_says_why(slow_lease):
    proc = scheduler_run(slow_lease)
    with Store.for_state_dir(inventory.load(slow_lease).state_dir) as store:
        try:
            held_by(store, proc)
        finally:
            proc.kill()
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # dead, and left unreaped
        # A zombie still answers kill(pid, 0), but it runs no loop.
        assert lease.active(store) is None
        proc.wait()
        assert lease.active(store) is None
        lease.acquire(store, "next@head", "foreground", 30)
        event = store.one("SELECT what, reason FROM events WHERE object = 'lease:scheduler' ORDER BY id DESC LIMIT 1")
    holder = f"{proc.pid}@{socket.gethostname()}"
    assert event == {
        "what": "took over a dead holder's lease",
        "reason": f"next@head (foreground) from {holder}: its process {proc.pid} on this machine is gone",
    }


def test_a_live_holder_on_this_machine_and_a_holder_elsewhere_keep_the_lease_until_it_expires(store):
    lease.acquire(store, lease.holder_id(), "console", 30)  # this very process: alive
    assert lease.active(store).holder == lease.holder_id()
    lease.release(store, lease.holder_id())
    lease.acquire(store, "1@another-machine", "foreground", 30)  # its pid means nothing here
    assert lease.active(store).holder == "1@another-machine"


def test_cancel_after_a_loop_killed_on_this_machine_stops_the_job_without_waiting_for_the_lease(slow_lease, capsys):
    inv = inventory.load(slow_lease)
    with Store.for_state_dir(inv.state_dir) as store:
        job_id = submit(store, inv, ["sleep", "300"])
        proc = scheduler_run(slow_lease)
        try:
            held_by(store, proc)
            deadline = time.monotonic() + 60
            while job(store, job_id)["state"] != "RUNNING" and time.monotonic() < deadline:
                time.sleep(0.1)
            assert job(store, job_id)["state"] == "RUNNING"
        finally:
            proc.kill()
            proc.wait()
        assert marked(inv, job_id)
        # Waiting for the 300 s lease would time out at 30 s and exit 1.
        assert main(["cancel", str(job_id), "--config", str(slow_lease), "--timeout", "30"]) == 0
        assert job(store, job_id)["state"] == "CANCELLED"
    assert "no scheduler loop is running; stopping job" in capsys.readouterr().err
    assert marked(inv, job_id) == []


# --- launch: what reaches the processes -------------------------------------------------------------

HOSTILE = "$(touch pwned) `touch pwned2`; rm -rf / ' \" \\ \n*"
ECHO = ("import json, os, sys; json.dump({'argv': sys.argv[1:], 'env': os.environ['EVIL'], "
        "'cvd': os.environ['CUDA_VISIBLE_DEVICES'], 'cwd': os.getcwd()}, open('seen.json', 'w'))")


def test_hostile_env_values_and_arguments_reach_the_job_verbatim_and_no_shell_runs_them(inv, store, sched, tmp_path):
    args = [HOSTILE, "--rdzv-endpoint", "$HOME", "-m"]
    job_id = submit(store, inv, [PY, "-c", ECHO, *args], env={"EVIL": HOSTILE})
    row = cycle_until(sched, store, job_id, {"SUCCEEDED", "FAILED"})
    assert row["state"] == "SUCCEEDED", row["reason"]
    seen = json.loads((run_dir(inv, job_id) / "seen.json").read_text())
    assert seen == {"argv": args, "env": HOSTILE, "cvd": "", "cwd": str(run_dir(inv, job_id))}
    assert not list(tmp_path.rglob("pwned*")) and not list(Path.cwd().glob("pwned*"))


def test_torchrun_gets_the_rendezvous_flags_and_python_commands_run_under_the_hosts_interpreter(inv):
    spec = launch.NodeSpec(
        job_id=7, attempt=2, node_rank=1, nnodes=2, host=inv.hosts[0], gpus=(2, 3), port=29517,
        endpoint="10.0.0.1", command=("python", "-m", "trainer", "--max-steps", "5"),
    )  # fmt: skip
    argv = launch.torchrun_argv(spec)
    assert argv[:3] == [inv.hosts[0].python, "-m", "torch.distributed.run"]
    flags = dict(zip(argv[3:-4:2], argv[4:-4:2]))
    assert flags["--nnodes"] == "2" and flags["--nproc-per-node"] == "2" and flags["--node-rank"] == "1"
    assert flags["--rdzv-endpoint"] == "10.0.0.1:29517" and flags["--rdzv-id"] == "7-2"
    assert flags["--rdzv-conf"] == "is_host=0" and flags["--local-addr"] == "127.0.0.1"
    assert argv[-4:] == ["-m", "trainer", "--max-steps", "5"]
    assert launch.node_env(spec)["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert launch._target(["bash", "-c", "x"]) == ["--no-python", "bash", "-c", "x"]
    assert launch._target(["python3", "train.py", "--lr", "1"]) == ["train.py", "--lr", "1"]


def test_a_cpu_job_with_two_procs_per_node_runs_two_ranks_on_its_one_node(inv, store, sched):
    code = "import os; print('world', os.environ['WORLD_SIZE'], 'local', os.environ['LOCAL_RANK'])"
    job_id = submit(store, inv, [PY, "-c", code], procs_per_node=2)
    row = cycle_until(sched, store, job_id, {"SUCCEEDED", "FAILED"})
    assert row["state"] == "SUCCEEDED", row["reason"]
    text = (run_dir(inv, job_id) / "attempt-1" / "node-0.log").read_text()
    assert sorted(line for line in text.splitlines() if "world" in line) == [
        "[rank0]:world 2 local 0", "[rank1]:world 2 local 1",
    ]  # fmt: skip


def test_a_rendezvous_port_taken_by_another_process_is_skipped_uncharged_and_the_job_succeeds_on_the_next(inv, store, sched):
    low = inv.settings.port_range[0]
    with socket.create_server(("127.0.0.1", low)):  # another user's torchrun, say
        job_id = submit(store, inv, ["true"])
        row = cycle_until(sched, store, job_id, {"SUCCEEDED", "FAILED"})
    assert (row["state"], row["attempt"], row["retries"]) == ("SUCCEEDED", 2, 0), row["reason"]
    attempts = store.query("SELECT attempt, state, reason FROM attempts WHERE job_id = ? ORDER BY attempt", (job_id,))
    assert [(a["attempt"], a["state"]) for a in attempts] == [(1, "ABORTED"), (2, "SUCCEEDED")]
    assert attempts[0]["reason"] == f"port {low} busy on localhost; trying another"
    ports = store.query("SELECT attempt, port FROM job_nodes WHERE job_id = ? ORDER BY attempt", (job_id,))
    assert ports == [{"attempt": 1, "port": low}, {"attempt": 2, "port": low + 1}]
    assert not (run_dir(inv, job_id) / "attempt-1").exists()  # nothing was started for attempt 1
    requeued = store.one("SELECT reason FROM events WHERE object = ? AND what = 'PENDING'", (f"job:{job_id}",))
    assert f"port {low} busy on localhost; trying another" in requeued["reason"]
    # The port stays remembered: the next job does not try it either (the socket is closed by now).
    assert [n.port for p in sched.plan() for n in p.nodes] == []
    second = submit(store, inv, ["true"])
    assert [n.port for p in sched.plan() for n in p.nodes] == [low + 1]
    assert cycle_until(sched, store, second, {"SUCCEEDED", "FAILED"})["attempt"] == 1


def test_the_jobs_env_cannot_override_the_marker(inv):
    spec = launch.NodeSpec(3, 1, 0, 1, inv.hosts[0], (), 29500, "127.0.0.1", ("true",), {"HEADNODE_JOB_ID": "99"})
    assert launch.node_env(spec)["HEADNODE_JOB_ID"] == "3"


# --- the cycle --------------------------------------------------------------------------------------


def test_a_job_succeeds_with_its_exit_code_log_and_newest_metrics_recorded(inv, store, sched):
    code = ("import json; f = open('metrics.jsonl', 'a'); [f.write(json.dumps({'step': s, 'loss': 3.0 - s}) + '\\n') for s in (1, 2)]; "
            "f.write('{\"event\": \"stop\"}\\n'); print('done')")
    job_id = submit(store, inv, [PY, "-c", code])
    row = cycle_until(sched, store, job_id, {"SUCCEEDED", "FAILED"})
    assert (row["state"], row["attempt"]) == ("SUCCEEDED", 1), row["reason"]
    assert row["reason"] == "all 1 nodes exited 0; verified: no process left on localhost"
    assert json.loads(row["metrics"]) == {"step": 2, "loss": 1.0}
    (node,) = store.query("SELECT * FROM job_nodes WHERE job_id = ?", (job_id,))
    assert (node["state"], node["exit_code"]) == ("EXITED", 0)
    text = (run_dir(inv, job_id) / "attempt-1" / "node-0.log").read_text()
    assert node["log_offset"] == len(text.encode()) and "[rank0]:done" in text.splitlines()
    assert store.one("SELECT state FROM attempts WHERE job_id = ?", (job_id,))["state"] == "SUCCEEDED"


def test_a_failing_job_is_retried_then_fails_with_the_node_and_status_in_its_reason(inv, store, sched):
    job_id = submit(store, inv, ["sh", "-c", "exit 3"], retries=1)
    row = cycle_until(sched, store, job_id, {"FAILED", "SUCCEEDED"})
    assert row["state"] == "FAILED" and row["attempt"] == 2
    assert row["reason"].startswith("node 0 on localhost exited with status 1; verified: no process left")
    attempts = store.query("SELECT attempt, state FROM attempts WHERE job_id = ? ORDER BY attempt", (job_id,))
    assert attempts == [{"attempt": 1, "state": "FAILED"}, {"attempt": 2, "state": "FAILED"}]


def test_a_job_over_its_time_limit_is_torn_down_as_timeout(inv, store, sched):
    job_id = submit(store, inv, ["sleep", "300"], time_limit=1.0)
    row = cycle_until(sched, store, job_id, {"TIMEOUT", "FAILED", "SUCCEEDED"})
    assert row["state"] == "TIMEOUT" and row["reason"].startswith("TIMEOUT: ran longer than its time limit of 1 s; verified")
    assert marked(inv, job_id) == []


def test_a_cancel_request_is_acted_on_by_the_loop_only_once_verified(inv, store, sched):
    job_id = submit(store, inv, ["sleep", "300"])
    cycle_until(sched, store, job_id, {"RUNNING"})
    # RUNNING means the node's leader started; its environ can read empty for an instant mid-exec.
    deadline = time.monotonic() + 10
    while not marked(inv, job_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marked(inv, job_id)
    lifecycle.request_cancel(store, job_id, actor="alice@laptop")
    row = cycle_until(sched, store, job_id, {"CANCELLED"})
    assert row["reason"] == "cancelled by alice@laptop; verified: no process left on localhost"
    assert marked(inv, job_id) == []


def test_cancel_without_a_loop_kills_processes_that_ignore_sigterm_and_verifies(inv, store, sched):
    # The job's shell ignores SIGTERM and so does its background child: only SIGKILL ends them.
    job_id = submit(store, inv, ["sh", "-c", "trap '' TERM; sleep 300 & wait; wait"])
    cycle_until(sched, store, job_id, {"RUNNING"})
    deadline = time.monotonic() + 30
    while len(marked(inv, job_id)) < 4 and time.monotonic() < deadline:  # wrapper, torchrun, the shell, sleep
        time.sleep(0.1)
    assert len(marked(inv, job_id)) == 4
    (out,) = control.cancel(store, inv, [job_id], actor="bob@head")
    assert (out.verified, out.state, out.stopped_here, out.left) == (True, "CANCELLED", True, ())
    assert out.reason.startswith("cancelled by bob@head; verified: no process left on localhost (")
    (report,) = out.verdict.reports
    assert (report.host, report.found >= 4, report.killed >= 2) == ("localhost", True, True)
    assert out.sentence() == f"job {job_id} cancelled; {out.verdict.sentence()}"
    assert marked(inv, job_id) == []
    assert lease.active(store) is None


def test_a_cancel_from_here_leaves_the_job_to_a_running_loop(inv, store, sched):
    job_id = submit(store, inv, ["sleep", "300"])
    cycle_until(sched, store, job_id, {"RUNNING"})
    lease.acquire(store, "111@head", "foreground", 30)
    with Executor(inv) as ex:
        assert control.cancel_here(store, ex, inv, job_id, "bob@head") is False
    assert job(store, job_id)["state"] == "RUNNING"


def test_a_new_loop_adopts_a_running_job_and_it_succeeds_exactly_once(inv, store):
    job_id = submit(store, inv, ["sh", "-c", "sleep 2; echo once >> count"])
    with Executor(inv) as ex:
        first = loop.Loop(inv, store, ex)
        first.cycle()
        assert job(store, job_id)["state"] == "RUNNING"
    # The first loop is gone without a word (as after kill -9); a fresh one takes over.
    with Executor(inv) as ex:
        row = cycle_until(loop.Loop(inv, store, ex), store, job_id, {"SUCCEEDED", "FAILED"})
    assert row["state"] == "SUCCEEDED" and row["attempt"] == 1
    assert (run_dir(inv, job_id) / "count").read_text() == "once\n"
    started = store.query("SELECT what FROM events WHERE object = ? AND what = 'STARTING'", (f"job:{job_id}",))
    assert [e["what"] for e in started] == ["STARTING"]


def test_a_node_started_but_not_recorded_is_found_by_its_marker_not_started_again(inv, store, sched, monkeypatch):
    job_id = submit(store, inv, ["sh", "-c", "sleep 2; echo once >> count"])
    real_start = launch.start
    pids = []

    def start_then_die(executor, specs, **kw):
        started = real_start(executor, specs, **kw)
        pids.extend(s.pid for s in started)
        raise KeyboardInterrupt  # the loop dies after the remote start, before recording the pid

    monkeypatch.setattr(launch, "start", start_then_die)
    with pytest.raises(KeyboardInterrupt):
        sched.cycle()
    monkeypatch.setattr(launch, "start", real_start)
    assert store.one("SELECT pid, state FROM job_nodes WHERE job_id = ?", (job_id,)) == {"pid": None, "state": "STARTING"}

    with Executor(inv) as ex:
        again = loop.Loop(inv, store, ex)
        again.cycle()
        assert store.one("SELECT pid FROM job_nodes WHERE job_id = ?", (job_id,))["pid"] == pids[0]
        row = cycle_until(again, store, job_id, {"SUCCEEDED", "FAILED"})
    assert row["state"] == "SUCCEEDED" and row["attempt"] == 1
    assert (run_dir(inv, job_id) / "count").read_text() == "once\n"


def test_a_node_that_never_started_is_requeued_without_charging_a_retry(inv, store, sched, monkeypatch):
    job_id = submit(store, inv, ["true"])
    monkeypatch.setattr(launch, "start", lambda *a, **kw: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        sched.cycle()
    monkeypatch.undo()
    store.execute("UPDATE attempts SET started_at = started_at - ? WHERE job_id = ?", (loop.START_GRACE + 1, job_id))
    row = cycle_until(sched, store, job_id, {"SUCCEEDED", "FAILED"})
    assert (row["state"], row["attempt"], row["retries"]) == ("SUCCEEDED", 2, 0)
    first = store.one("SELECT reason FROM attempts WHERE job_id = ? AND attempt = 1", (job_id,))["reason"]
    assert first == "node 0 on localhost never started (the scheduler stopped while starting it)"


def test_a_new_loop_asks_about_a_node_its_dead_predecessor_was_starting_without_waiting_the_grace(inv, store, monkeypatch):
    job_id = submit(store, inv, ["true"])
    with Executor(inv) as ex:
        dead = loop.Loop(inv, store, ex)
        monkeypatch.setattr(launch, "start", lambda *a, **kw: (_ for _ in ()).throw(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):  # killed between committing the attempt and starting it
            dead.cycle()
        monkeypatch.undo()
        # Only the few seconds a start already sent would take to land, not the whole START_GRACE.
        store.execute("UPDATE attempts SET started_at = started_at - ? WHERE job_id = ?", (loop.ORPHAN_START_GRACE + 1, job_id))
        row = cycle_until(loop.Loop(inv, store, ex), store, job_id, {"SUCCEEDED", "FAILED"})
    assert (row["state"], row["attempt"]) == ("SUCCEEDED", 2)


def test_a_job_whose_starts_never_run_gives_up_after_a_bounded_number_of_tries(inv, store, sched):
    job_id = submit(store, inv, ["true"])
    job = jobs.get(store, job_id)
    for _ in range(lifecycle.MAX_ABORTED + 1):
        plans = [NodePlan(0, "localhost", (), 1, "/nowhere")]
        lifecycle.start_attempt(store, job_id, plans, reason="starting", now=time.time())
        job = jobs.get(store, job_id)
        ended = lifecycle.end_attempt(store, job, Ending(AttemptState.ABORTED, "h1 did not answer"), Verdict.of([HostReport("localhost")]))
    state, reason = ended
    assert state == "FAILED"
    assert reason.startswith(f"FAILED: gave up after {lifecycle.MAX_ABORTED + 1} starts that never ran (the last: h1 did not answer)")


def test_a_host_removed_from_hosts_toml_mid_job_makes_it_node_lost_instead_of_stopping_the_loop(inv, store, sched):
    job_id = submit(store, inv, ["sleep", "300"])
    cycle_until(sched, store, job_id, {"RUNNING"})
    renamed = dataclasses.replace(inv, hosts=(dataclasses.replace(inv.hosts[0], name="elsewhere"),))
    with Executor(renamed) as ex:
        later = loop.Loop(renamed, store, ex, clock=lambda: time.time() + 100)  # past node_lost_timeout
        later.cycle()
    row = job(store, job_id)
    assert row["state"] == "FAILED"
    assert row["reason"] == (
        "NODE_LOST: localhost stopped answering for over 5 s; "
        "NOT verified: localhost did not answer (silent for 100 s: it is no longer in hosts.toml)"
    )
    assert store.one("SELECT state FROM job_nodes WHERE job_id = ?", (job_id,))["state"] == "LOST"


def test_a_dataset_job_waits_for_a_verified_copy_and_gets_its_path_in_headnode_data(inv, store, sched):
    job_id = submit(store, inv, [PY, "-c", "import os; open('data.txt', 'w').write(os.environ['HEADNODE_DATA'])"])
    store.execute("UPDATE jobs SET data = 'wiki@abc123' WHERE id = ?", (job_id,))  # as submit records it
    assert sched.plan() == []  # no copy on any host yet
    store.execute(
        "INSERT INTO data_placements (name, version, host, state, updated_at) VALUES ('wiki', 'abc123', 'localhost', 'verified', 0)"
    )
    row = cycle_until(sched, store, job_id, {"SUCCEEDED", "FAILED"})
    assert row["state"] == "SUCCEEDED", row["reason"]
    assert (run_dir(inv, job_id) / "data.txt").read_text() == inv.hosts[0].path("data", "wiki", "abc123")


def test_a_teardown_longer_than_the_lease_keeps_the_loop_alive_and_the_cancel_verified(local_config):
    # grace_period 6 s > lease_ttl 2 s, and ranks that ignore SIGTERM: the teardown outlives the ttl.
    low = random.randrange(20000, 60000, 100)
    slow = "\n[scheduler]\ncycle_interval = 0.2\ngrace_period = 6\nlease_ttl = 2\nnode_lost_timeout = 30\n"
    local_config.write_text(local_config.read_text() + slow + f"port_range = [{low}, {low + 99}]\n")
    inv = inventory.load(local_config)
    stop = threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            loop.run_forever(inv, kind="foreground", stop_event=stop, telemetry=False)
        except BaseException as e:  # the test reports it below
            failures.append(e)

    with Store.for_state_dir(inv.state_dir) as store:
        job_id = submit(store, inv, ["sh", "-c", "trap '' TERM; sleep 300 & wait; wait"])
        t = threading.Thread(target=run, daemon=True)
        t.start()
        try:
            deadline = time.monotonic() + 60
            while len(marked(inv, job_id)) < 4 and time.monotonic() < deadline:  # wrapper, torchrun, shell, sleep
                time.sleep(0.1)
            (out,) = control.cancel(store, inv, [job_id], actor="bob@head", timeout=60)
            assert (out.state, out.verified, out.stopped_here) == ("CANCELLED", True, False)
            assert out.verdict.reports[0].killed >= 1  # SIGTERM was ignored: SIGKILL after the grace
            assert t.is_alive() and failures == []
            assert lease.active(store) is not None and lease.active(store).kind == "foreground"
        finally:
            stop.set()
            t.join(30)
    assert failures == [] and marked(inv, job_id) == []


def test_scheduler_run_waits_for_a_cancel_that_holds_the_lease(inv, store):
    lease.acquire(store, f"{os.getpid()}@{socket.gethostname()}/cancel", "cancel", 30)
    releaser = threading.Timer(1.0, lambda: _release(inv, f"{os.getpid()}@{socket.gethostname()}/cancel"))
    releaser.start()
    stop = threading.Event()
    heard: list[str] = []
    t = threading.Thread(
        target=loop.run_forever, args=(inv,),
        kwargs={"stop_event": stop, "telemetry": False, "on_wait": lambda held: heard.append(held.kind)},
        daemon=True,
    )
    t.start()
    deadline = time.monotonic() + 30
    while (lease.active(store) is None or lease.active(store).kind != "foreground") and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    t.join(30)
    releaser.join()
    assert heard == ["cancel"]


def _release(inv, holder: str) -> None:
    with Store.for_state_dir(inv.state_dir) as s:
        lease.release(s, holder)
