"""Dataset versions in the store: register, resolve, list, show, placements, and lineage both ways.

A version is immutable: its id is the first 12 hex of the manifest hash (trainer/shards.py), which
covers the tokenizer and every shard's SHA-256, and its files live on the head under
`{state_dir}/data/{name}/{version}/`. Placements say, per host, whether that host's copy is absent,
syncing, verified or corrupt; every change is also an event on `data:{name}@{version}`.

The scheduler calls resolve/preflight on every placement decision: this module stays light (no shard
format, no tokenizers) and imports them only inside `register`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from pathlib import Path

from scheduler.errors import NotFound, UserError
from scheduler.inventory import Host
from scheduler.model import LIVE
from scheduler.store import Store, dumps, loads

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
PLACEMENT_STATES = ("absent", "syncing", "verified", "corrupt")


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise UserError(
            f"dataset name {name!r} is not allowed",
            "names become directory names on every host",
            "use letters, digits, '.', '_' and '-' (at most 63, starting with a letter or digit)",
        )
    return name


def head_dir(store: Store, name: str, version: str | None = None) -> Path:
    """Where versions live on the head: beside the store, in the state dir."""
    d = store.path.parent / "data" / name
    return d / version if version else d


def host_path(host: Host, name: str, version: str) -> str:
    """Where the version lives on a host (relative to the login home for `~/` workdirs on remote hosts,
    as every remote command runs from there)."""
    return host.path("data", name, version)


def object_id(name: str, version: str) -> str:
    return f"data:{name}@{version}"


# --- reading ----------------------------------------------------------------------------------------


def resolve(store: Store, spec: str) -> dict:
    """`NAME@VERSION` (a unique prefix of the version is enough) or `NAME` (its newest version)."""
    name, _, version = spec.partition("@")
    if not name:
        raise UserError(f"dataset {spec!r} names no dataset", None, "write NAME or NAME@VERSION")
    if version:
        rows = store.query(
            "SELECT * FROM datasets WHERE name = ? AND substr(version, 1, ?) = ? ORDER BY version", (name, len(version), version)
        )
        if len(rows) > 1:
            raise UserError(
                f"dataset {spec} is ambiguous",
                f"versions {', '.join(r['version'] for r in rows)} all start with {version}",
                "give more of the version",
            )
    else:
        rows = store.query("SELECT * FROM datasets WHERE name = ? ORDER BY created_at DESC LIMIT 1", (name,))
    if not rows:
        known = [r["name"] for r in store.query("SELECT DISTINCT name FROM datasets ORDER BY name")]
        raise NotFound(
            f"dataset {spec} not found",
            f"known datasets: {', '.join(known)}" if known else "no dataset is registered yet",
            "see `headnode data list`, or make one with `headnode data prepare`",
        )
    return rows[0]


def placements(store: Store, name: str, version: str) -> dict[str, dict]:
    rows = store.query("SELECT * FROM data_placements WHERE name = ? AND version = ? ORDER BY host", (name, version))
    return {r["host"]: r for r in rows}


def preflight(store: Store, name: str, version: str) -> dict[str, str]:
    """{host: state} for every host with a placement row; a host missing from it has no copy (absent).
    The scheduler places a `--data` job only on hosts whose state is "verified"."""
    return {h: r["state"] for h, r in placements(store, name, version).items()}


def runs_using(store: Store, name: str, version: str) -> list[dict]:
    return store.query(
        "SELECT id, name, state, submitted_at FROM jobs WHERE data = ? ORDER BY id", (f"{name}@{version}",)
    )


def live_runs_using(store: Store, name: str, version: str) -> list[dict]:
    return [r for r in runs_using(store, name, version) if r["state"] in LIVE]


def summary(row: dict, host_names: list[str], store: Store) -> dict:
    """The `data show --json` object (DESIGN.md names: name, version, hash, path, shards, tokens,
    placements), plus the lineage both ways: sources in, runs out."""
    name, version = row["name"], row["version"]
    placed = placements(store, name, version)
    manifest = loads(row["manifest"])
    hosts = list(host_names) + sorted(set(placed) - set(host_names))
    return {
        "name": name,
        "version": version,
        "hash": row["hash"],
        "path": row["path"],
        "shards": row["shards"],
        "tokens": row["tokens"],
        "train_tokens": sum(s["tokens"] for s in manifest["shards"] if s["split"] == "train"),
        "val_tokens": sum(s["tokens"] for s in manifest["shards"] if s["split"] == "val"),
        "tokenizer": loads(row["tokenizer"]),
        "vocab_size": row["vocab_size"],
        "dtype": row["dtype"],
        "created_at": row["created_at"],
        "author": row["author"],
        "sources": loads(row["sources"], []),
        "stats": manifest.get("extra", {}).get("stats", {}),
        "files": manifest["shards"],
        "placements": [
            {
                "host": h,
                "state": placed[h]["state"] if h in placed else "absent",
                "detail": placed[h]["detail"] if h in placed else None,
                "updated_at": placed[h]["updated_at"] if h in placed else None,
            }
            for h in hosts
        ],
        "runs": runs_using(store, name, version),
    }


def list_versions(store: Store) -> list[dict]:
    rows = store.query(
        "SELECT d.name, d.version, d.tokens, d.shards, d.tokenizer, d.created_at, d.author,"
        " SUM(p.state = 'verified') AS verified, COUNT(p.host) AS placed"
        " FROM datasets d LEFT JOIN data_placements p ON p.name = d.name AND p.version = d.version"
        " GROUP BY d.name, d.version ORDER BY d.name, d.created_at"
    )
    for r in rows:
        r["tokenizer"] = loads(r["tokenizer"])["kind"]
        r["verified"] = r["verified"] or 0
    return rows


# --- writing ----------------------------------------------------------------------------------------


def record(store: Store, name: str, directory: Path, manifest_json: dict, sources: list[dict], *, what: str) -> tuple[dict, bool]:
    """Insert the version (once: versions are immutable). Returns (row, whether it was new)."""
    version = manifest_json["version"]
    with store.tx():
        row = store.one("SELECT * FROM datasets WHERE name = ? AND version = ?", (name, version))
        if row is not None:
            return row, False
        row = {
            "name": name,
            "version": version,
            "hash": manifest_json["hash"],
            "path": str(directory),
            "tokenizer": dumps(manifest_json["tokenizer"]),
            "vocab_size": manifest_json["vocab_size"],
            "dtype": manifest_json["dtype"],
            "shards": len(manifest_json["shards"]),
            "tokens": sum(s["tokens"] for s in manifest_json["shards"]),
            "manifest": dumps(manifest_json),
            "sources": dumps(sources),
            "created_at": time.time(),
            "author": store.actor,
        }
        store.db["datasets"].insert(row)
        store.event(object_id(name, version), what, f"{row['tokens']} tokens in {row['shards']} shards")
    return row, True


def set_placement(store: Store, name: str, version: str, host: str, state: str, detail: str | None = None) -> None:
    """Record a host's copy state; an event only when the state changes (progress updates are not news)."""
    assert state in PLACEMENT_STATES, state
    with store.tx():
        old = store.one("SELECT state FROM data_placements WHERE name = ? AND version = ? AND host = ?", (name, version, host))
        store.execute(
            "INSERT INTO data_placements (name, version, host, state, detail, updated_at) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (name, version, host) DO UPDATE SET state = excluded.state, detail = excluded.detail,"
            " updated_at = excluded.updated_at",
            (name, version, host, state, detail, time.time()),
        )
        if old is None or old["state"] != state:
            store.event(object_id(name, version), f"{state} on {host}", detail or "")


