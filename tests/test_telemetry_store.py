"""Ingest into a real SQLite store, the `latest` table, and retention by downsampling."""

from __future__ import annotations

import pytest

from scheduler.store import Store, loads
from scheduler.telemetry.ingest import HOST_ROW, Received, downsample, ingest

T0 = 1_699_999_980.0  # minute-aligned


@pytest.fixture
def store(tmp_path):
    with Store.for_state_dir(tmp_path) as s:
        s.execute("INSERT INTO hosts (name, address) VALUES ('gpu01', '10.0.0.1')")
        yield s


def sample(util: float, *, gpus: int = 2, jobs: dict | None = None) -> dict:
    return {
        "host": {"cpu_percent": 10.0, "mem_percent": 20.0, "mem_used": 1, "mem_total": 5, "load": [0.1, 0.2, 0.3]},
        "gpus": [
            {"index": i, "name": "H100", "util": util, "mem_used": 100, "mem_total": 800, "temp": 50, "power": 300.0,
             "processes": [{"pid": 7, "job": "3", "mem_used": 100}]}
            for i in range(gpus)
        ],
        "jobs": jobs or {},
        "nvml": None,
    }  # fmt: skip


def test_a_batch_is_appended_to_history_and_the_present_kept_per_gpu(store):
    busy = sample(90, jobs={"3": {"pids": [7], "cpu_percent": 99.0}})
    ingest(store, [Received("gpu01", T0, sample(10)), Received("gpu01", T0 + 1, busy)])
    assert store.one("SELECT count(*) AS n FROM samples")["n"] == 6  # 2 samples x (host row + 2 GPUs)
    latest = {(r["host"], r["gpu"]): (r["ts"], loads(r["sample"])) for r in store.query("SELECT * FROM latest")}
    assert sorted(latest) == [("gpu01", HOST_ROW), ("gpu01", 0), ("gpu01", 1)]
    ts, gpu0 = latest[("gpu01", 0)]
    assert (ts, gpu0["util"], gpu0["processes"]) == (T0 + 1, 90, [{"pid": 7, "job": "3", "mem_used": 100}])
    assert latest[("gpu01", HOST_ROW)][1]["jobs"] == {"3": {"pids": [7], "cpu_percent": 99.0}}
    assert store.one("SELECT last_seen FROM hosts")["last_seen"] == T0 + 1


def test_idle_since_marks_when_a_gpu_went_idle_and_clears_when_it_works(store):
    idle: dict = {}
    ingest(store, [Received("gpu01", T0, sample(0))], idle)
    ingest(store, [Received("gpu01", T0 + 5, sample(1))], idle)
    gpu0 = lambda: loads(store.one("SELECT sample FROM latest WHERE gpu = 0")["sample"])  # noqa: E731
    assert gpu0()["idle_since"] == T0
    ingest(store, [Received("gpu01", T0 + 6, sample(80))], idle)
    assert gpu0()["idle_since"] is None


def test_old_raw_samples_become_per_minute_averages(store):
    ingest(store, [Received("gpu01", T0 + s, sample(s % 60)) for s in range(180)])
    counts = downsample(store, raw_retention=60, minute_retention=86400, now=T0 + 180)
    assert counts == {"raw_folded": 2 * 60 * 3, "minute_rows": 2 * 3, "expired": 0}
    rows = store.query("SELECT ts, gpu, resolution, util FROM samples WHERE gpu = 0 ORDER BY ts, resolution DESC")
    assert rows[:2] == [
        {"ts": T0, "gpu": 0, "resolution": 60, "util": 29.5},
        {"ts": T0 + 60, "gpu": 0, "resolution": 60, "util": 29.5},
    ]
    assert [r["resolution"] for r in rows[2:]] == [1] * 60  # the last minute is still raw


def test_downsampling_twice_folds_each_minute_once(store):
    ingest(store, [Received("gpu01", T0 + s, sample(50)) for s in range(240)])
    downsample(store, 60, 86400, now=T0 + 150)
    again = downsample(store, 60, 86400, now=T0 + 150)
    assert again == {"raw_folded": 0, "minute_rows": 0, "expired": 0}
    downsample(store, 60, 86400, now=T0 + 240)
    minutes = store.query("SELECT ts FROM samples WHERE resolution = 60 AND gpu = 0 ORDER BY ts")
    assert [r["ts"] for r in minutes] == [T0, T0 + 60, T0 + 120]


def test_minute_averages_expire_after_their_retention(store):
    ingest(store, [Received("gpu01", T0 + s, sample(50)) for s in range(120)])
    downsample(store, 0, 86400, now=T0 + 120)
    assert downsample(store, 0, 86400, now=T0 + 86400 + 30)["expired"] == 3  # minute 0: host row + 2 GPUs
    assert downsample(store, 0, 86400, now=T0 + 86400 + 90)["expired"] == 3
    assert store.one("SELECT count(*) AS n FROM samples")["n"] == 0


@pytest.mark.slow
def test_six_hours_of_1hz_samples_for_64_gpus_keep_one_hour_raw_and_minutes_before(store):
    """The retention bound: raw for raw_retention, then one row per GPU-minute (benchmarks/telemetry.py
    runs the full week)."""
    hour = 3600
    for h in range(6):
        with store.tx():
            store.execute(
                "WITH RECURSIVE t(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM t WHERE i < 3599), "
                "g(j) AS (SELECT -1 UNION ALL SELECT j + 1 FROM g WHERE j < 63) "
                "INSERT INTO samples (ts, host, gpu, resolution, util, power) "
                "SELECT ? + i, 'gpu01', j, 1, i % 60, 300 FROM t, g",
                (T0 + h * hour,),
            )
        downsample(store, raw_retention=hour, minute_retention=7 * 86400, now=T0 + (h + 1) * hour)
    by_res = {r["resolution"]: r for r in store.query("SELECT resolution, count(*) AS n, avg(util) AS u FROM samples GROUP BY resolution")}
    assert by_res[1]["n"] == 65 * hour  # the newest hour, raw
    assert by_res[60]["n"] == 65 * 5 * 60  # five hours, one row per GPU (and host) minute
    assert by_res[60]["u"] == pytest.approx(29.5)
