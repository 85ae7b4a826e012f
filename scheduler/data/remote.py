"""What the head needs to check a version's files on hosts: the list of files a version has, the
request sent with the program (CHECK, the text of scheduler/remote/data_check.py, which documents the
request and its answer), and the reading of that answer.

The program runs with the host's own python (`Executor.python`, standard library only, nothing
installed), one round trip per host. Mode "verify" re-hashes every file; mode "check" (sync's before
and after) also trusts a file whose size and mtime match the host's record of its last full hash, so
syncing an unchanged version costs a stat per file, not a re-hash of the whole dataset.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from scheduler.errors import UserError
from scheduler.remote import source

CHECK = source("data_check.py")


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
