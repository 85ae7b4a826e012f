"""Execution: argv reaches hosts verbatim, stdin and env travel intact, dead hosts cost only their own
timeout. Local and real SSH hosts go through the same interface."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from scheduler import inventory
from scheduler.execute import Executor
from tests.support import existing_store

HOSTILE = ["a; touch PWNED", "$(touch PWNED)", "`touch PWNED`", "it's \"quoted\"", "x\ny", "*", "~"]
ECHO_ARGS = "import sys, json; print(json.dumps(sys.argv[1:]))"
ECHO_STDIN = "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"


@pytest.fixture
def local(tmp_path):
    inv = inventory.default_inventory(tmp_path / "state")
    with Executor(inv) as ex:
        yield ex, inv.hosts[0]


@pytest.fixture
def remote(cluster_config):
    inv = inventory.load(cluster_config)
    with Executor(inv, connect_timeout=3) as ex:
        yield ex, inv


def test_hostile_arguments_arrive_verbatim_on_localhost(local, tmp_path):
    ex, host = local
    r = ex.python(host, ECHO_ARGS, HOSTILE)
    assert r.ok and r.stdout.strip() == __import__("json").dumps(HOSTILE)
    assert not list(tmp_path.rglob("PWNED"))


def test_hostile_arguments_and_env_values_arrive_verbatim_over_ssh(remote, tmp_path):
    ex, inv = remote
    host = inv.hosts[0]
    code = "import os, sys, json; print(json.dumps([sys.argv[1:], os.environ['HN_TEST']]))"
    r = ex.python(host, code, HOSTILE, env={"HN_TEST": HOSTILE[0]})
    assert r.ok, r.reason
    assert __import__("json").loads(r.stdout) == [HOSTILE, HOSTILE[0]]
    assert not list(tmp_path.rglob("PWNED"))


def test_large_utf8_stdin_round_trips_quickly_over_ssh(remote):
    ex, inv = remote
    data = ("héllo wörld ✓ " * 8000)[:100_000]
    r = ex.python(inv.hosts[0], ECHO_STDIN, input=data, timeout=20)
    assert r.ok and r.stdout == data


def test_a_local_timeout_kills_the_whole_process_group(local, tmp_path):
    ex, host = local
    flag = tmp_path / "survived"
    r = ex.run(host, ["sh", "-c", f"(sleep 1.5; touch {flag}) & sleep 30"], timeout=0.5)
    assert (r.ok, r.exit_code, r.error) == (False, None, "timed out after 0.5 s")
    time.sleep(2)
    assert not flag.exists()


def test_a_missing_program_is_exit_127_not_an_exception(local):
    ex, host = local
    r = ex.run(host, ["no-such-program-xyz"])
    assert (r.ok, r.exit_code, r.error) == (False, 127, None)


def test_a_cut_host_costs_its_own_timeout_and_the_others_answer(remote, cluster):
    ex, inv = remote
    ex.run_many(inv.hosts, ["true"])  # connections open and cached, as in a running loop
    cluster.cut(inv.hosts[1].name)
    t0 = time.monotonic()
    results = ex.run_many(inv.hosts, ["hostname"], timeout=3)
    elapsed = time.monotonic() - t0
    cluster.heal(inv.hosts[1].name)
    assert [results[h.name].ok for h in inv.hosts] == [True, False, True]
    assert results[inv.hosts[1].name].error.startswith(("unreachable", "timed out"))
    assert elapsed < 3 + 5  # one timeout (+ slack for a loaded machine), not one per host in sequence
    assert ex.run(inv.hosts[1], ["true"], timeout=10).ok  # reconnects once healed


def test_a_stream_yields_lines_as_they_come_and_close_ends_it(remote):
    ex, inv = remote
    code = "import sys, time\nfor i in range(3): print(i, flush=True)\ntime.sleep(60)"
    s = ex.stream(inv.hosts[0], [inv.hosts[0].python, "-c", code], read_timeout=20)
    it = iter(s)
    assert [next(it), next(it), next(it)] == ["0", "1", "2"]
    s.close()


def test_a_module_file_in_the_working_directory_does_not_shadow_the_standard_library(local, tmp_path, monkeypatch):
    ex, host = local
    (tmp_path / "json.py").write_text("raise SystemExit('shadowed')\n")
    monkeypatch.chdir(tmp_path)
    r = ex.python(host, "import json; print(json.dumps([1]))")
    assert (r.ok, r.stdout.strip()) == (True, "[1]")


# --- a host that takes the TCP connection and never speaks SSH -----------------------------------------

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def mute(tmp_path):
    """A listener on 127.0.0.1 that never accepts: the kernel completes every TCP handshake into its
    backlog and nothing ever answers, as with a SIGSTOPped or swamped sshd. Yields a hosts.toml."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    known = tmp_path / "known_hosts"
    known.touch()
    config = tmp_path / "hosts.toml"
    config.write_text(
        f'[cluster]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[[hosts]]\nname = "mute"\naddress = "127.0.0.1"\nport = {srv.getsockname()[1]}\nknown_hosts = "{known}"\n'
    )
    existing_store(config)
    yield config, srv.getsockname()[1]
    srv.close()


def _transports() -> set:
    import paramiko

    return {t for t in threading.enumerate() if isinstance(t, paramiko.Transport) and t.is_alive()}


