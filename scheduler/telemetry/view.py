"""The `top --json` document, from the store (a loop is collecting) or from samples taken just now.

    {hosts: [{name, state, reason, ts, cpu_percent, mem_percent, ..., jobs,
              gpus: [{index, name, util, mem_used, mem_total, temp, power, pstate, ...,
                      processes: [{pid, job, flag}], jobs}]}]}
"""

from __future__ import annotations

from .. import rules
from ..inventory import Inventory
from ..store import Store, loads
from .attribution import attribute, live_jobs
from .ingest import HOST_FIELDS, HOST_ROW, Received, host_record


def host_entry(name: str, state: str, reason: str | None, rec: dict | None, gpus: list[dict], live: set[str] | None) -> dict:
    rec = rec or {}
    return {
        "name": name,
        "state": state,
        "reason": reason or None,
        "ts": rec.get("ts"),
        **{k: rec.get(k) for k in HOST_FIELDS},
        "jobs": rec.get("jobs", {}),
        "nvml": rec.get("nvml"),
        "driver": rec.get("driver"),
        "gpus": [attribute(g, live) for g in sorted(gpus, key=lambda g: g["index"])],
    }


def from_store(store: Store, inventory: Inventory) -> dict:
    hosts = {r["name"]: r for r in store.query("SELECT name, state, draining, reason FROM hosts")}
    recs: dict[str, dict] = {}
    gpus: dict[str, list[dict]] = {}
    for r in store.query("SELECT host, gpu, ts, sample FROM latest"):
        sample = loads(r["sample"])
        if r["gpu"] == HOST_ROW:
            recs[r["host"]] = sample
        else:
            gpus.setdefault(r["host"], []).append({**sample, "ts": r["ts"]})
    live = live_jobs(store)
    out = []
    for h in inventory.hosts:
        row = hosts.get(h.name, {})
        state = rules.host_state(row.get("state"), row.get("draining"))
        out.append(host_entry(h.name, state, row.get("reason"), recs.get(h.name), gpus.get(h.name, []), live))
    return {"hosts": out}


def from_samples(inventory: Inventory, got: dict[str, Received | str], live: set[str] | None = None) -> dict:
    """`got` maps a host to its sample, or to why there is none (that host is down); a host not in
    it has not answered yet."""
    out = []
    for h in inventory.hosts:
        r = got.get(h.name)
        if isinstance(r, Received):
            out.append(host_entry(h.name, "up", None, host_record(r), r.sample.get("gpus", []), live))
        elif r is None:
            out.append(host_entry(h.name, "unknown", "no sample yet", None, [], live))
        else:
            out.append(host_entry(h.name, "down", r, None, [], live))
    return {"hosts": out}
