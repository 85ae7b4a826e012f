"""`data prepare`: sources -> documents -> tokens, in parallel across cores -> shards -> a registered version.

Workers read and tokenize tasks (sources.plan); `imap` hands results back in task order, so the output
never depends on how many workers ran. The parent drops exact duplicate documents (xxh3-128 of the
text), sends each document to train or val by that same hash (stable when other documents come and
go), and appends its tokens — `eot` first, as GPT-2 separates documents — to a stream file. The stream
is then cut into shards. A corpus too small for the hash split (say one long file) takes its val split
from the end of the stream instead, so a non-zero --val-fraction always yields both splits.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import xxhash

from scheduler.data import sources, tokenizer as tokenizers
from scheduler.data.versions import check_name, head_dir, record
from scheduler.errors import UserError
from scheduler.store import Store
from trainer import shards

DEFAULT_SHARD_TOKENS = 1 << 24  # 32 MiB of uint16: resumable sync works shard by shard
DEFAULT_VAL_FRACTION = 0.01
SPLIT_BUCKETS = 1 << 20
STREAM = "stream.tmp"
# Bytes per worker before another one pays for its start (a fork: ~0.1 s; beside threads, a
# forkserver: ~1 s); the byte tokenizer is ~20x faster than BPE.
PARALLEL_MIN_BYTES = {False: 2 << 20, True: 16 << 20}


@dataclass
class Report:
    name: str
    version: str
    hash: str
    path: str
    new: bool  # False: the same sources prepared the same way before; nothing changed
    tokens: int
    train_tokens: int
    val_tokens: int
    shards: int
    documents: int
    duplicates: int  # exact duplicate documents dropped
    skipped_binary: list[str]  # binary files found inside directories
    bytes: int
    seconds: float
    workers: int

    def to_json(self) -> dict:
        return asdict(self)


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def prepare(
    store: Store,
    srcs: list[str],
    name: str,
    *,
    tokenizer: str = "byte",
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    text_field: str = "text",
    workers: int | None = None,
    progress: bool | None = None,
) -> Report:
    """Tokenize srcs into a new version of dataset `name` (or find that it exists) and register it.
    progress: None shows the bar only when stderr is a terminal."""
    t0 = time.monotonic()
    check_name(name)
    if shard_tokens < 1:
        raise UserError(f"--shard-tokens {shard_tokens} is too small", None, "give a positive number of tokens per shard")
    if not 0 <= val_fraction < 1:
        raise UserError(f"--val-fraction {val_fraction} is out of range", None, "give a fraction from 0 (no val split) to below 1")
    tasks = sources.plan(srcs, include, exclude)
    tok = tokenizers.parse(tokenizer)
    if isinstance(tok, tokenizers.TrainBPE):
        tok = tokenizers.train_bpe(tok.vocab_size, _training_documents(tasks, text_field))
    if workers is None:  # starting workers costs time: spend it only where it pays back
        per_worker = PARALLEL_MIN_BYTES[tok.kind == "byte"]
        workers = min(default_workers(), sum(t.end - t.start for t in tasks) // per_worker)
    workers = max(1, min(workers, len(tasks)))
    dtype = shards.dtype_for_vocab(tok.vocab_size)

    root = head_dir(store, name)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".prepare-", dir=root))
    try:
        stream = _tokenize(tasks, tok, dtype, tmp / STREAM, text_field, workers, val_fraction, name, progress)
        manifest = _write_shards(tmp, stream, tok, dtype, shard_tokens, val_fraction)
        manifest.extra = {
            "sources": sources.lineage(srcs, [t for t, _ in stream.used], [d for _, d in stream.used]),
            "stats": stream.stats(),
            "prepared_with": {"shard_tokens": shard_tokens, "val_fraction": val_fraction, "include": include, "exclude": exclude,
                              "text_field": text_field},
        }
        if tok.file_json is not None:
            (tmp / tokenizers.TOKENIZER_FILE).write_text(tok.file_json)
        shards.write_manifest(tmp, manifest)
        target = root / manifest.version
        if not target.exists():  # an existing one has the same content: the version is its hash
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    mj = manifest.to_json()
    _, new = record(store, name, target, mj, mj["extra"]["sources"], what="prepared")
    return Report(
        name=name,
        version=manifest.version,
        hash=manifest.hash,
        path=str(target),
        new=new,
        tokens=manifest.tokens(),
        train_tokens=manifest.tokens("train"),
        val_tokens=manifest.tokens("val"),
        shards=len(manifest.shards),
        documents=stream.documents,
        duplicates=stream.duplicates,
        skipped_binary=stream.skipped,
        bytes=stream.nbytes,
        seconds=time.monotonic() - t0,
        workers=workers,
    )


# --- workers ----------------------------------------------------------------------------------------


@dataclass
class Chunk:
    """One task's result, pickled back to the parent: documents as keys, lengths and one token array."""

    digest: bytes
    binary: bool = False
    error: str | None = None
    keys: list[int] = field(default_factory=list)
    lengths: np.ndarray | None = None
    tokens: np.ndarray | None = None


