"""Hosts: the inventory mirrored into the store, their state, drain, and the probe (remote/probe_host.py)."""

from __future__ import annotations

import json
import time

from . import rendezvous, rules
from .execute import NOT_FOUND, Executor, Result
from .inventory import Host, Inventory
from .remote import source
from .store import Store, dumps, loads

PROBE_TIMEOUT = 20.0


def sync_inventory(store: Store, inventory: Inventory) -> None:
    """Make sure every inventory host has a row (state is kept; addresses follow hosts.toml)."""
    rows = {r["name"]: r["address"] for r in store.query("SELECT name, address FROM hosts")}
    missing = [h for h in inventory.hosts if rows.get(h.name) != h.address]
    if not missing:
        return
    with store.tx():
        for h in missing:
            store.execute(
                "INSERT INTO hosts (name, address) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET address = excluded.address",
                (h.name, h.address),
            )


def gpus_in_use(store: Store) -> dict[str, dict[int, int]]:
    """host -> {GPU index: job id} for the GPUs in use by rules.node_holds_gpus: what `headnode hosts`,
    its --json and the console's Cluster screen show, and what the scheduler places around."""
    used: dict[str, dict[int, int]] = {}
    for host, gpus, job_id in store.conn.execute(
        f"SELECT n.host, n.gpus, n.job_id FROM job_nodes n JOIN jobs j ON j.id = n.job_id WHERE {rules.NODE_HOLDS_GPUS_SQL}"
    ):
        for g in loads(gpus, []):
            used.setdefault(host, {})[g] = job_id
    return used


def summaries(store: Store, inventory: Inventory) -> list[dict]:
    """The `hosts --json` document: one entry per inventory host, in inventory order."""
    rows = {r["name"]: r for r in store.query("SELECT * FROM hosts")}
    used = gpus_in_use(store)
    meet = rendezvous.meetings(store, inventory)
    out = []
    for h in inventory.hosts:
        r = rows.get(h.name, {})
        out.append(
            {
                "name": h.name,
                "address": h.address,
                "state": rules.host_state(r.get("state"), r.get("draining")),
                "gpus": rules.host_gpus(h.gpus, r.get("gpus_detected")),
                "gpus_declared": h.gpus,
                "gpus_detected": r.get("gpus_detected"),
                "gpus_in_use": len(used.get(h.name, {})),
                "tags": list(h.tags),
                "reason": r.get("reason"),
                "last_seen": r.get("last_seen"),
                "probed_at": r.get("probed_at"),
                "rdzv_address": meet[h.name].address,
                "rdzv_from": meet[h.name].source,
            }
        )
    return out


def set_draining(store: Store, inventory: Inventory, name: str, draining: bool, actor: str | None = None) -> bool:
    """Drain or undrain; returns False when the host already was in that state."""
    inventory.host(name)  # UserError for an unknown name
    sync_inventory(store, inventory)
    with store.tx():
        row = store.one("SELECT draining FROM hosts WHERE name = ?", (name,))
        if bool(row["draining"]) == draining:
            return False
        store.execute("UPDATE hosts SET draining = ? WHERE name = ?", (int(draining), name))
        store.event(f"host:{name}", "drained" if draining else "undrained", "", actor=actor)
    return True


# --- probe -------------------------------------------------------------------------------------------


def probe(executor: Executor, hosts: list[Host], *, timeout: float = PROBE_TIMEOUT) -> list[dict]:
    """One round trip per host, all hosts at once. Returns the `hosts probe --json` entries."""
    results = executor.python_many(hosts, source("probe_host.py"), lambda h: [h.path(), h.network_interface or ""], timeout=timeout)
    return [interpret(h, results[h.name]) for h in hosts]


