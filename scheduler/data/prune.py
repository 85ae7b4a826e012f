"""`data prune`: delete dataset versions from hosts, never one that a live job uses.

`NAME@VERSION` removes that version; `NAME` removes all but the newest --keep versions. Only hosts with
a placement on record are touched (a sync, even an interrupted one, always leaves one); the head's
own copy stays, so a pruned version can be synced again.
"""

from __future__ import annotations

from scheduler.data.versions import host_path, live_runs_using, object_id, placements, resolve
from scheduler.errors import UserError
from scheduler.execute import Executor
from scheduler.inventory import Host
from scheduler.store import Store


def prune(store: Store, executor: Executor, hosts: list[Host], spec: str, *, keep: int = 1, dry_run: bool = False) -> list[dict]:
    """One entry per (version, host): {name, version, host, removed, kept, error}; `kept` says why a
    version in use stayed, `error` why a removal failed."""
    name, _, version = spec.partition("@")
    if version:
        row = resolve(store, spec)
        live = live_runs_using(store, row["name"], row["version"])
        if live:
            raise UserError(
                f"{row['name']}@{row['version']} is in use by live job {', '.join(str(j['id']) for j in live)}",
                "pruning it would pull the data from under the run",
                "wait for the job to end or cancel it, then prune",
            )
        victims = [row]
    else:
        if keep < 0:
            raise UserError(f"--keep {keep} is negative", None, "give how many of the newest versions to keep")
        resolve(store, name)  # a clear error for an unknown name
        victims = store.query("SELECT * FROM datasets WHERE name = ? ORDER BY created_at DESC", (name,))[keep:]
    wanted = {h.name for h in hosts}
    out: list[dict] = []
    for row in victims:
        n, v = row["name"], row["version"]
        on = [h for h in hosts if h.name in set(placements(store, n, v)) & wanted]
        live = live_runs_using(store, n, v)
        if live:
            reason = f"in use by live job {', '.join(str(j['id']) for j in live)}"
            out += [{"name": n, "version": v, "host": h.name, "removed": False, "kept": reason, "error": None} for h in on]
            continue
        if dry_run:
            out += [{"name": n, "version": v, "host": h.name, "removed": False, "kept": None, "error": None} for h in on]
            continue
        results = executor.run_many(on, lambda h, n=n, v=v: ["rm", "-rf", "--", host_path(h, n, v)], timeout=300.0)
        for h in on:
            res = results[h.name]
            if res.ok:
                with store.tx():
                    store.execute("DELETE FROM data_placements WHERE name = ? AND version = ? AND host = ?", (n, v, h.name))
                    store.event(object_id(n, v), f"pruned from {h.name}")
            out.append({"name": n, "version": v, "host": h.name, "removed": res.ok, "kept": None, "error": None if res.ok else res.reason})
    return out