_tok: tokenizers.Tokenizer | None = None
_text_field = "text"


def _init(state: tuple[str, str | None], text_field: str) -> None:
    global _tok, _text_field
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per worker: the pool is the parallelism
    _tok, _text_field = tokenizers.from_worker_state(state), text_field


def _work(task: sources.Task) -> Chunk:
    try:
        docs, digest, binary = sources.read_documents(task, _text_field)
    except sources.SourceError as e:
        return Chunk(b"", error=str(e))
    except OSError as e:
        return Chunk(b"", error=f"cannot read {task.path}: {e.strerror or e}")
    if binary or not docs:
        return Chunk(digest, binary=binary)
    try:
        encoded = _tok.encode(docs)
    except Exception as e:  # e.g. a lone surrogate escaped in JSON: name the file rather than crash the pool
        return Chunk(b"", error=f"cannot tokenize {task.path} (bytes {task.start}-{task.end}): {e}")
    lengths = np.fromiter((len(e) + 1 for e in encoded), dtype=np.int64, count=len(encoded))
    tokens = np.empty(int(lengths.sum()), dtype=encoded[0].dtype)
    pos = 0
    for e in encoded:
        tokens[pos] = _tok.eot
        tokens[pos + 1 : pos + 1 + len(e)] = e
        pos += len(e) + 1
    keys = [xxhash.xxh3_128_intdigest(d.encode("utf-8", "surrogatepass")) for d in docs]
    return Chunk(digest, keys=keys, lengths=lengths, tokens=tokens)


def _training_documents(tasks: list[sources.Task], text_field: str):
    for task in tasks:
        try:
            docs, _, binary = sources.read_documents(task, text_field)
        except sources.SourceError as e:
            raise UserError(str(e)) from None
        if binary and task.explicit:
            raise _binary_error(task)
        yield from docs


def _binary_error(task: sources.Task) -> UserError:
    return UserError(
        f"source {task.path} is a binary file",
        "only UTF-8 text and JSON lines can be tokenized",
        "remove it from the sources (binary files inside a directory are skipped)",
    )


# --- the parent: dedupe, split, stream --------------------------------------------------------------


@dataclass
class Stream:
    path: Path
    offsets: np.ndarray
    lengths: np.ndarray
    is_val: np.ndarray
    used: list[tuple[sources.Task, bytes]]
    duplicates: int
    skipped: list[str]
    nbytes: int

    @property
    def documents(self) -> int:
        return len(self.lengths)

    def stats(self) -> dict:
        return {"documents": self.documents, "duplicates": self.duplicates, "skipped_binary": len(self.skipped), "bytes": self.nbytes}


def _tokenize(tasks, tok, dtype, path, text_field, workers, val_fraction, name, progress) -> Stream:
    from tqdm import tqdm

    class Bar(tqdm):
        monitor_interval = 0  # no monitor thread: a second thread would force the slower forkserver

    total = sum(t.end - t.start for t in tasks)
    bar = Bar(
        total=total, unit="B", unit_scale=True, desc=f"tokenizing {name}", file=sys.stderr,
        disable=None if progress is None else not progress, dynamic_ncols=True, smoothing=0.1,
    )
    threshold = val_fraction * SPLIT_BUCKETS
    seen: set[int] = set()
    offsets, lengths, is_val = [], [], []
    used, skipped, duplicates, written, nbytes = [], [], 0, 0, 0
    with _results(tasks, tok, text_field, workers) as results, open(path, "wb") as out, bar:
        for task, chunk in zip(tasks, results):
            bar.update(task.end - task.start)
            if chunk.error:
                raise UserError(chunk.error)
            if chunk.binary:
                if task.explicit:
                    raise _binary_error(task)
                skipped.append(task.path)
                continue
            used.append((task, chunk.digest))
            nbytes += task.end - task.start
            if not chunk.keys:
                continue
            starts = np.concatenate(([0], np.cumsum(chunk.lengths)[:-1]))
            keep = np.ones(len(chunk.keys), dtype=bool)
            for i, key in enumerate(chunk.keys):
                if key in seen:
                    keep[i] = False
                else:
                    seen.add(key)
            duplicates += int((~keep).sum())
            kept_len = chunk.lengths[keep]
            data = chunk.tokens.astype(dtype, copy=False)
            if not keep.all():
                data = np.concatenate([data[s : s + n] for s, n in zip(starts[keep], kept_len)] or [data[:0]])
            out.write(data.tobytes())
            offsets.append(written + np.concatenate(([0], np.cumsum(kept_len)[:-1])))
            lengths.append(kept_len)
            is_val.append(np.array([(k & (SPLIT_BUCKETS - 1)) < threshold for k, kk in zip(chunk.keys, keep) if kk], dtype=bool))
            written += int(kept_len.sum())
            bar.set_postfix_str(f"{written / 1e6:.2f}M tokens", refresh=False)
    if not lengths:
        raise UserError(
            "the sources hold no text",
            f"{len(used)} files were read and all were empty" + (f", {len(skipped)} binary files skipped" if skipped else ""),
            "check the paths, --include and --text-field",
        )
    return Stream(
        path, np.concatenate(offsets), np.concatenate(lengths), np.concatenate(is_val), used, duplicates, skipped, nbytes
    )


