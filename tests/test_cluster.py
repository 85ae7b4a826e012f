"""The namespace cluster itself: real sshd hosts that OpenSSH reaches, that can be cut and healed,
and that leave nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from scheduler import inventory
from tests.cluster import _netns_names, clean_leftovers


def test_openssh_reaches_every_host_in_its_own_namespace(cluster):
    seen = {}
    for h in cluster.hosts:
        r = cluster.ssh(h.name, ["readlink", "/proc/self/ns/net"])
        assert r.returncode == 0, r.stderr
        seen[h.name] = r.stdout.strip()
    assert len(set(seen.values())) == len(cluster.hosts)
    assert os.readlink("/proc/self/ns/net") not in seen.values()


def test_each_host_sees_its_own_address_on_eth0(cluster):
    for h in cluster.hosts:
        r = cluster.ssh(h.name, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
        assert r.returncode == 0, r.stderr
        assert f"inet {h.address}/24" in r.stdout


def test_hosts_reach_each_other_over_the_bridge(cluster):
    # torchrun's rendezvous and gloo connect host to host, not only head to host.
    first, second = cluster.hosts[0], cluster.hosts[1]
    code = f"import socket; socket.create_connection(({second.address!r}, 22), timeout=3).close()"
    r = cluster.ssh(first.name, [sys.executable, "-c", code])
    assert r.returncode == 0, r.stderr


def test_a_cut_host_times_out_and_answers_again_after_heal(cluster):
    name = cluster.hosts[-1].name
    cluster.cut(name)
    try:
        t0 = time.monotonic()
        r = cluster.ssh(name, ["true"], connect_timeout=1, timeout=20)
        assert r.returncode == 255
        assert "timed out" in r.stderr or "No route to host" in r.stderr
        assert time.monotonic() - t0 < 10
        assert cluster.ssh(cluster.hosts[0].name, ["true"]).returncode == 0  # the others stay up
    finally:
        cluster.heal(name)
    assert cluster.ssh(name, ["true"], connect_timeout=5).returncode == 0


def test_pids_finds_a_detached_job_process_and_kill_jobs_ends_it(cluster, tmp_path):
    name = cluster.hosts[1].name
    run_dir = tmp_path / "runs" / "7"
    argv = ["env", "HEADNODE_JOB_ID=7", f"HEADNODE_RUN_DIR={run_dir}", "setsid", "sleep", "300"]
    r = cluster.ssh(name, ["sh", "-c", 'exec "$@" </dev/null >/dev/null 2>&1 &', "sh", *argv])
    assert r.returncode == 0, r.stderr
    pids = _wait_for(lambda: cluster.pids(name, {"HEADNODE_JOB_ID": "7"}))
    assert len(pids) == 1
    assert cluster.pids(cluster.hosts[0].name, {"HEADNODE_JOB_ID": "7"}) == []

    assert cluster.kill_jobs([tmp_path]) == pids
    assert cluster.pids(name, {"HEADNODE_JOB_ID": "7"}) == []


def test_cluster_config_loads_as_an_inventory_of_every_host_with_its_own_workdir(cluster, cluster_config):
    inv = inventory.load(cluster_config)
    assert inv.state_dir == cluster_config.parent / "state"
    assert [(h.name, h.address, h.user, h.gpus, h.network_interface, h.python) for h in inv.hosts] == [
        (h.name, h.address, "root", 2, "eth0", sys.executable) for h in cluster.hosts
    ]
    assert all(h.known_hosts == str(cluster.known_hosts) for h in inv.hosts)
    workdirs = [h.workdir for h in inv.hosts]
    assert len(set(workdirs)) == len(workdirs)
    assert all(w.startswith(str(cluster_config.parent)) for w in workdirs)


def test_a_cluster_left_by_a_killed_run_is_removed_by_the_next_build(cluster):
    code = (
        "import os, signal; from tests.cluster import Cluster; c = Cluster.build(1); "
        "print(c.suffix, c.root, flush=True); os.kill(os.getpid(), signal.SIGKILL)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=os.path.dirname(os.path.dirname(__file__)))
    suffix, root = r.stdout.split()
    assert any(suffix in ns for ns in _netns_names())

    clean_leftovers()

    assert not any(suffix in ns for ns in _netns_names())
    assert not os.path.exists(root)
    assert all(ns in _netns_names() for ns in (h.netns for h in cluster.hosts))  # ours is alive


def test_without_root_cluster_tests_skip_with_the_reason_but_fail_under_ci():
    # An inner pytest run that believes it is not root: a laptop skips, CI must not pass by skipping.
    code = ("import os, sys, pytest; os.geteuid = lambda: 1000; "
            "sys.exit(pytest.main(['-q', '-rs', '-p', 'no:cacheprovider', sys.argv[1]]))")
    target = f"{__file__}::test_each_host_sees_its_own_address_on_eth0"
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    repo = os.path.dirname(os.path.dirname(__file__))

    laptop = subprocess.run([sys.executable, "-c", code, target], env=env, cwd=repo,
                            capture_output=True, text=True, timeout=120)
    ci = subprocess.run([sys.executable, "-c", code, target], env={**env, "CI": "true"}, cwd=repo,
                        capture_output=True, text=True, timeout=120)

    assert laptop.returncode == 0 and "1 skipped" in laptop.stdout
    assert "the namespace cluster needs root" in laptop.stdout
    assert ci.returncode == 1 and "1 error" in ci.stdout
    assert "CI must run the cluster tests, but the namespace cluster needs root" in ci.stdout


def _wait_for(fn, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (value := fn()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value
