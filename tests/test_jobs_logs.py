"""`headnode logs`: real log files in the run-dir layout of launch.py, read on localhost and over SSH
on the namespace cluster; merged, prefixed with node and rank, filtered, and followed to the end."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from scheduler import inventory, jobs, lifecycle, logs
from scheduler.cli import main
from scheduler.execute import Executor
from scheduler.model import AttemptState, Ending, HostReport, NodePlan, Verdict
from scheduler.store import Store

NODE0 = ["[rank0]:step 1 loss 4.2", "[rank1]:step 1 loss 4.3", "torchrun: all workers started"]
NODE1 = ["[rank2]:step 1 loss 4.1", "[rank3]:$(touch pwned) `id` stays text"]
MERGED = [
    "[node 0 rank 0] step 1 loss 4.2",
    "[node 0 rank 1] step 1 loss 4.3",
    "[node 0] torchrun: all workers started",
    "[node 1 rank 2] step 1 loss 4.1",
    "[node 1 rank 3] $(touch pwned) `id` stays text",
]


@pytest.fixture
def local(tmp_path: Path) -> Path:
    """This machine as two hosts (both run locally), each with its own workdir."""
    path = tmp_path / "hosts.toml"
    path.write_text(
        '[cluster]\nstate_dir = "state"\n'
        + "".join(f'[[hosts]]\nname = "{h}"\naddress = "localhost"\nworkdir = "{tmp_path / h}"\n' for h in ("l0", "l1"))
    )
    return path


def launch(config: Path, hosts: list[str], *, attempt: int = 1, job_id: int | None = None) -> tuple[int, list[Path]]:
    """Submit (unless job_id) and start an attempt through lifecycle.py, as the loop does (a running
    attempt is requeued first); returns the log file paths (the namespace hosts share this
    filesystem, so the test writes their files directly)."""
    inv = inventory.load(config)
    with Store.for_state_dir(inv.state_dir) as store:
        if job_id is None:
            job_id = jobs.submit(store, inv, jobs.JobSpec(nodes=len(hosts))).id
        job = jobs.get(store, job_id)
        if job.active:
            _end(store, job, AttemptState.ABORTED)
        plans = [NodePlan(rank, name, (), 29500, inv.host(name).path("runs", str(job_id))) for rank, name in enumerate(hosts)]
        assert lifecycle.start_attempt(store, job_id, plans, reason="starting", now=time.time()) == attempt
        lifecycle.mark_running(store, job_id, attempt, "running")
        paths = []
        for p in plans:
            log = Path(p.run_dir) / f"attempt-{attempt}" / f"node-{p.node_rank}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.touch()
            paths.append(log)
    return job_id, paths


def write(path: Path, lines: list[str]) -> None:
    with path.open("a") as f:
        f.write("".join(line + "\n" for line in lines))


def exited(path: Path, code: int = 0) -> None:
    path.with_suffix(".exit").write_text(f"{code}\n")


def end(config: Path, job_id: int, state: str = "SUCCEEDED") -> None:
    with Store.for_state_dir(inventory.load(config).state_dir) as store:
        _end(store, jobs.get(store, job_id), AttemptState(state))


def _end(store: Store, job, state: AttemptState) -> None:
    hosts = dict.fromkeys(n.host for n in jobs.nodes(store, job.id, job.attempt))
    assert lifecycle.end_attempt(store, job, Ending(state, "ended by the test"), Verdict.of([HostReport(h) for h in hosts]))


def cli(config: Path, *argv: str) -> int:
    return main(["--config", str(config), "logs", *argv])


# --- one-shot reads --------------------------------------------------------------------------------


def test_logs_are_merged_node_by_node_with_node_and_rank_prefixes(local, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job_id, (log0, log1) = launch(local, ["l0", "l1"])
    write(log0, NODE0)
    write(log1, NODE1)
    assert cli(local, str(job_id)) == 0
    assert capsys.readouterr().out.splitlines() == MERGED
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--node", "1"], MERGED[3:]),
        (["--rank", "1"], [MERGED[1]]),
        (["--node", "0", "--rank", "3"], []),
    ],
)
def test_logs_filter_by_node_and_by_global_rank(local, capsys, argv, expected):
    job_id, (log0, log1) = launch(local, ["l0", "l1"])
    write(log0, NODE0)
    write(log1, NODE1)
    assert cli(local, str(job_id), *argv) == 0
    assert capsys.readouterr().out.splitlines() == expected


def test_a_missing_log_is_reported_and_the_other_nodes_still_shown(local, capsys):
    job_id, (log0, log1) = launch(local, ["l0", "l1"])
    write(log0, NODE0)
    log1.unlink()
    assert cli(local, str(job_id)) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == MERGED[:3]
    assert captured.err.startswith(f"headnode: node 1 (l1): no log yet at {log1}")


def test_an_earlier_attempt_is_read_with_attempt(local, capsys):
    job_id, (first,) = launch(local, ["l0"])
    write(first, ["[rank0]:first try"])
    _, (second,) = launch(local, ["l0"], attempt=2, job_id=job_id)
    write(second, ["[rank0]:second try"])
    assert cli(local, str(job_id)) == 0
    assert capsys.readouterr().out == "[node 0 rank 0] second try\n"
    assert cli(local, str(job_id), "--attempt", "1") == 0
    assert capsys.readouterr().out == "[node 0 rank 0] first try\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "has no logs yet: it is PENDING"),
        (["--node", "1"], "has no node 1: its nodes are 0..0"),
        (["--attempt", "1"], "has no attempt 1"),
    ],
)
def test_logs_of_what_does_not_exist_is_one_sentence(local, capsys, argv, message):
    inv = inventory.load(local)
    with Store.for_state_dir(inv.state_dir) as store:
        job_id = jobs.submit(store, inv, jobs.JobSpec()).id
    assert cli(local, str(job_id), *argv) == 2
    assert message in capsys.readouterr().err


# --- following -------------------------------------------------------------------------------------


class Follower:
    """logs.follow in a thread of its own (one Store per thread), collecting lines and warnings."""

    def __init__(self, config: Path, job_id: int, **kw):
        self.lines: list[str] = []
        self.warnings: list[str] = []
        self.thread = threading.Thread(target=self._run, args=(config, job_id, kw), daemon=True)
        self.thread.start()

    def _run(self, config, job_id, kw):
        inv = inventory.load(config)
        with Store.for_state_dir(inv.state_dir) as store, Executor(inv) as ex:
            for line in logs.follow(store, ex, inv, job_id, poll=0.1, warn=self.warnings.append, **kw):
                self.lines.append(str(line))

    def wait_for(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.lines) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.lines) >= n, self.lines

    def join(self, timeout: float = 30.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "follow did not end"


def test_follow_prints_lines_as_written_and_ends_when_the_job_has_ended_and_logs_drained(local):
    job_id, (log0, log1) = launch(local, ["l0", "l1"])
    f = Follower(local, job_id)
    write(log0, NODE0[:1])
    f.wait_for(1)  # printed while the job runs
    write(log1, NODE1)
    write(log0, NODE0[1:])
    for log in (log0, log1):
        exited(log)
    end(local, job_id)
    f.join()
    assert sorted(f.lines) == sorted(MERGED)
    assert [line for line in f.lines if line.startswith("[node 0")] == MERGED[:3]  # each node in order


def test_follow_waits_for_a_pending_job_and_goes_on_across_attempts(local):
    inv = inventory.load(local)
    with Store.for_state_dir(inv.state_dir) as store:
        job_id = jobs.submit(store, inv, jobs.JobSpec()).id
    f = Follower(local, job_id, rank=0)
    time.sleep(0.3)
    _, (first,) = launch(local, ["l0"], job_id=job_id)
    write(first, ["[rank0]:first try", "torchrun: worker failed"])
    exited(first, 1)
    f.wait_for(1)
    _, (second,) = launch(local, ["l0"], attempt=2, job_id=job_id)
    write(second, ["[rank0]:second try"])
    exited(second)
    end(local, job_id)
    f.join()
    assert f.lines == ["[node 0 rank 0] first try", "[node 0 rank 0] second try"]
    assert f.warnings == [f"job {job_id} is PENDING (waiting for resources); its logs follow once it starts", "attempt 2 started"]


def test_follow_ends_when_the_job_ends_even_if_a_node_never_wrote_its_exit_file(local):
    job_id, (log0,) = launch(local, ["l0"])
    f = Follower(local, job_id)
    write(log0, ["[rank0]:killed before it could say goodbye"])
    f.wait_for(1)
    end(local, job_id, "CANCELLED")  # the wrapper was SIGKILLed: no exit file
    f.join(timeout=logs.DRAIN_GRACE + 10)
    assert f.lines == ["[node 0 rank 0] killed before it could say goodbye"]


# --- over SSH on the namespace cluster ---------------------------------------------------------------


def test_logs_of_a_two_host_job_are_read_and_followed_over_ssh(cluster, cluster_config, capsys):
    job_id, (log0, log1) = launch(cluster_config, [cluster.hosts[0].name, cluster.hosts[1].name])
    write(log0, NODE0)
    assert cli(cluster_config, str(job_id), "--node", "0") == 0
    assert capsys.readouterr().out.splitlines() == MERGED[:3]

    f = Follower(cluster_config, job_id)
    f.wait_for(3)
    write(log1, NODE1)
    f.wait_for(5)
    for log in (log0, log1):
        exited(log)
    end(cluster_config, job_id)
    f.join()
    assert f.lines == MERGED
    assert cli(cluster_config, str(job_id)) == 0
    assert capsys.readouterr().out.splitlines() == MERGED


def test_an_abandoned_follow_leaves_no_reader_running_on_the_host(cluster, cluster_config):
    host = cluster.hosts[2].name
    job_id, (log0,) = launch(cluster_config, [host])
    write(log0, ["[rank0]:hello"])
    inv = inventory.load(cluster_config)
    with Store.for_state_dir(inv.state_dir) as store, Executor(inv) as ex:
        lines = logs.follow(store, ex, inv, job_id, poll=0.1)
        assert str(next(lines)) == "[node 0 rank 0] hello"
        assert _readers(cluster, host, log0)
        lines.close()  # the user pressed Ctrl-C: the generator closes its streams
    deadline = time.monotonic() + 10
    while _readers(cluster, host, log0) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _readers(cluster, host, log0)


def _readers(cluster, host: str, log: Path) -> list[int]:
    out = []
    for pid in cluster.pids(host):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(log).encode() in cmdline:
            out.append(pid)
    return out


def test_a_follow_ends_when_the_job_ends_though_a_host_was_cut_mid_follow(cluster, cluster_config):
    node0, node1 = cluster.hosts[0].name, cluster.hosts[1].name
    job_id, (log0, log1) = launch(cluster_config, [node0, node1])
    f = Follower(cluster_config, job_id)
    write(log0, NODE0[:1])
    write(log1, NODE1[:1])
    f.wait_for(2)
    cluster.cut(node1)
    try:
        write(log0, NODE0[1:2])
        f.wait_for(3)
        exited(log0)
        end(cluster_config, job_id, "FAILED")  # the loop's verdict: NODE_LOST
        f.join(timeout=logs.DRAIN_GRACE + 20)
    finally:
        cluster.heal(node1)
    assert sorted(f.lines) == sorted([MERGED[0], MERGED[1], MERGED[3]])


# --- what reaches the terminal -------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
HOSTILE_LINE = "[rank0]:\x1b[2J\x1b]0;owned\x07red\x00nul\ttab \x9b31m c1"
ESCAPED_LINE = "[node 0 rank 0] \\x1b[2J\\x1b]0;owned\\x07red\\x00nul\ttab \\x9b31m c1"
RAW_LINE = "[node 0 rank 0] \x1b[2J\x1b]0;owned\x07red\x00nul\ttab \x9b31m c1"


def on_a_terminal(*argv: str) -> tuple[int, str]:
    """Run `headnode ARGV` in a child whose stdout is a pseudo-terminal; returns (exit code, what it
    wrote there, with the terminal's CRLF line ends turned back into LF)."""
    import os
    import pty
    import subprocess
    import sys

    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "scheduler", *argv], stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=subprocess.PIPE, cwd=REPO, env=env)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    proc.stderr.read()
    return proc.wait(timeout=60), out.decode().replace("\r\n", "\n")