class _results:
    """Task results in task order: inline for one worker (no processes to start), else a process pool
    (ProcessPoolExecutor, not Pool: a worker that dies breaks the pool instead of hanging it).

    fork when this process has one thread: fast, and the caller's __main__ is not run again (spawn and
    forkserver re-import it, which breaks unguarded scripts). With other threads alive (the console),
    forkserver: a fork would copy their locks mid-air."""

    def __init__(self, tasks, tok, text_field, workers):
        self.args = (tasks, tokenizers.worker_state(tok), text_field, workers)
        self.pool = None
        self.saved_env = os.environ.get("TOKENIZERS_PARALLELISM")

    def __enter__(self):
        tasks, state, text_field, workers = self.args
        if workers == 1:
            _init(state, text_field)
            return map(_work, tasks)
        if threading.active_count() == 1:
            ctx = multiprocessing.get_context("fork")
        else:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload([__name__])  # import once in the server, not once per worker
        self.pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(state, text_field))
        return self.pool.map(_work, tasks, chunksize=max(1, min(16, len(tasks) // (workers * 8))))

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        elif self.saved_env is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = self.saved_env


# --- shards -----------------------------------------------------------------------------------------


def _write_shards(directory: Path, stream: Stream, tok, dtype: str, shard_tokens: int, val_fraction: float) -> shards.Manifest:
    total = int(stream.lengths.sum())
    tokens = np.memmap(stream.path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r", shape=(total,))
    if val_fraction == 0:
        train, val = [(0, total)], []
    elif stream.is_val.any() and not stream.is_val.all():
        train, val = _runs(stream, ~stream.is_val), _runs(stream, stream.is_val)
    elif total >= 2:
        n_val = min(total - 1, max(1, round(total * val_fraction)))
        train, val = [(0, total - n_val)], [(total - n_val, n_val)]
    else:
        raise UserError("the sources hold a single token", "too little to split off validation data", "add text or pass --val-fraction 0")
    out = _write_split(directory, "train", tokens, train, shard_tokens, dtype)
    out += _write_split(directory, "val", tokens, val, shard_tokens, dtype)
    del tokens
    stream.path.unlink()
    return shards.Manifest(tokenizer=tok.spec, vocab_size=tok.vocab_size, eot=tok.eot, dtype=dtype, shards=out)


def _runs(stream: Stream, mask: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous stretches of the stream whose documents all satisfy mask: (offset, length)."""
    idx = np.flatnonzero(mask)
    groups = np.split(idx, np.flatnonzero(np.diff(idx) != 1) + 1)
    return [
        (int(stream.offsets[g[0]]), int(stream.offsets[g[-1]] + stream.lengths[g[-1]] - stream.offsets[g[0]]))
        for g in groups
        if g.size
    ]


def _write_split(directory: Path, split: str, tokens: np.ndarray, runs, shard_tokens: int, dtype: str) -> list[shards.Shard]:
    out: list[shards.Shard] = []
    buf: list[np.ndarray] = []
    filled = 0

    def flush():
        nonlocal buf, filled
        out.append(shards.write_shard(directory, f"{split}-{len(out):05d}.bin", split, np.concatenate(buf), dtype))
        buf, filled = [], 0

    for off, n in runs:
        while n:
            take = min(n, shard_tokens - filled)
            buf.append(tokens[off : off + take])
            filled, off, n = filled + take, off + take, n - take
            if filled == shard_tokens:
                flush()
    if filled:
        flush()
    return out
