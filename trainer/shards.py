"""The token shard format, shared by the trainer (reads) and `headnode data` (writes, verifies).

A dataset version is a directory:

    manifest.json        what is below, plus the version hash over all of it
    train-00000.bin      flat little-endian tokens (uint16 when the vocabulary fits, else uint32)
    val-00000.bin        the held-out split, same format

Shards carry no header: the manifest says the dtype, and a shard's token count is its size / itemsize.
Content hashes are SHA-256: it is in every Python's hashlib (hosts verify their copies with the host's
own python, nothing installed) and runs at ~2 GB/s per core with SHA-NI.

This module needs only the standard library and numpy; it must stay importable on training hosts.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

FORMAT = "headnode-shards/1"
MANIFEST = "manifest.json"
HASH_CHUNK = 1 << 22  # 4 MiB reads keep hashing at memory speed without a big buffer


@dataclass(frozen=True)
class Shard:
    file: str  # relative to the version directory
    split: str  # "train" or "val"
    tokens: int
    sha256: str


@dataclass
class Manifest:
    tokenizer: dict  # {"kind": "byte"} | {"kind": "bpe", "file": "tokenizer.json"} | ...
    vocab_size: int
    eot: int  # the end-of-text token separating documents
    dtype: str  # "uint16" | "uint32"
    shards: list[Shard]
    format: str = FORMAT
    extra: dict = field(default_factory=dict)  # lineage and stats; not part of the version hash

    @property
    def hash(self) -> str:
        return version_hash(self)

    @property
    def version(self) -> str:
        return self.hash[:12]

    def tokens(self, split: str | None = None) -> int:
        return sum(s.tokens for s in self.shards if split is None or s.split == split)

    def split(self, name: str) -> list[Shard]:
        return [s for s in self.shards if s.split == name]

    def to_json(self) -> dict:
        d = asdict(self)
        d["hash"] = self.hash
        d["version"] = self.version
        return d

    @classmethod
    def from_json(cls, d: dict) -> Manifest:
        if d.get("format") != FORMAT:
            raise ValueError(f"unknown shard format {d.get('format')!r} (expected {FORMAT!r})")
        return cls(
            tokenizer=d["tokenizer"],
            vocab_size=int(d["vocab_size"]),
            eot=int(d["eot"]),
            dtype=d["dtype"],
            shards=[Shard(**s) for s in d["shards"]],
            extra=d.get("extra", {}),
        )


def dtype_for_vocab(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


def version_hash(m: Manifest) -> str:
    """Hash over what determines the training data: tokenizer, vocabulary, dtype, and every shard's
    content hash in order. Same sources prepared the same way give the same version."""
    canon = {
        "format": m.format,
        "tokenizer": m.tokenizer,
        "vocab_size": m.vocab_size,
        "eot": m.eot,
        "dtype": m.dtype,
        "shards": [[s.file, s.split, s.tokens, s.sha256] for s in m.shards],
    }
    return hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()


def hash_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def write_shard(directory: str | os.PathLike, file: str, split: str, tokens: np.ndarray, dtype: str) -> Shard:
    """Write tokens atomically (temp file + rename) and return the manifest entry."""
    arr = np.ascontiguousarray(tokens, dtype=np.dtype(dtype).newbyteorder("<"))
    path = Path(directory) / file
    tmp = path.with_name(path.name + ".tmp")
    data = arr.tobytes()
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return Shard(file=file, split=split, tokens=int(arr.size), sha256=hashlib.sha256(data).hexdigest())


def write_manifest(directory: str | os.PathLike, m: Manifest) -> Path:
    path = Path(directory) / MANIFEST
    tmp = path.with_name(MANIFEST + ".tmp")
    tmp.write_text(json.dumps(m.to_json(), indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def read_manifest(directory: str | os.PathLike) -> Manifest:
    path = Path(directory) / MANIFEST
    return Manifest.from_json(json.loads(path.read_text()))


def open_shard(directory: str | os.PathLike, shard: Shard, dtype: str) -> np.memmap:
    """Memory-mapped, read-only: a 10 GB shard costs nothing until windows of it are read."""
    return np.memmap(Path(directory) / shard.file, dtype=np.dtype(dtype).newbyteorder("<"), mode="r")


def verify(directory: str | os.PathLike, m: Manifest | None = None) -> dict[str, str]:
    """Re-hash every shard; returns {file: problem} for the bad ones (empty when all are intact)."""
    m = m or read_manifest(directory)
    bad: dict[str, str] = {}
    itemsize = np.dtype(m.dtype).itemsize
    for s in m.shards:
        p = Path(directory) / s.file
        if not p.exists():
            bad[s.file] = "missing"
        elif p.stat().st_size != s.tokens * itemsize:
            bad[s.file] = f"size {p.stat().st_size} != {s.tokens * itemsize}"
        elif hash_file(p) != s.sha256:
            bad[s.file] = "hash mismatch"
    return bad
