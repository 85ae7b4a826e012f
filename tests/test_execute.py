"""Execution: argv reaches hosts verbatim, stdin and env travel intact, dead hosts cost only their own
timeout. Local and real SSH hosts go through the same interface."""

from __future__ import annotations

import time

import pytest

from scheduler import inventory
from scheduler.execute import Executor

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
