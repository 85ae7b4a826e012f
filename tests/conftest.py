"""Shared fixtures: the namespace SSH cluster and fresh hosts.toml files.

- `cluster` (session): 3 real sshd hosts in network namespaces (tests/cluster.py). Skipped with the
  reason where this machine cannot build it (not root, no `ip`/`sshd`); with CI=true it fails instead,
  so CI never passes by skipping the tests that matter.
- `cluster_config` (function): a hosts.toml for those hosts with a fresh state_dir and fresh per-host
  workdirs under tmp_path (a fresh store numbers jobs from 1 again, and run dirs are keyed by job id).
- `local_config` (function): a localhost-only hosts.toml under tmp_path.

Both config fixtures kill, at teardown, the job processes (HEADNODE_JOB_ID in their environment) that
their test left behind, so a job never outlives its test; at the end of the session every job whose
run dir lies under this session's temp dirs or that runs on a cluster host is killed too.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.cluster import Cluster, ClusterUnavailable, kill_job_processes

CLUSTER_HOSTS = 3
_build_seconds = pytest.StashKey[float]()


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch):
    """A developer's $HEADNODE_CONFIG must not leak into tests: each test names its own config."""
    monkeypatch.delenv("HEADNODE_CONFIG", raising=False)


@pytest.fixture(scope="session", autouse=True)
def _no_job_outlives_the_session(tmp_path_factory):
    """A last sweep for jobs started from configs that tests wrote themselves under tmp_path."""
    yield
    kill_job_processes([tmp_path_factory.getbasetemp()])


@pytest.fixture(scope="session")
def cluster(request) -> Cluster:
    try:
        c = Cluster.build(CLUSTER_HOSTS)
    except ClusterUnavailable as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the cluster tests, but {e}", pytrace=False)
        pytest.skip(str(e))
    request.config.stash[_build_seconds] = c.build_seconds
    yield c
    c.close()


@pytest.fixture(autouse=True)
def _every_host_healed_after_each_test(request):
    """A test that fails between cut() and heal() (or freeze() and thaw()) must not leave a host down
    for the next ones."""
    yield
    c = request.node.funcargs.get("cluster")
    if c is not None:
        for h in c.hosts:
            c.heal(h.name)
            c.thaw(h.name)


@pytest.fixture
def cluster_config(cluster: Cluster, tmp_path: Path) -> Path:
    path = cluster.write_config(tmp_path / "hosts.toml", state_dir=tmp_path / "state", workdirs=tmp_path / "hosts")
    yield path
    cluster.kill_jobs([tmp_path])


@pytest.fixture
def local_config(tmp_path: Path) -> Path:
    workdir = tmp_path / "work"
    workdir.mkdir()
    path = tmp_path / "hosts.toml"
    path.write_text(
        "[cluster]\n"
        'name = "local"\n'
        f"state_dir = {json.dumps(str(tmp_path / 'state'))}\n\n"
        "[[hosts]]\n"
        'name = "localhost"\n'
        'address = "localhost"\n'
        f"python = {json.dumps(sys.executable)}\n"
        f"workdir = {json.dumps(str(workdir))}\n"
    )
    yield path
    kill_job_processes([tmp_path])


def pytest_collection_modifyitems(items):
    # `-m "not cluster"` deselects every test that builds on the namespace cluster.
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)


def pytest_terminal_summary(terminalreporter, config):
    seconds = config.stash.get(_build_seconds, None)
    if seconds is not None:
        terminalreporter.write_line(f"namespace cluster: {CLUSTER_HOSTS} sshd hosts built in {seconds:.2f} s")


@pytest.fixture(scope="session")
def stdlib_data(tmp_path_factory) -> Path:
    """A real small dataset (Python's json + email sources, byte tokens), built once; tests only read it."""
    from tests.trainer_support import stdlib_dataset

    return stdlib_dataset(tmp_path_factory.mktemp("stdlib-data"))