def interpret(host: Host, r: Result) -> dict:
    entry = {
        "name": host.name,
        "ok": False,
        "reason": None,
        "reachable": r.error is None,
        "hostname": None,
        "python": None,
        "torch": None,
        "cuda": None,
        "cuda_available": False,
        "driver": None,
        "gpus": None,
        "gpu_names": [],
        "disk_free_bytes": None,
        "load": None,
        "cpus": None,
        # Where the host's ranks meet the others' (rendezvous.py): learned here, kept in the store with
        # the SSH address and network_interface it was learned for.
        "address": host.address,
        "network_interface": host.network_interface,
        "rdzv_address": None,
        "elapsed_s": round(r.elapsed, 3),
    }
    if r.error:
        entry["reason"] = r.error
        return entry
    if r.exit_code == NOT_FOUND:
        entry["reason"] = (
            f"python missing: {host.python!r} was not found on {host.name}; install Python 3 there or set "
            f"python = \"/path/to/python\" for this host in hosts.toml"
        )
        return entry
    try:
        facts = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        entry["reason"] = f"probe failed on {host.name}: {r.reason or 'no output'}"
        return entry
    entry.update({k: facts.get(k) for k in ("hostname", "python", "torch", "cuda", "driver", "disk_free_bytes", "load", "cpus")})
    gpus = facts.get("gpus") or []
    entry["gpus"] = len(gpus)
    entry["gpu_names"] = [g.get("name") for g in gpus]
    entry["cuda_available"] = bool(gpus and entry["cuda"])
    iface, interface_problem = facts.get("interface"), None
    if host.network_interface and isinstance(iface, dict):
        entry["rdzv_address"] = iface.get("address")
        interface_problem = _interface_problem(host, iface)
        if interface_problem:
            entry["rdzv_address"] = None
    elif not host.network_interface:
        entry["rdzv_address"] = facts.get("ssh_address")
    if facts.get("python_too_old"):
        entry["reason"] = f"python too old: {host.python} is Python {entry['python']}; headnode's trainer needs 3.9 or newer"
    elif entry["torch"] is None:
        entry["reason"] = (
            f"torch missing: {host.python} on {host.name} cannot import torch; install it there "
            f"(pip install torch) or point python at an environment that has it"
        )
    elif host.gpus is not None and host.gpus > len(gpus) and gpus:
        entry["reason"] = f"{host.gpus} GPUs declared in hosts.toml but only {len(gpus)} detected"
    elif interface_problem:
        entry["reason"] = interface_problem
    entry["ok"] = entry["reason"] is None
    return entry


def _interface_problem(host: Host, iface: dict) -> str | None:
    """Why the host's network_interface cannot carry its ranks' traffic, with the fix; None if it can."""
    name = host.network_interface
    fix = ("set network_interface in hosts.toml to the interface of the cluster network (or rdzv_address to the"
           " address ranks should meet on)")
    address = iface.get("address")
    if address and not address.startswith("127."):
        return None
    if address:
        return f"network_interface {name} on {host.name} is the loopback interface ({address}): other hosts cannot reach it; {fix}"
    error = iface.get("error") or "no IPv4 address"
    names = iface.get("interfaces") or []
    there = f" (it has {', '.join(names[:20])}{' …' if len(names) > 20 else ''})" if names else ""
    return f"network_interface {name} on {host.name}: {error}{there}; {fix}"


def record_probe(store: Store, inventory: Inventory, entries: list[dict], actor: str | None = None) -> None:
    """Store each host's facts and up/down state (one transaction; an event per state change)."""
    sync_inventory(store, inventory)
    now = time.time()
    with store.tx():
        for e in entries:
            old = store.one("SELECT state, probe FROM hosts WHERE name = ?", (e["name"],))
            state = "up" if e["reachable"] else "down"
            kept = e
            if not e["reachable"] and old is not None:
                # A host that did not answer keeps what it said last about its rendezvous address.
                before = loads(old["probe"], None)
                if isinstance(before, dict) and (before.get("address"), before.get("network_interface")) == (
                    e.get("address"), e.get("network_interface")
                ):
                    kept = {**e, "rdzv_address": before.get("rdzv_address")}
            store.execute(
                "UPDATE hosts SET state = ?, reason = ?, probed_at = ?, probe = ?, "
                "gpus_detected = COALESCE(?, gpus_detected), last_seen = CASE WHEN ? THEN ? ELSE last_seen END "
                "WHERE name = ?",
                (state, e["reason"], now, dumps(kept), e["gpus"], e["reachable"], now, e["name"]),
            )
            if old is None or old["state"] != state:
                store.event(f"host:{e['name']}", state, e["reason"] or "probe answered", actor=actor)