def register(store: Store, directory: str, name: str) -> tuple[dict, bool]:
    """Adopt a shard directory made elsewhere: check every hash, then copy it into the head's data dir,
    so the registered version cannot change under us (a hard link would share later edits)."""
    from trainer import shards

    check_name(name)
    src = Path(directory)
    if not (src / shards.MANIFEST).is_file():
        raise UserError(f"{directory} has no {shards.MANIFEST}", "it is not a shard directory",
                        "give the directory `data prepare` wrote, or prepare the text with `headnode data prepare`")
    try:
        manifest = shards.read_manifest(src)
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{src / shards.MANIFEST} is not a valid manifest", str(e)) from e
    bad = shards.verify(src, manifest)
    bad.update(_check_tokenizer_file(src, manifest.tokenizer))
    if bad:
        listed = ", ".join(f"{f} ({why})" for f, why in sorted(bad.items()))
        raise UserError(f"{directory} does not match its manifest", listed, "prepare it again")
    target = head_dir(store, name, manifest.version)
    if not target.exists():
        tmp = target.with_name(f".register-{os.getpid()}-{manifest.version}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for f in [*_tokenizer_files(manifest.tokenizer), *(s.file for s in manifest.shards)]:
            shutil.copyfile(src / f, tmp / f)
        shards.write_manifest(tmp, manifest)  # rewritten: its hash and version are recomputed, not trusted
        os.replace(tmp, target)
    sources = manifest.extra.get("sources") or [{"path": str(src.resolve())}]
    return record(store, name, target, manifest.to_json(), sources, what="registered")


def _tokenizer_files(spec: dict) -> list[str]:
    return [spec["file"]] if "file" in spec else []


def _check_tokenizer_file(directory: Path, spec: dict) -> dict[str, str]:
    if "file" not in spec:
        return {}
    p = directory / spec["file"]
    if not p.is_file():
        return {spec["file"]: "missing"}
    if "sha256" in spec and hashlib.sha256(p.read_bytes()).hexdigest() != spec["sha256"]:
        return {spec["file"]: "hash mismatch"}
    return {}
