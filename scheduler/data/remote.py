"""The program that checks a version's files on a host, and the list of files it checks against.

It runs with the host's own python (`Executor.python`, standard library only, Python 3.7+: no numpy,
nothing installed): the directory is its argument, the rest comes as JSON on stdin (the same for every
host): {files: {name: [size, sha256]}, mode, mkdir}. It answers one JSON line: {dir (absolute), rsync (on
PATH?), status: {name: "ok" | problem}}. No file content comes back. Files are hashed on a thread per core (hashlib releases the GIL).

mode "verify" re-hashes everything. mode "check" (sync's before and after) also trusts a file whose
size and mtime match what the last full hash recorded in `.headnode-verified.json` — so syncing an
unchanged version costs a stat per file, not a re-hash of the whole dataset. A file modified within a
second of that record is hashed again (racy timestamps, as git treats its index).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from scheduler.errors import UserError

STAMP = ".headnode-verified.json"

CHECK = r"""
import hashlib, json, os, shutil, sys, time
from concurrent.futures import ThreadPoolExecutor

STAMP = ".headnode-verified.json"
req = json.load(sys.stdin)
d = os.path.abspath(os.path.expanduser(sys.argv[1]))
if req.get("mkdir"):
    os.makedirs(d, exist_ok=True)
stamp_path = os.path.join(d, STAMP)
try:
    with open(stamp_path) as f:
        stamp = json.load(f)
except (OSError, ValueError):
    stamp = {"written_ns": 0, "files": {}}

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 22)
            if not b:
                return h.hexdigest()
            h.update(b)

def check(item):
    name, (size, digest) = item
    p = os.path.join(d, name)
    try:
        st = os.stat(p)
    except OSError:
        return name, "missing", None
    if st.st_size != size:
        return name, "size %d, expected %d" % (st.st_size, size), None
    seen = [st.st_size, st.st_mtime_ns, digest]
    if req["mode"] == "check" and stamp["files"].get(name) == seen and st.st_mtime_ns < stamp["written_ns"] - 10**9:
        return name, "ok", seen
    return (name, "ok", seen) if sha256(p) == digest else (name, "hash mismatch", None)

with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
    results = list(pool.map(check, sorted(req["files"].items())))
good = {n: seen for n, state, seen in results if state == "ok"}
if os.path.isdir(d) and good:
    tmp = stamp_path + ".%d.tmp" % os.getpid()
    with open(tmp, "w") as f:
        json.dump({"written_ns": time.time_ns(), "files": good}, f)
    os.replace(tmp, stamp_path)
print(json.dumps({"dir": d, "rsync": bool(shutil.which("rsync")), "status": {n: s for n, s, _ in results}}))
"""


def expected_files(row: dict) -> dict[str, tuple[int, str]]:
    """{file: (size, sha256)} for every file of a version: its shards, its tokenizer file, and the
    manifest itself (as the head holds it: that is the copy that is sent)."""
    from scheduler.store import loads

    head = Path(row["path"])
    manifest_path = head / "manifest.json"
    if not manifest_path.is_file():
        raise UserError(
            f"the head's copy of {row['name']}@{row['version']} is missing",
            f"{manifest_path} does not exist",
            "prepare or register the dataset again",
        )
    manifest = loads(row["manifest"])
    itemsize = 2 if manifest["dtype"] == "uint16" else 4
    files = {s["file"]: (s["tokens"] * itemsize, s["sha256"]) for s in manifest["shards"]}
    tok = manifest["tokenizer"]
    if "file" in tok:
        p = head / tok["file"]
        files[tok["file"]] = (p.stat().st_size, tok.get("sha256") or _sha256(p))
    files["manifest.json"] = (manifest_path.stat().st_size, _sha256(manifest_path))
    return files


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def order(files: dict[str, tuple[int, str]], mode: str, mkdir: bool = False) -> str:
    assert mode in ("check", "verify")
    return json.dumps({"files": {k: list(v) for k, v in files.items()}, "mode": mode, "mkdir": mkdir})


def problems(status: dict[str, str]) -> dict[str, str]:
    return {f: s for f, s in status.items() if s != "ok"}


def describe(bad: dict[str, str], total: int) -> str:
    """One line: which files are bad, and how (the shard names are what an operator needs)."""
    if not bad:
        return f"all {total} files intact"
    if all(s == "missing" for s in bad.values()) and len(bad) == total:
        return "no copy"
    listed = ", ".join(f"{f}: {s}" for f, s in sorted(bad.items())[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    return f"{len(bad)} of {total} files bad: {listed}{more}"
