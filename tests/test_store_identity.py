"""The store's identity: made once and said so, never silently made again where one was; job run dirs
and markers carry it; a loop whose store file vanishes or changes under it stops.

Real files, real CLI, real detached jobs on this machine (`localhost`, as in test_loop_local.py).
"""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from scheduler import control, inventory, jobs, launch, lease, loop
from scheduler.cli import main
from scheduler.execute import Executor
from scheduler.store import DB_NAME, MIGRATIONS, Store, StoreGone, marker_path, read_marker

PY = sys.executable
FAST = "\n[scheduler]\ncycle_interval = 0.2\ngrace_period = 1\nlease_ttl = 3\nnode_lost_timeout = 5\n"
FIX = "headnode store init --force"


def fast(config: Path) -> Path:
    low = random.randrange(20000, 60000, 100)  # localhost's ports are shared: a range of our own
    config.write_text(config.read_text() + FAST + f"port_range = [{low}, {low + 99}]\n")
    return config


@pytest.fixture
def config(local_config: Path) -> Path:
    return fast(local_config)


@pytest.fixture
def inv(config: Path) -> inventory.Inventory:
    return inventory.load(config)


def headnode(capsys, config: Path, *argv: str) -> tuple[int, str, str]:
    rc = main(["--config", str(config), *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def backup(db: Path, to: Path) -> Path:
    """A consistent copy, as `sqlite3 DB .backup` makes while the store is in use."""
    with sqlite3.connect(db) as src, sqlite3.connect(to) as dst:
        src.backup(dst)
    return to


def restore(copy: Path, db: Path) -> None:
    """Put a backup back in place (the store's -wal and -shm are gone with the processes that used them)."""
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    os.replace(copy, db)


def submit(store, inv, command) -> int:
    return jobs.submit(store, inv, jobs.JobSpec(command=list(command), gpus_per_node=0)).id


def state(store, job_id: int) -> str:
    return store.one("SELECT state FROM jobs WHERE id = ?", (job_id,))["state"]


def marked(run_dir: str, job_id: int) -> list[int]:
    """Live processes of job `job_id` whose run dir is `run_dir`, straight from /proc."""
    want = {f"HEADNODE_JOB_ID={job_id}".encode(), f"HEADNODE_RUN_DIR={os.path.realpath(run_dir)}".encode()}
    pids = []
    for p in os.listdir("/proc"):
        try:
            env = set(Path(f"/proc/{p}/environ").read_bytes().split(b"\0"))
            st = Path(f"/proc/{p}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if want <= env and st != b"Z":
            pids.append(int(p))
    return pids


def run_until_running(inv, store, job_id: int, timeout: float = 60.0) -> dict:
    """Cycle a loop of our own (no lease, as test_loop_local's `sched`) until the job runs."""
    with Executor(inv) as ex:
        sched = loop.Loop(inv, store, ex)
        deadline = time.monotonic() + timeout
        while state(store, job_id) != "RUNNING" and time.monotonic() < deadline:
            sched.cycle()
            time.sleep(0.1)
    assert state(store, job_id) == "RUNNING", store.one("SELECT reason FROM jobs WHERE id = ?", (job_id,))
    return store.one("SELECT run_dir FROM job_nodes WHERE job_id = ?", (job_id,))


def wait_for(what, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.05)
    return what()


# --- made once, and said so -------------------------------------------------------------------------


def test_the_first_command_on_a_fresh_state_dir_makes_the_store_and_says_so_once(config, capsys):
    rc, out, err = headnode(capsys, config, "queue")
    db = inventory.load(config).state_dir / DB_NAME
    ident = read_marker(db)
    assert rc == 0 and "no pending or running jobs" in out
    assert err == f"headnode: created a new store at {db} for cluster local (id {ident.store_id})\n"
    assert headnode(capsys, config, "queue")[2] == ""  # said once
    rc, out, _ = headnode(capsys, config, "store", "show", "--json")
    doc = json.loads(out)
    assert (doc["store_id"], doc["cluster"], doc["path"], doc["jobs"]) == (ident.store_id, "local", str(db), 0)
    assert abs(doc["created_at"] - time.time()) < 3600 and len(ident.store_id) == 16


def test_store_init_on_a_fresh_state_dir_makes_it_and_on_a_healthy_one_changes_nothing(config, capsys):
    rc, out, err = headnode(capsys, config, "store", "init")
    ident = read_marker(inventory.load(config).state_dir / DB_NAME)
    assert (rc, err) == (0, "") and out.startswith("created a new store at ") and ident.store_id in out
    for force in ([], ["--force"]):
        rc, out, _ = headnode(capsys, config, "store", "init", *force)
        assert rc == 0 and "nothing changed" in out and ident.store_id in out
    assert read_marker(inventory.load(config).state_dir / DB_NAME) == ident


def test_two_stores_made_at_once_in_one_state_dir_are_one_store(tmp_path):
    ids, errors = [], []

    def open_it():
        try:
            with Store.for_state_dir(tmp_path) as s:
                ids.append((s.id, s.created))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({i for i, _ in ids}) == 1 and sum(created for _, created in ids) == 1
    assert read_marker(tmp_path / DB_NAME).store_id == ids[0][0]


def test_a_store_from_before_identities_gets_one_and_keeps_its_jobs(tmp_path):
    db = tmp_path / DB_NAME
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for m in MIGRATIONS[:3]:
        conn.executescript(m)
    conn.execute("INSERT INTO jobs (name, state, command, nodes, gpus_per_node, submitted_at) VALUES ('old', 'RUNNING', '[]', 1, 0, 0)")
    conn.execute("PRAGMA user_version = 3")
    conn.close()
    with Store(db, cluster="lab") as s:
        assert not s.created and s.identity.cluster == "lab" and len(s.id) == 16
        assert [r["name"] for r in s.query("SELECT name FROM jobs")] == ["old"]
    assert read_marker(db).store_id == s.id
    with Store(db) as again:
        assert again.id == s.id


# --- never made again where one was --------------------------------------------------------------------


@pytest.mark.parametrize("how", ["deleted", "emptied"])
def test_a_deleted_or_emptied_store_is_an_error_with_the_fix_and_a_restored_one_keeps_its_ids(config, capsys, tmp_path, how):
    assert headnode(capsys, config, "submit", "--name", "first", "--", "true")[0] == 0
    db = inventory.load(config).state_dir / DB_NAME
    ident = read_marker(db)
    copy = backup(db, tmp_path / "backup.db")
    if how == "deleted":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        said = "is missing"
    else:
        os.truncate(db, 0)
        said = "is empty (0 bytes)"
    for argv in (["queue"], ["queue", "--all", "--json"], ["scheduler", "status"], ["submit", "--", "true"], ["show", "1"]):
        rc, out, err = headnode(capsys, config, *argv)
        assert (rc, out) == (74, ""), (argv, err)
        assert err.startswith(f"headnode: the store {db} {said}: this state dir held store {ident.store_id} of cluster local")
        assert FIX in err and "jobs still running on hosts are not known to it" in err and err.count("\n") == 1
    assert not db.exists() if how == "deleted" else db.stat().st_size == 0  # nothing was made in its place

    restore(copy, db)
    rc, out, _ = headnode(capsys, config, "submit", "--name", "second", "--", "true")
    assert rc == 0 and "submitted job 2 " in out  # not job 1 again
    assert [r["name"] for r in json.loads(headnode(capsys, config, "queue", "--all", "--json")[1])] == ["first", "second"]


def test_another_stores_file_in_its_place_is_an_error_and_is_left_as_it_was(config, capsys, tmp_path):
    assert headnode(capsys, config, "submit", "--", "true")[0] == 0
    db = inventory.load(config).state_dir / DB_NAME
    ours = read_marker(db)
    with Store(tmp_path / "other" / DB_NAME) as other:
        theirs = other.id
    os.replace(tmp_path / "other" / DB_NAME, db)
    before = db.read_bytes()
    rc, out, err = headnode(capsys, config, "queue")
    assert (rc, out) == (74, "")
    assert err.startswith(f"headnode: the store {db} is another store (store {theirs}, created ")
    assert f"this state dir held store {ours.store_id} of cluster local" in err and FIX in err
    assert db.read_bytes() == before and read_marker(db) == ours
    # --force: this state dir uses the store that is there now.
    rc, out, _ = headnode(capsys, config, "store", "init", "--force")
    assert rc == 0 and out.startswith(f"this state dir now uses the store at {db} (store {theirs}")
    assert headnode(capsys, config, "queue")[0] == 0 and read_marker(db).store_id == theirs


def test_init_force_starts_a_new_store_whose_job_1_runs_apart_from_the_old_job_1(config, capsys, inv):
    headnode(capsys, config, "submit", "--", "true")
    db = inv.state_dir / DB_NAME
    old = read_marker(db).store_id
    db.write_bytes(b"")
    rc, out, err = headnode(capsys, config, "store", "init", "--force")
    new = read_marker(db).store_id
    assert rc == 0 and new != old
    assert out.startswith(f"created a new store at {db} for cluster local (id {new}) (the old files are kept as headnode.db.replaced-")
    host = inv.hosts[0]
    assert launch.run_dir(host, 1, new) != launch.run_dir(host, 1, old)
    assert launch.run_dir(host, 1, new) == host.path("runs", new, "1")


def test_an_unreadable_marker_is_an_error_that_init_force_mends(config, capsys, inv):
    headnode(capsys, config, "queue")
    db = inv.state_dir / DB_NAME
    marker_path(db).write_text("{not json")
    rc, _, err = headnode(capsys, config, "queue")
    assert rc == 74 and "is unreadable" in err and FIX in err
    assert headnode(capsys, config, "store", "init", "--force")[0] == 0
    assert headnode(capsys, config, "queue")[0] == 0


# --- a Store notices its file going -------------------------------------------------------------------


@pytest.mark.parametrize("how, said", [
    ("delete", "was deleted or moved away"),
    ("replace", "was replaced by another file"),
    ("truncate", "was emptied (0 bytes)"),
])  # fmt: skip
def test_a_store_whose_file_goes_under_it_refuses_every_write(tmp_path, how, said):
    db = tmp_path / DB_NAME
    s = Store(db)
    s.check()
    with s.tx():  # something in the WAL
        s.execute("INSERT INTO hosts (name, address) VALUES ('h', 'x')")
    if how == "delete":
        db.unlink()
    elif how == "replace":
        with Store(tmp_path / "x" / DB_NAME):
            pass
        os.replace(tmp_path / "x" / DB_NAME, db)
    else:
        os.truncate(db, 0)
    assert not s.intact()
    with pytest.raises(StoreGone, match=re.escape(f"the store {db} {said} while this process had it open")):
        s.check()
    with pytest.raises(StoreGone):
        with s.tx():
            s.execute("INSERT INTO hosts (name, address) VALUES ('a', 'x')")
    s.close()
    if how == "truncate":  # its close did not copy the WAL into the emptied file
        assert db.stat().st_size == 0


# --- a loop whose store goes ----------------------------------------------------------------------------


def run_loop(inv) -> tuple[threading.Thread, threading.Event, list]:
    """run_forever in a thread, as the console runs it; what it raised lands in the list."""
    stop, raised = threading.Event(), []

    def body():
        try:
            loop.run_forever(inv, kind="console", stop_event=stop, telemetry=False)
        except BaseException as e:  # noqa: BLE001 - the test reads it
            raised.append(e)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t, stop, raised


@pytest.mark.parametrize("how", ["deleted", "emptied", "another store"])
def test_a_loop_whose_store_goes_stops_with_one_sentence_and_the_restored_store_still_knows_its_running_job(
    inv, config, capsys, tmp_path, how
):
    db = inv.state_dir / DB_NAME
    with Store(db) as store:
        job_id = submit(store, inv, ["sleep", "300"])
        run_dir = run_until_running(inv, store, job_id)["run_dir"]
        ident = store.identity
    assert marked(run_dir, job_id)
    copy = backup(db, tmp_path / "backup.db")
    t, stop, raised = run_loop(inv)
    with Store(db) as store:
        assert wait_for(lambda: lease.active(store) and lease.current(store).last_cycle is not None)
    if how == "deleted":
        db.unlink()
    elif how == "emptied":
        os.truncate(db, 0)
    else:
        with Store(tmp_path / "other" / DB_NAME):
            pass
        os.replace(tmp_path / "other" / DB_NAME, db)
    t.join(60)
    stop.set()
    assert not t.is_alive() and len(raised) == 1 and isinstance(raised[0], StoreGone), raised
    sentence = raised[0].sentence()
    assert sentence.startswith(f"the scheduler loop stopped: the store {db} ")
    assert f"it held store {ident.store_id}" in sentence and "the jobs on the hosts keep running" in sentence and FIX in sentence
    assert marked(run_dir, job_id)  # the job was left alone

    rc, out, err = headnode(capsys, config, "queue")
    assert (rc, out) == (74, "") and FIX in err  # never "no jobs"

    restore(copy, db)
    rc, out, _ = headnode(capsys, config, "queue", "--json")
    assert rc == 0 and [(j["id"], j["state"]) for j in json.loads(out)] == [(job_id, "RUNNING")]
    assert main(["--config", str(config), "cancel", str(job_id), "--timeout", "30"]) == 0
    assert marked(run_dir, job_id) == []


def test_scheduler_run_stops_with_the_sentence_and_exit_74_when_its_store_is_deleted(inv, config):
    with Store.for_state_dir(inv.state_dir) as store:
        pass
    proc = subprocess.Popen([PY, "-m", "scheduler", "scheduler", "run", "--config", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        with Store.for_state_dir(inv.state_dir) as store:
            assert wait_for(lambda: lease.active(store) is not None and lease.current(store).last_cycle is not None)
        store.path.unlink()
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 74, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"headnode: the scheduler loop stopped: the store {store.path} was deleted or moved away"), err
    assert FIX in last and "Traceback" not in err


# --- two stores, one host ---------------------------------------------------------------------------------


def test_two_stores_on_one_host_each_with_a_job_1_cancelling_one_leaves_the_other_running(tmp_path, local_config):
    """Two state dirs, one workdir on one host: both number their first job 1."""
    second = tmp_path / "second.toml"
    second.write_text(local_config.read_text().replace(str(tmp_path / "state"), str(tmp_path / "state2")))
    a, b = inventory.load(fast(local_config)), inventory.load(fast(second))
    assert a.hosts[0].workdir == b.hosts[0].workdir and a.state_dir != b.state_dir
    with Store.for_state_dir(a.state_dir) as sa, Store.for_state_dir(b.state_dir) as sb:
        ja, jb = submit(sa, a, ["sleep", "300"]), submit(sb, b, ["sleep", "300"])
        assert ja == jb == 1 and sa.id != sb.id
        dir_a, dir_b = run_until_running(a, sa, ja)["run_dir"], run_until_running(b, sb, jb)["run_dir"]
        assert dir_a == a.hosts[0].path("runs", sa.id, "1") and dir_b == b.hosts[0].path("runs", sb.id, "1")
        env = Path(f"/proc/{marked(dir_a, 1)[0]}/environ").read_bytes().split(b"\0")
        assert f"HEADNODE_STORE={sa.id}".encode() in env
        assert marked(dir_a, 1) and marked(dir_b, 1)

        [outcome] = control.cancel(sa, a, [ja], timeout=30)
        assert outcome.verified, outcome.sentence()
        assert marked(dir_a, 1) == [] and marked(dir_b, 1)  # the other store's job 1 runs on
        with Executor(b) as ex:
            loop.Loop(b, sb, ex).cycle()
        assert state(sb, jb) == "RUNNING"
        [outcome] = control.cancel(sb, b, [jb], timeout=30)
        assert outcome.verified and marked(dir_b, 1) == []


# --- the console ------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_console_says_when_its_store_goes_and_stops_its_embedded_loop(inv):
    from console.app import build_app
    from tests.console_synthetic import screen_text, settle

    with Store.for_state_dir(inv.state_dir):
        pass
    app = build_app(inv)  # runs the loop itself: no other holds the lease
    async with app.run_test(size=(100, 24)) as pilot:
        for _ in range(200):
            await settle(pilot)
            if app.embedded:
                break
        assert app.embedded and "scheduler: embedded" in screen_text(app)
        (inv.state_dir / DB_NAME).unlink()
        for _ in range(200):
            await settle(pilot)
            if app.loop_stopped:
                break
        assert app.loop_stopped.startswith(f"the scheduler loop stopped: the store {inv.state_dir / DB_NAME} was deleted")
        assert not app._loop_thread.is_alive()
        notice = next(n for n in app._notifications if n.title == "scheduler loop stopped")
        assert FIX in notice.message
        assert "STORE GONE: scheduler stopped" in screen_text(app)
