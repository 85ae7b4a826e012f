"""A synthetic cluster in a real store, for the console's tests, snapshots and benchmark.

Deterministic: every time is an offset from NOW and every number comes from the row's index, so a
snapshot taken today matches one taken next year.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from scheduler.inventory import Host, Inventory
from scheduler.store import Store, dumps

NOW = 1_780_000_000.0  # a fixed "now" for ages and clocks
STATES = ("RUNNING", "PENDING", "SUCCEEDED", "FAILED", "CANCELLED", "SUCCEEDED", "TIMEOUT", "SUCCEEDED")
REASONS = {"RUNNING": "all nodes started", "PENDING": "waiting for resources", "SUCCEEDED": "every node exited 0",
           "FAILED": "node 1 exited 1", "CANCELLED": "cancelled by alice", "TIMEOUT": "time limit 2h reached"}


def inventory(state_dir: Path, hosts: int, gpus: int = 8) -> Inventory:
    return Inventory(
        path=None, cluster_name="synthetic", state_dir=state_dir,
        # localhost: a screen that reads a host (logs, metrics) runs a local command, never the network
        hosts=tuple(Host(name=f"gpu{i:03d}", address="localhost", workdir=str(state_dir / "work"), gpus=gpus)
                    for i in range(hosts)),
    )


def populate(inv: Inventory, *, jobs: int, events: int, gpus: int = 8) -> None:
    """Hosts (one down, one draining), telemetry for every GPU, jobs in every state (the RUNNING ones
    placed on GPUs), a dataset with placements, and an audit trail."""
    with Store.for_state_dir(inv.state_dir, actor="alice@head") as store, store.tx():
        db = store.conn
        n_hosts = len(inv.hosts)
        db.executemany(
            "INSERT INTO hosts (name, address, state, draining, reason, last_seen, gpus_detected) VALUES (?,?,?,?,?,?,?)",
            [(h.name, h.address, "down" if i == 1 else "up", int(i == 2), "maintenance" if i == 2 else None,
              NOW - 1, gpus) for i, h in enumerate(inv.hosts)],
        )
        latest, samples = [], []
        for i, h in enumerate(inv.hosts):
            latest.append((h.name, -1, NOW - 1, dumps({"name": h.name, "state": "up", "cpu_percent": (i * 37) % 100,
                                                           "mem_percent": (i * 53) % 100})))
            for g in range(gpus):
                util = float((i * 31 + g * 17) % 101)
                latest.append((h.name, g, NOW - 1, dumps({
                    "index": g, "name": "NVIDIA H100 80GB HBM3", "util": util,
                    "mem_used": ((i + g * 7) % 80) * 2**30, "mem_total": 80 * 2**30, "temp": 30 + (i + g) % 50,
                    "power": 100 + (i * g) % 600, "pstate": "P0", "processes": []})))
                samples += [(NOW - 60 + t, h.name, g, 1, (util + t * 9) % 100) for t in range(0, 60, 5)]
        db.executemany("INSERT INTO latest (host, gpu, ts, sample) VALUES (?,?,?,?)", latest)
        db.executemany("INSERT INTO samples (ts, host, gpu, resolution, util) VALUES (?,?,?,?,?)", samples)

        job_rows, nodes, free = [], [], [(h, g) for h in range(3, n_hosts) for g in range(0, gpus, 2)]
        for j in range(1, jobs + 1):
            state = STATES[j % len(STATES)] if j < jobs - 1 else "RUNNING"
            metrics = None
            if state not in ("PENDING",):
                metrics = dumps({"step": j * 10 % 5000, "loss": round(2 + (j % 97) / 50, 3),
                                 "tokens_per_s": 1000.0 * (j % 300), "mfu": None})
            ended = NOW - 60 * (j % 500) if state not in ("RUNNING", "PENDING") else None
            started = None if state == "PENDING" else NOW - 3600 - j
            job_rows.append((j, f"run-{j:05d}", state, REASONS[state], dumps(["python", "-m", "trainer"]), 1 + j % 2,
                             2 if state != "PENDING" else 8, None, 0, None, 0, 1, "{}", "[]", "alice",
                             NOW - 7200 - j * 30, started, ended, metrics, NOW - 5))
            if state == "RUNNING" and len(free) >= 2:
                for rank in range(1 + j % 2):
                    h, g = free.pop()
                    nodes.append((j, 1, rank, inv.hosts[h].name, dumps([g, g + 1]), 29500 + j % 400,
                                  inv.hosts[h].path("runs", str(j)), None, 4000 + j, "RUNNING", None))
        db.executemany(
            "INSERT INTO jobs (id, name, state, reason, command, nodes, gpus_per_node, data, priority, time_limit,"
            " retries, attempt, env, tags, user, submitted_at, started_at, ended_at, metrics, metrics_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", job_rows)
        db.executemany(
            "INSERT INTO job_nodes (job_id, attempt, node_rank, host, gpus, port, run_dir, data_path, pid, state,"
            " exit_code) VALUES (?,?,?,?,?,?,?,?,?,?,?)", nodes)
        db.executemany("INSERT INTO attempts (job_id, attempt, state, reason, started_at) VALUES (?,?,?,?,?)",
                       [(r[0], 1, r[2], r[3], r[16]) for r in job_rows if r[16] is not None])

        manifest = {"format": "headnode-shards/1", "shards": []}
        for k, (name, version) in enumerate((("wiki", "3f2a9c1b7d4e"), ("stdlib", "a1b2c3d4e5f6"))):
            db.execute("INSERT INTO datasets (name, version, hash, path, tokenizer, vocab_size, dtype, shards, tokens,"
                       " manifest, created_at, author) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                       (name, version, version * 5, f"/data/{name}", json.dumps({"kind": "byte"}), 256 + 50000 * k,
                        "uint16", 4 + k, 12_345_678 * (k + 1), dumps(manifest), NOW - 86400 * (k + 1), "alice"))
            for i, h in enumerate(inv.hosts[:5]):
                st = ("verified", "syncing", "corrupt", "verified", "absent")[(i + k) % 5]
                db.execute("INSERT INTO data_placements VALUES (?,?,?,?,?,?)",
                           (name, version, h.name, st, "shard train-00001.bin differs" if st == "corrupt" else None,
                            NOW - 600 * i))
        objects = [f"job:{j}" for j in range(1, jobs + 1)] or ["host:gpu000"]
        db.executemany("INSERT INTO events (id, ts, actor, object, what, reason) VALUES (?,?,?,?,?,?)",
                       [(e, NOW - events + e, "scheduler" if e % 3 else "alice@head", objects[e % len(objects)],
                         STATES[e % len(STATES)], REASONS[STATES[e % len(STATES)]]) for e in range(1, events + 1)])
        db.execute("INSERT INTO lease (name, holder, kind, acquired_at, expires_at, last_cycle_at)"
                   " VALUES ('scheduler', '4242@head', 'foreground', ?, ?, ?)", (NOW - 3600, NOW + 10**9, NOW - 1))


# --- pytest helpers (imported by the console tests) ------------------------------------------


@pytest.fixture
def synthetic(tmp_path, monkeypatch):
    """A 16-host synthetic cluster; the console's clock fixed at NOW and local time in UTC."""
    from console import format as fmt

    monkeypatch.setattr(fmt, "now", lambda: NOW)
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    inv = inventory(tmp_path / "state", 16)
    populate(inv, jobs=50, events=100)
    yield inv
    monkeypatch.undo()
    time.tzset()


def screen_text(app) -> str:
    """What the terminal shows, as plain text."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def settle(pilot) -> None:
    """Let the polls in flight finish and their results be drawn."""
    from textual.worker import WorkerCancelled, WorkerFailed

    for _ in range(2):
        for _ in range(5):  # a worker replaced by a newer one (exclusive) reports itself cancelled, a failed
            try:  # one (shown to the user by the app) raises here: wait for the others again
                await pilot.app.workers.wait_for_complete()
                break
            except (WorkerCancelled, WorkerFailed):
                continue
        await pilot.pause()