def test_a_host_that_never_sends_its_ssh_banner_is_reported_as_such_and_leaves_no_transport_behind(mute):
    config, port = mute
    inv = inventory.load(config)
    before = _transports()
    with Executor(inv, connect_timeout=1.5) as ex:
        r = ex.run(inv.hosts[0], ["true"], timeout=30)
        assert (r.ok, r.exit_code) == (False, None)
        assert r.error == f"no SSH banner from 127.0.0.1:{port} within 1.5 s (sshd hung or overloaded?)"
    left = _transports() - before
    for t in left:
        t.join(10)  # closed: it ends at its next 0.1 s socket poll (paramiko's own wait would be 15 s)
    assert not [t for t in left if t.is_alive()]


# A child process: the CLI's situation, where no logging is configured and Python's last-resort handler
# would print paramiko's records on stderr. It waits for every paramiko transport thread to end, so a
# traceback logged when a leftover thread's banner wait runs out would be seen.
RUN_AND_WAIT = """
import sys, threading
import paramiko
from scheduler import inventory
from scheduler.execute import Executor
inv = inventory.load(sys.argv[1])
with Executor(inv, connect_timeout=1.5) as ex:
    print(ex.run(inv.hosts[0], ["true"]).error)
for t in threading.enumerate():
    if isinstance(t, paramiko.Transport):
        t.join(30)
"""


def _child(*argv: str, debug: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HEADNODE_DEBUG"}
    env["PYTHONPATH"] = str(REPO)
    if debug:
        env["HEADNODE_DEBUG"] = "1"
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)


def _assert_quiet(stderr: str) -> None:
    assert "Traceback" not in stderr
    assert "paramiko" not in stderr and "Exception (client)" not in stderr and "SSH protocol banner" not in stderr


def test_paramiko_writes_nothing_to_stderr_when_a_host_never_sends_its_banner(mute):
    config, port = mute
    r = _child("-c", RUN_AND_WAIT, str(config))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"no SSH banner from 127.0.0.1:{port} within 1.5 s (sshd hung or overloaded?)"
    _assert_quiet(r.stderr)
    assert r.stderr == ""


def test_with_headnode_debug_paramikos_log_goes_to_the_state_dir_and_not_to_stderr(mute, tmp_path):
    config, _ = mute
    r = _child("-c", RUN_AND_WAIT, str(config), debug=True)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    debug_log = (tmp_path / "state" / "ssh-debug.log").read_text()
    assert "paramiko.transport" in debug_log and "Local version/idstring" in debug_log


def test_hosts_probe_of_a_host_without_a_banner_gives_the_banner_sentence_and_no_traceback(mute):
    config, port = mute
    r = _child("-m", "scheduler", "hosts", "probe", "--timeout", "2", "--config", str(config))
    assert r.returncode == 1
    assert r.stderr == f"mute: no SSH banner from 127.0.0.1:{port} within 2 s (sshd hung or overloaded?)\n"
    _assert_quiet(r.stderr)


@pytest.fixture
def listener(tmp_path):
    """A TCP server on 127.0.0.1 that does `behaviour` with each connection; yields (config, port)."""
    servers = []

    def make(behaviour: str):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        servers.append(srv)

        def serve():
            while True:
                try:
                    c, _ = srv.accept()
                except OSError:
                    return
                if behaviour == "close":
                    c.close()
                else:
                    c.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")  # a banner, then silence
                    servers.append(c)

        threading.Thread(target=serve, daemon=True).start()
        known = tmp_path / "known_hosts"
        known.touch()
        config = tmp_path / f"{behaviour}.toml"
        config.write_text(
            f'[cluster]\nstate_dir = "{tmp_path / "state"}"\n'
            f'[[hosts]]\nname = "h"\naddress = "127.0.0.1"\nport = {srv.getsockname()[1]}\nknown_hosts = "{known}"\n'
        )
        return config, srv.getsockname()[1]

    yield make
    for s in servers:
        s.close()


def _error(config, connect_timeout: float = 1.5) -> str:
    inv = inventory.load(config)
    with Executor(inv, connect_timeout=connect_timeout) as ex:
        return ex.run(inv.hosts[0], ["true"]).error


def test_a_server_that_closes_before_its_banner_is_reported_closed_not_timed_out(listener):
    config, port = listener("close")
    assert _error(config) == (
        f"unreachable: 127.0.0.1:{port} closed the connection before sending an SSH banner"
        " (sshd at its MaxStartups limit, or no SSH server on that port?)"
    )


def test_a_server_that_stalls_after_its_banner_is_reported_as_a_key_exchange_that_did_not_finish(listener):
    config, port = listener("stall")
    assert _error(config) == f"SSH key exchange with 127.0.0.1:{port} did not finish within 1.5 s (sshd hung or overloaded?)"


def test_a_closed_port_is_reported_refused(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # bound, never listened: nothing listens there now
    config = tmp_path / "hosts.toml"
    config.write_text(f'[cluster]\nstate_dir = "{tmp_path / "state"}"\n[[hosts]]\nname = "h"\naddress = "127.0.0.1"\nport = {port}\n')
    assert _error(config) == f"unreachable: 127.0.0.1:{port} refused the connection (is sshd running there, on that port?)"
