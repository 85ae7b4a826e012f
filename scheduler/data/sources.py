"""Where text comes from: files, directories (recursively, filtered by include globs) and JSON lines.

A plain text file is one document; a JSON-lines file (`.jsonl`/`.ndjson`) holds one document per line
in its text field. Sources are cut into tasks for the worker processes: one per text file, and
newline-aligned byte ranges of JSON-lines files, so one big corpus file still spreads across cores.
The task list depends only on the sources, never on the number of workers.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from scheduler.errors import UserError

JSONL_SUFFIXES = (".jsonl", ".ndjson")
JSONL_CHUNK = 4 << 20  # bytes per task: big enough to amortise the IPC, small enough to balance cores


@dataclass(frozen=True)
class Task:
    source: int  # index of the SRC argument it came from
    path: str
    rel: str  # path relative to its SRC argument (lineage)
    jsonl: bool
    start: int
    end: int
    explicit: bool  # named on the command line: a binary file there is an error, not a skip


def plan(srcs: list[str], include: list[str] | None = None, exclude: list[str] | None = None) -> list[Task]:
    """Expand the sources into tasks, in a stable order (arguments as given, directories sorted).
    Globs match a file's name or its path relative to the SRC; an excluded directory is not entered."""
    tasks: list[Task] = []
    for i, src in enumerate(srcs):
        if not os.path.exists(src):
            raise UserError(f"source {src} does not exist", None, "check the path")
        if os.path.isdir(src):
            files = list(_walk(src, include or ["*"], exclude or []))
            if not files:
                globs = " ".join(include or ["*"])
                raise UserError(f"source {src} holds no files matching {globs}", None, "check the path or --include")
            for path, rel, size in files:
                tasks += _file_tasks(i, path, rel, size, explicit=False)
        elif os.path.isfile(src):
            tasks += _file_tasks(i, src, os.path.basename(src), os.path.getsize(src), explicit=True)
        else:
            raise UserError(f"source {src} is neither a file nor a directory", None, "give files or directories")
    return tasks


def _walk(root: str, include: list[str], exclude: list[str]):
    """(path, path relative to root, size) of the files to read. Plain strings and scandir, not pathlib:
    a corpus has many thousands of files and this runs before any worker starts."""

    def matches(name: str, rel: str, globs: list[str]) -> bool:
        return any(fnmatch.fnmatch(name, g) or fnmatch.fnmatch(rel, g) for g in globs)

    stack = [""]
    while stack:
        reldir = stack.pop()
        with os.scandir(os.path.join(root, reldir)) as it:
            entries = sorted(it, key=lambda e: e.name)
        subdirs = []
        for e in entries:
            if e.name.startswith("."):  # hidden entries (.git, .venv) are never corpus
                continue
            rel = f"{reldir}/{e.name}" if reldir else e.name
            if e.is_dir(follow_symlinks=False):  # a symlinked directory could loop
                if not matches(e.name, rel, exclude):
                    subdirs.append(rel)
            elif e.is_file() and matches(e.name, rel, include) and not matches(e.name, rel, exclude):
                yield e.path, rel, e.stat().st_size
        stack += reversed(subdirs)  # depth first, in name order


def _file_tasks(source: int, path: str, rel: str, size: int, *, explicit: bool) -> list[Task]:
    jsonl = path.endswith(JSONL_SUFFIXES)
    if not jsonl or size <= JSONL_CHUNK:
        return [Task(source, path, rel, jsonl, 0, size, explicit)]
    bounds = [0]
    with open(path, "rb") as f:
        while bounds[-1] + JSONL_CHUNK < size:
            f.seek(bounds[-1] + JSONL_CHUNK)
            f.readline()  # to the end of the line the cut fell in
            if f.tell() >= size:
                break
            bounds.append(f.tell())
    bounds.append(size)
    return [Task(source, str(path), rel, True, a, b, explicit) for a, b in zip(bounds, bounds[1:])]


class SourceError(Exception):
    """Raised in a worker; the parent turns it into a UserError (the message is the whole sentence)."""


def read_documents(task: Task, text_field: str) -> tuple[list[str], bytes, bool]:
    """The documents of one task, the raw bytes' SHA-256, and whether the file looked binary."""
    with open(task.path, "rb") as f:
        f.seek(task.start)
        raw = f.read(task.end - task.start)
    digest = hashlib.sha256(raw).digest()
    if b"\0" in raw:  # text never holds NUL; memchr makes this check free
        return [], digest, True
    if not task.jsonl:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return [], digest, True
        return ([text] if text.strip() else []), digest, False
    docs = []
    for lineno, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, UnicodeDecodeError) as e:
            raise SourceError(
                f"{task.path}: line {lineno} of the chunk at byte {task.start} is not JSON ({e}); "
                "JSON-lines files hold one JSON object per line"
            ) from None
        text = obj.get(text_field) if isinstance(obj, dict) else None
        if not isinstance(text, str):
            raise SourceError(
                f"{task.path}: line {lineno} of the chunk at byte {task.start} has no string field "
                f"{text_field!r}; pass --text-field NAME"
            )
        if text.strip():
            docs.append(text)
    return docs, digest, False


def lineage(srcs: list[str], tasks: list[Task], digests: list[bytes]) -> list[dict]:
    """One entry per SRC argument: {path, files, bytes, sha256}. A file's sha256 is its own (check it with
    sha256sum; a JSON-lines file over JSONL_CHUNK hashes its chunks' digests instead); a directory's
    hashes its sorted list of (relative path, file hash)."""
    out = []
    for i, src in enumerate(srcs):
        mine = [(t, d) for t, d in zip(tasks, digests) if t.source == i]
        per_file: dict[str, list[bytes]] = {}
        for t, d in mine:
            per_file.setdefault(t.rel, []).append(d)
        files = {rel: ds[0] if len(ds) == 1 else hashlib.sha256(b"".join(ds)).digest() for rel, ds in per_file.items()}
        if Path(src).is_file():
            digest = next(iter(files.values())).hex()
        else:
            h = hashlib.sha256()
            for rel in sorted(files):
                h.update(f"{rel}\0{files[rel].hex()}\n".encode())
            digest = h.hexdigest()
        out.append(
            {
                "path": str(Path(src).resolve()),
                "files": len(files),
                "bytes": sum(t.end - t.start for t, _ in mine),
                "sha256": digest,
            }
        )
    return out
