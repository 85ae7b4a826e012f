"""Telemetry on this machine alone (`localhost`, sampled in-process): the collector, `top`, the
Prometheus export, and attribution flags."""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from scheduler import cli, inventory
from scheduler.hosts import sync_inventory
from scheduler.store import Store, loads
from scheduler.telemetry import prometheus
from scheduler.telemetry.attribution import FOREIGN, STALE, attribute
from scheduler.telemetry.collector import Collector
from scheduler.telemetry.ingest import Received, ingest

FAST = "\n[telemetry]\ninterval = 0.2\ndown_after = 3.0\n"


@pytest.fixture
def inv(local_config: Path) -> inventory.Inventory:
    local_config.write_text(local_config.read_text() + FAST)
    return inventory.load(local_config)


@pytest.fixture
def store(inv):
    with Store.for_state_dir(inv.state_dir) as s:
        yield s


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(list(argv))
    return code, out.getvalue()


def wait_for(check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    pytest.fail("timed out")


def test_the_collector_samples_localhost_in_process_and_marks_it_up(inv, store):
    marked = subprocess.Popen(["sleep", "60"], env={**os.environ, "HEADNODE_JOB_ID": "5"})
    try:
        with Collector(inv) as c:
            wait_for(lambda: (store.one("SELECT state FROM hosts WHERE name = 'localhost'") or {}).get("state") == "up")
            wait_for(lambda: store.one("SELECT count(*) AS n FROM samples")["n"] >= 2)
            assert c._threads[0].name == "telemetry-localhost"  # no subprocess, no SSH
        host = loads(store.one("SELECT sample FROM latest WHERE host = 'localhost' AND gpu = -1")["sample"])
        assert marked.pid in host["jobs"]["5"]["pids"]
        event = store.one("SELECT what, reason FROM events WHERE object = 'host:localhost'")
        assert event == {"what": "up", "reason": "telemetry streaming"}
    finally:
        marked.kill()
        marked.wait()


def test_top_once_json_samples_the_hosts_itself_when_no_loop_runs(inv):
    code, out = run("top", "--once", "--json", "--config", str(inv.path))
    assert code == 0
    (host,) = json.loads(out)["hosts"]
    assert host["name"] == "localhost" and host["state"] == "up" and host["gpus"] == []
    assert {"cpu_percent", "mem_percent", "load", "disk_used", "jobs"} <= host.keys()


def test_top_once_prints_a_table(inv):
    code, out = run("top", "--once", "--config", str(inv.path))
    header, row = out.splitlines()
    assert code == 0 and header.split()[:4] == ["HOST", "STATE", "CPU", "MEM"]
    assert row.split()[:2] == ["localhost", "up"]


def test_top_without_once_refreshes_until_interrupted(inv):
    """A frame per interval, each with the newest sample: frames keep coming, and before long one
    carries a newer sample (the very next one may repeat the last: the sampler keeps its own pace)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler", "top", "--json", "--interval", "0.3", "--config", str(inv.path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        frames = []
        while not frames or frames[-1]["hosts"][0]["ts"] <= frames[0]["hosts"][0]["ts"]:
            try:
                frames.append(json.loads(lines.get(timeout=max(0.0, deadline - time.monotonic()))))
            except queue.Empty:
                pytest.fail(f"no frame with a newer sample within 60 s ({len(frames)} frames)")
        assert len(frames) >= 2 and {f["hosts"][0]["state"] for f in frames} == {"up"}
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_bad_interval_is_one_sentence(inv, capsys):
    assert cli.main(["top", "--once", "--interval", "0", "--config", str(inv.path)]) == 2
    assert capsys.readouterr().err.startswith("headnode: bad --interval 0: it is below 0.1;")


def test_processes_without_a_live_job_are_flagged():
    gpu = {"index": 0, "processes": [{"pid": 1, "job": "3"}, {"pid": 2, "job": None}, {"pid": 3, "job": "9"}]}
    assert attribute(gpu, {"3"}) == {
        "index": 0,
        "processes": [
            {"pid": 1, "job": "3", "flag": None}, {"pid": 2, "job": None, "flag": FOREIGN}, {"pid": 3, "job": "9", "flag": STALE},
        ],
        "jobs": ["3"],
    }


def gpu_sample() -> dict:
    return {
        "host": {"cpu_percent": 50.0, "mem_percent": 10.0, "mem_used": 10, "mem_total": 100},
        "gpus": [{"index": 0, "name": "NVIDIA H100", "util": 98, "mem_used": 7e10, "mem_total": 8e10, "temp": 60,
                  "power": 600.0, "power_limit": 700.0, "processes": [{"pid": 10, "job": "1"}, {"pid": 11, "job": None}]}],
        "jobs": {"1": {"pids": [10], "cpu_percent": 99.0}},
    }  # fmt: skip


def test_prometheus_exposes_gpu_host_and_job_gauges(inv, store):
    store.execute("INSERT INTO hosts (name, address, state) VALUES ('localhost', 'localhost', 'up')")
    store.execute(
        "INSERT INTO jobs (name, state, command, nodes, gpus_per_node, submitted_at, metrics, flags) "
        """VALUES ('gpt "small"', 'RUNNING', '[]', 1, 1, 0, '{"tokens_per_s": 1234.5, "loss": 2.5, "step": 40}', '["hang"]')"""
    )
    ingest(store, [Received("localhost", time.time(), gpu_sample())])
    text = prometheus.render(store, inv)
    lines = set(text.splitlines())
    assert 'headnode_gpu_utilization_ratio{host="localhost",gpu="0",model="NVIDIA H100"} 0.98' in lines
    assert 'headnode_gpu_memory_used_bytes{host="localhost",gpu="0",model="NVIDIA H100"} 7e+10' in lines
    assert 'headnode_gpu_foreign_processes{host="localhost",gpu="0",model="NVIDIA H100"} 1' in lines
    assert 'headnode_gpu_job_info{host="localhost",gpu="0",model="NVIDIA H100",job="1"} 1' in lines
    assert 'headnode_host_cpu_utilization_ratio{host="localhost"} 0.5' in lines
    assert 'headnode_job_state{job="1",name="gpt \\"small\\"",state="RUNNING"} 1' in lines
    assert 'headnode_job_tokens_per_second{job="1",name="gpt \\"small\\""} 1234.5' in lines
    assert 'headnode_job_flag{job="1",name="gpt \\"small\\"",flag="hang"} 1' in lines
    assert "# TYPE headnode_gpu_power_watts gauge" in lines


def test_metrics_are_served_over_http(inv, store):
    ingest(store, [Received("localhost", time.time(), gpu_sample())])
    server = prometheus.make_server(inv, "127.0.0.1", 0)
    import threading

    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10) as r:
            assert r.headers["Content-Type"] == prometheus.CONTENT_TYPE
            assert "headnode_gpu_utilization_ratio" in r.read().decode()
    finally:
        server.shutdown()
        server.server_close()


def test_metrics_serve_on_a_busy_port_is_one_sentence(inv, store, capsys):  # store: made before, so said before
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert cli.main(["metrics", "serve", "--port", str(port), "--config", str(inv.path)]) == 2
    assert capsys.readouterr().err.startswith(f"headnode: cannot listen on 127.0.0.1:{port}")


def test_a_silent_host_is_marked_down_after_the_timeout_and_up_on_its_next_sample(inv, store):
    c = Collector(inv)  # not started: the test feeds samples and runs the writer's steps itself
    sync_inventory(store, inv)  # as the writer does when it starts
    t0 = time.time()
    c.receive("localhost", gpu_sample(), t0)
    c.tick(store, t0)
    store_state = lambda: store.one("SELECT state, reason FROM hosts WHERE name = 'localhost'")  # noqa: E731
    assert store_state() == {"state": "up", "reason": None}
    c.tick(store, t0 + inv.settings.down_after)  # silent, but not for longer than the timeout
    assert store_state()["state"] == "up"
    c.tick(store, t0 + inv.settings.down_after + 1)
    assert store_state() == {"state": "down", "reason": "no telemetry for 4 s"}
    c.receive("localhost", gpu_sample(), t0 + 10)
    c.tick(store, t0 + 10)
    assert store_state()["state"] == "up"
    events = store.query("SELECT what FROM events WHERE object = 'host:localhost' ORDER BY id")
    assert [e["what"] for e in events] == ["up", "down", "up"]


def test_top_json_gpu_entries_carry_the_design_fields(inv):
    from scheduler.remote.sampler import Sampler
    from scheduler.telemetry.view import from_samples
    from tests.test_telemetry_sampler import FIXTURE, FakeNVML

    sample = Sampler(nvml=FakeNVML(json.loads(FIXTURE.read_text()), pids={41872: os.getpid()})).sample()
    (host,) = from_samples(inv, {"localhost": Received("localhost", time.time(), sample)}, live=set())["hosts"]
    gpu0 = host["gpus"][0]
    assert {"index", "name", "util", "mem_used", "mem_total", "temp", "power", "pstate", "processes"} <= gpu0.keys()
    assert gpu0["processes"] == [{"pid": os.getpid(), "job": None, "mem_used": 70144491520, "flag": "foreign"}]
    assert [g["pstate"] for g in host["gpus"]] == [0, 0, None]
