"""Samples into the store: append-only history, a small `latest` table for the present, retention.

History is append-only with a ts-only index and read by time range; the present is one upserted row
per host (gpu = -1) and per GPU, because "newest sample per GPU" over an hour of history costs 750 ms
with GROUP BY and 2.5 ms from `latest` (FIELD-NOTES). One batch is one transaction with executemany.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from ..store import Store

HOST_ROW = -1  # the `gpu` of a host's own row in samples / latest
MINUTE = 60
IDLE_UTIL = 5  # percent: below this a GPU is doing nothing useful

# The host fields kept in `latest` (the rest of a sample is per GPU or per job).
HOST_FIELDS = (
    "cpus", "cpu_percent", "mem_used", "mem_total", "mem_percent", "load",
    "disk_used", "disk_total", "net_rx_bps", "net_tx_bps",
)  # fmt: skip


@dataclass
class Received:
    """One sample as it arrived: `ts` is the head's clock, so hosts' clock skew never matters."""

    host: str
    ts: float
    sample: dict


def host_record(r: Received) -> dict:
    s = r.sample
    return {
        "ts": r.ts,
        **{k: s["host"].get(k) for k in HOST_FIELDS},
        "jobs": s.get("jobs", {}),
        "nvml": s.get("nvml"),
        "driver": s.get("driver"),
        "hostname": s.get("hostname"),
    }


def ingest(store: Store, batch: list[Received], idle_since: dict[tuple[str, int], float] | None = None) -> int:
    """Write a batch in one transaction; returns the number of history rows.

    `idle_since` (kept by the caller across batches) stamps each GPU's latest row with when it last
    went idle, so waste detection needs no history scan.
    """
    rows, latest = [], {}
    for r in batch:
        h = r.sample["host"]
        rows.append((r.ts, r.host, HOST_ROW, 1, None, h.get("mem_used"), h.get("mem_total"), None, None,
                     h.get("cpu_percent"), h.get("mem_percent")))
        latest[(r.host, HOST_ROW)] = (r.ts, host_record(r))
        for g in r.sample.get("gpus", []):
            rows.append((r.ts, r.host, g["index"], 1, g.get("util"), g.get("mem_used"), g.get("mem_total"), g.get("temp"),
                         g.get("power"), None, None))
            if idle_since is not None:
                key = (r.host, g["index"])
                if _idle(g):
                    idle_since.setdefault(key, r.ts)
                else:
                    idle_since.pop(key, None)
                g = {**g, "idle_since": idle_since.get(key)}
            latest[(r.host, g["index"])] = (r.ts, g)
    with store.tx():
        store.conn.executemany(
            "INSERT INTO samples (ts, host, gpu, resolution, util, mem_used, mem_total, temp, power, cpu_percent, mem_percent) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        store.conn.executemany(
            "INSERT INTO latest (host, gpu, ts, sample) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(host, gpu) DO UPDATE SET ts = excluded.ts, sample = excluded.sample",
            [(host, gpu, ts, json.dumps(rec, separators=(",", ":"))) for (host, gpu), (ts, rec) in latest.items()],
        )
        # Hosts first sampled before `hosts` mirrors the inventory still get a row to mark.
        seen: dict[str, float] = {}
        for r in batch:
            seen[r.host] = max(seen.get(r.host, 0.0), r.ts)
        store.conn.executemany("UPDATE hosts SET last_seen = ? WHERE name = ?", [(ts, h) for h, ts in seen.items()])
    return len(rows)


def _idle(g: dict) -> bool:
    return g.get("util") is not None and g["util"] < IDLE_UTIL


def mark_host(store: Store, name: str, state: str, reason: str) -> None:
    """Record a reachability change (up/down) with its event."""
    with store.tx():
        store.execute(
            "UPDATE hosts SET state = ?, reason = ? WHERE name = ?",
            (state, None if state == "up" else reason, name),
        )
        store.event(f"host:{name}", state, reason)


def downsample(store: Store, raw_retention: float, minute_retention: float, now: float | None = None) -> dict:
    """Raw samples older than raw_retention become per-minute averages; those expire after
    minute_retention. Cheap to call every cycle: it only visits raw rows past the cutoff.

    Whole minutes only (the cutoff is minute-aligned), so a minute is averaged exactly once. The last
    minute row already written bounds the scan from below: every raw row under it was folded in then.
    """
    now = time.time() if now is None else now
    cutoff = (now - raw_retention) // MINUTE * MINUTE
    with store.tx():
        last = store.one(
            "SELECT ts FROM samples WHERE ts < ? AND resolution = ? ORDER BY ts DESC LIMIT 1", (cutoff, MINUTE)
        )
        low = last["ts"] + MINUTE if last else float("-inf")
        folded = store.execute(
            "INSERT INTO samples (ts, host, gpu, resolution, util, mem_used, mem_total, temp, power, cpu_percent, mem_percent) "
            "SELECT CAST(ts / ? AS INTEGER) * ?, host, gpu, ?, avg(util), avg(mem_used), avg(mem_total), avg(temp), "
            "avg(power), avg(cpu_percent), avg(mem_percent) FROM samples "
            "WHERE ts >= ? AND ts < ? AND resolution = 1 GROUP BY CAST(ts / ? AS INTEGER), host, gpu",
            (MINUTE, MINUTE, MINUTE, low, cutoff, MINUTE),
        ).rowcount
        raw = store.execute("DELETE FROM samples WHERE ts >= ? AND ts < ? AND resolution = 1", (low, cutoff)).rowcount
        expired = store.execute("DELETE FROM samples WHERE ts < ?", (now - minute_retention,)).rowcount
    return {"raw_folded": raw, "minute_rows": folded, "expired": expired}
