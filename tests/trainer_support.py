"""What the trainer tests share: a small real dataset, and running the trainer as a process."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import sysconfig
from collections import Counter
from pathlib import Path

import numpy as np

from trainer import shards

BYTE_EOT = 256
# Small enough for 2 busy cores: the tiny preset at 64-token context, one thread per rank.
TINY = ["--model", "tiny", "--seq-len", "64", "--threads", "1"]


def stdlib_dataset(directory: Path, *, val: bool = True) -> Path:
    """Python's own `json` and `email` package sources (~426 kB), byte-tokenized, one document per
    file ended by eot; the last 5 % of the tokens are held out as `val` when val=True."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for pkg in ("json", "email") for p in (stdlib / pkg).rglob("*.py"))
    docs = [np.append(np.frombuffer(p.read_bytes(), np.uint8).astype(np.uint16), BYTE_EOT) for p in files]
    directory.mkdir(parents=True, exist_ok=True)
    tokens = np.concatenate(docs)
    cut = len(tokens) - len(tokens) // 20 if val else len(tokens)
    entries = [shards.write_shard(directory, "train-00000.bin", "train", tokens[:cut], "uint16")]
    if val:
        entries.append(shards.write_shard(directory, "val-00000.bin", "val", tokens[cut:], "uint16"))
    m = shards.Manifest(tokenizer={"kind": "byte"}, vocab_size=257, eot=BYTE_EOT, dtype="uint16", shards=entries)
    shards.write_manifest(directory, m)
    return directory


def unigram_entropy(directory: Path) -> float:
    """Entropy in nats of the training tokens' frequencies: the loss of the best context-free model."""
    m = shards.read_manifest(directory)
    counts = Counter()
    for s in m.split("train"):
        counts.update(np.asarray(shards.open_shard(directory, s, m.dtype)).tolist())
    n = sum(counts.values())
    return -sum(c / n * math.log(c / n) for c in counts.values())


def trainer_env(*, gpu: bool = False) -> dict:
    """The environment for a trainer process: CPU only unless gpu=True (the CPU tests compare exact
    float32 numbers, and two ranks on a one-GPU machine would otherwise both pick cuda)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADNODE_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def run_trainer(data: Path, run_dir: Path, *args: str, nproc: int = 1, timeout: float = 240,
                check: bool = True, gpu: bool = False) -> subprocess.CompletedProcess:
    """`python -m trainer`, or under `torchrun --standalone` when nproc > 1."""
    launcher = [sys.executable, "-m", "trainer"] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "trainer"]
    proc = subprocess.run([*launcher, "--data", str(data), "--run-dir", str(run_dir), *TINY, *args],
                          env=trainer_env(gpu=gpu), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"trainer exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def step_lines(run_dir: Path) -> dict[int, dict]:
    """step -> its metrics line; a step run twice (killed before its checkpoint) keeps the rerun."""
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {d["step"]: d for d in lines if "event" not in d}


def losses(run_dir: Path) -> dict[int, float]:
    return {s: d["loss"] for s, d in step_lines(run_dir).items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