def test_logs_on_a_terminal_show_escape_nul_and_c1_controls_as_escapes_and_keep_tabs(local):
    job_id, (log0,) = launch(local, ["l0"])
    write(log0, [HOSTILE_LINE, "[rank0]:plain"])
    code, out = on_a_terminal("--config", str(local), "logs", str(job_id))
    assert code == 0
    assert out.splitlines() == [ESCAPED_LINE, "[node 0 rank 0] plain"]
    assert "\x1b" not in out and "\x00" not in out


def test_logs_piped_or_with_raw_pass_the_output_through_as_written(local, capsys, monkeypatch):
    job_id, (log0,) = launch(local, ["l0"])
    write(log0, [HOSTILE_LINE])
    assert cli(local, str(job_id)) == 0  # capsys: stdout is not a terminal, as in `headnode logs 1 | less -R`
    assert capsys.readouterr().out == RAW_LINE + "\n"
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert cli(local, str(job_id), "--raw") == 0
    assert capsys.readouterr().out == RAW_LINE + "\n"


def test_a_followed_log_on_a_terminal_is_escaped_by_the_same_rule(local, capsys, monkeypatch):
    job_id, (log0,) = launch(local, ["l0"])
    write(log0, [HOSTILE_LINE])
    exited(log0)
    end(local, job_id)
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert cli(local, str(job_id), "-f") == 0
    assert capsys.readouterr().out == ESCAPED_LINE + "\n"
    assert cli(local, str(job_id), "-f", "--raw") == 0
    assert capsys.readouterr().out == RAW_LINE + "\n"
