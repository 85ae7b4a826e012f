"""Trainer throughput against a minimal hand-written loop of the same model, batch and sequence.

    python benchmarks/trainer.py [--steps 60] [--threads N]

1. CPU (where there is no GPU; the trainer uses CUDA when it can): the `tiny` preset, 16 x 128
   tokens per step, byte tokens of Python's json + email package sources.
   Goal: trainer / baseline tokens/s >= 0.97.
2. GPU (where CUDA is): `gpt2-124m` in bf16 with torch.compile, 16 x 1024 tokens per step,
   GPT-2's 50257-token vocabulary (random tokens: throughput does not depend on their values), one
   GPU. Reports both tokens/s, the ratio, and MFU = (6N + 12LdT FLOPs per token, trainer/model.py) x
   tokens/s / the card's dense bf16 peak, with the card's name. Goal: MFU >= 50 %.

The baseline is nanoGPT's loop cut down to what a step must do: random windows from the memmap,
forward, backward, clip, AdamW, loss.item(). The trainer side is the trainer's own step
(`Trainer.train_step`: its loader, LR schedule, clipping, loss all-reduce and stop check) plus writing
its metrics line, on a Trainer built from the same command line `python -m trainer` parses. Both live
in this one process and take turns step by step (ABBA order), so a burst of load from elsewhere on a
shared machine hits both alike; each side's figure is its median step after the first third (compile
and allocator warmup).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from trainer import shards  # noqa: E402
from trainer.config import parse_args  # noqa: E402
from trainer.loop import PEAK_BF16, Trainer  # noqa: E402
from trainer.model import GPT, flops_per_token, preset  # noqa: E402

CPU = dict(model="tiny", batch=16, seq=128, compile=False, dtype="fp32")
GPU = dict(model="gpt2-124m", batch=16, seq=1024, compile=True, dtype="bf16")


def byte_dataset(directory: Path) -> Path:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs = [p.read_bytes() for pkg in ("json", "email") for p in sorted((stdlib / pkg).rglob("*.py"))]
    tokens = np.concatenate([np.append(np.frombuffer(d, np.uint8).astype(np.uint16), 256) for d in docs])
    return _write(directory, tokens, vocab=257, eot=256, tokenizer={"kind": "byte"})


def gpt2_vocab_dataset(directory: Path, n_tokens: int = 1 << 24) -> Path:
    tokens = np.random.default_rng(0).integers(0, 50257, n_tokens, dtype=np.uint16)
    return _write(directory, tokens, vocab=50257, eot=50256, tokenizer={"kind": "random"})


def _write(directory: Path, tokens: np.ndarray, *, vocab: int, eot: int, tokenizer: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    cut = len(tokens) - len(tokens) // 50
    s = [shards.write_shard(directory, "train-00000.bin", "train", tokens[:cut], "uint16"),
         shards.write_shard(directory, "val-00000.bin", "val", tokens[cut:], "uint16")]
    shards.write_manifest(directory, shards.Manifest(tokenizer, vocab, eot, "uint16", s))
    return directory


class HandLoop:
    """The baseline: the same model and optimizer settings, nothing else."""

    def __init__(self, data: Path, cfg: dict, device: torch.device):
        m = shards.read_manifest(data)
        self.tokens = shards.open_shard(data, m.split("train")[0], m.dtype)
        self.B, self.T, self.device = cfg["batch"], cfg["seq"], device
        torch.manual_seed(0)
        self.model = GPT(preset(cfg["model"], vocab_size=m.vocab_size, seq_len=self.T)).to(device)
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        rest = [p for p in self.model.parameters() if p.dim() < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                                     lr=1e-3, betas=(0.9, 0.95), fused=device.type == "cuda")
        self.forward = torch.compile(self.model) if cfg["compile"] else self.model
        self.bf16 = cfg["dtype"] == "bf16"

    def step(self) -> None:
        ix = np.random.randint(0, len(self.tokens) - self.T - 1, self.B)
        xy = torch.from_numpy(np.stack([self.tokens[i:i + self.T + 1].astype(np.int64) for i in ix])).to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.forward(xy[:, :-1], xy[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        loss.item()


def compare(name: str, data: Path, cfg: dict, steps: int, threads: int | None, run_dir: Path) -> float:
    """Prints both sides' tokens/s and their ratio; returns the trainer's tokens/s."""
    argv = ["--data", str(data), "--run-dir", str(run_dir), "--model", cfg["model"], "--batch-size", str(cfg["batch"]),
            "--seq-len", str(cfg["seq"]), "--max-steps", str(10 * steps), "--dtype", cfg["dtype"],
            *(["--compile"] if cfg["compile"] else []), *(["--threads", str(threads)] if threads else [])]
    trainer = Trainer(parse_args(argv))
    hand = HandLoop(data, cfg, trainer.device)

    def trainer_step():
        _, line = trainer.train_step()
        trainer.log(**line)

    times: dict[str, list[float]] = {"trainer": [], "hand": []}
    for i in range(steps):
        order = [("trainer", trainer_step), ("hand", hand.step)]
        for side, fn in order if i % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            fn()
            times[side].append(time.perf_counter() - t0)
    trainer.close()
    tokens = cfg["batch"] * cfg["seq"]
    ours, base = (tokens / statistics.median(times[s][steps // 3:]) for s in ("trainer", "hand"))
    print(f"{name}: trainer {ours:,.0f} tokens/s, hand-written loop {base:,.0f} tokens/s, "
          f"ratio {ours / base:.3f} (goal >= 0.97)")
    return ours


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=60, help="steps per side (default 60)")
    p.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if not torch.cuda.is_available():
            threads = args.threads or len(os.sched_getaffinity(0))
            print(f"CPU: {threads} thread(s); tiny preset, {CPU['batch']} x {CPU['seq']} tokens per step")
            compare("cpu", byte_dataset(tmp / "bytes"), CPU, args.steps, args.threads, tmp / "cpu")
            print("GPU: none here; the gpt2-124m bf16 MFU figure needs a CUDA machine")
            return
        name = torch.cuda.get_device_name()
        ours = compare(f"gpu ({name})", gpt2_vocab_dataset(tmp / "gpt2"), GPU, args.steps, None, tmp / "gpu")
        peak = next((f for key, f in PEAK_BF16 if key in name), None)
        fpt = flops_per_token(preset("gpt2-124m", vocab_size=50257, seq_len=GPU["seq"]), GPU["seq"])
        mfu = f"{fpt * ours / peak:.1%} of {peak / 1e12:.0f} TFLOP/s dense bf16" if peak else "unknown peak"
        print(f"GPU: {name}: gpt2-124m bf16 compiled, {ours:,.0f} tokens/s, MFU {mfu} (goal >= 50 %)")


if __name__ == "__main__":
    main()
