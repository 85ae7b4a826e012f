"""Trainer throughput against a minimal hand-written loop of the same model, batch and sequence.

    python benchmarks/trainer.py [--steps 40] [--repeat 3] [--threads N]

1. CPU (always): the `tiny` preset, 16 x 128 tokens per step, byte tokens of Python's json + email
   package sources, all cores in one process. Goal: trainer / baseline >= 0.97.
2. GPU (when CUDA is there): `gpt2-124m` in bf16 with torch.compile, 16 x 1024 tokens per step,
   GPT-2's 50257-token vocabulary (random tokens: throughput does not depend on their values), one
   GPU. Reports tokens/s, the ratio, and MFU = 6N + 12LdT FLOPs per token (trainer/model.py) x tokens/s
   / the card's dense bf16 peak, with the card's name. Goal: MFU >= 50 %.

The baseline is nanoGPT's loop reduced to what a step must do: random windows from the memmap, forward,
backward, clip, AdamW, warmup + cosine LR, loss.item(). The trainer runs as `python -m trainer` and
reports per-step tokens/s in its metrics; both take the median step after the first third (compile
and allocator warmup). Each side runs in its own process, alternately, --repeat times; best of each.
The machine may be shared: re-run before trusting a number.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from trainer import shards  # noqa: E402

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


def steady(values: list[float]) -> float:
    return statistics.median(values[len(values) // 3:])


def run_trainer(data: Path, run_dir: Path, cfg: dict, steps: int) -> float:
    argv = [sys.executable, "-m", "trainer", "--data", str(data), "--run-dir", str(run_dir),
            "--model", cfg["model"], "--batch-size", str(cfg["batch"]), "--seq-len", str(cfg["seq"]),
            "--max-steps", str(steps), "--eval-every", "0", "--ckpt-every", str(10 ** 9), "--dtype", cfg["dtype"],
            *(["--compile"] if cfg["compile"] else []), *(["--threads", str(cfg["threads"])] if cfg["threads"] else [])]
    subprocess.run(argv, cwd=ROOT, check=True, capture_output=True)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return steady([d["tokens_per_s"] for d in lines if "event" not in d])


def run_baseline(data: Path, cfg: dict, steps: int) -> float:
    out = subprocess.run([sys.executable, __file__, "--baseline", str(data), json.dumps(cfg), str(steps)],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def baseline(data: Path, cfg: dict, steps: int) -> float:
    """The hand-written loop; prints its steady tokens/s."""
    import torch

    from trainer.model import GPT, preset

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    torch.backends.cuda.matmul.allow_tf32 = True
    m = shards.read_manifest(data)
    tokens = shards.open_shard(data, m.split("train")[0], m.dtype)
    B, T = cfg["batch"], cfg["seq"]
    torch.manual_seed(0)
    model = GPT(preset(cfg["model"], vocab_size=m.vocab_size, seq_len=T)).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), fused=cuda)
    step_fn = torch.compile(model) if cfg["compile"] else model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg["dtype"] == "bf16")
    rates = []
    for step in range(steps):
        t0 = time.perf_counter()
        lr = 1e-3 * min(1.0, (step + 1) / max(1, steps // 10)) * (0.55 + 0.45 * math.cos(math.pi * step / steps))
        for g in opt.param_groups:
            g["lr"] = lr
        ix = np.random.randint(0, len(tokens) - T - 1, B)
        xy = torch.from_numpy(np.stack([tokens[i:i + T + 1].astype(np.int64) for i in ix])).to(device)
        with autocast:
            loss = step_fn(xy[:, :-1], xy[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        rates.append(B * T / (time.perf_counter() - t0))
    return steady(rates)


def compare(name: str, data: Path, cfg: dict, steps: int, repeat: int, tmp: Path) -> tuple[float, float]:
    ours, base = [], []
    for i in range(repeat):  # alternate, so a burst of load elsewhere hits both sides alike
        base.append(run_baseline(data, cfg, steps))
        ours.append(run_trainer(data, tmp / f"{name}-{i}", cfg, steps))
    best_ours, best_base = max(ours), max(base)
    print(f"{name}: trainer {best_ours:,.0f} tokens/s, hand-written loop {best_base:,.0f} tokens/s, "
          f"ratio {best_ours / best_base:.3f} (goal >= 0.97)")
    return best_ours, best_base


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--baseline":
        print(baseline(Path(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, help="CPU threads for both sides (default: all cores)")
    args = p.parse_args()
    CPU["threads"] = GPU["threads"] = args.threads
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        threads = args.threads or os.cpu_count()
        print(f"CPU: {threads} thread(s); tiny preset, {CPU['batch']} x {CPU['seq']} tokens per step")
        compare("cpu", byte_dataset(tmp / "bytes"), CPU, args.steps, args.repeat, tmp)
        import torch

        if not torch.cuda.is_available():
            print("GPU: none here; the gpt2-124m bf16 MFU figure needs a CUDA machine")
            return
        from trainer.loop import PEAK_BF16
        from trainer.model import flops_per_token, preset

        name = torch.cuda.get_device_name()
        ours, _ = compare("gpu", gpt2_vocab_dataset(tmp / "gpt2"), GPU, args.steps, args.repeat, tmp)
        peak = next((f for key, f in PEAK_BF16 if key in name), None)
        fpt = flops_per_token(preset("gpt2-124m", vocab_size=50257, seq_len=GPU["seq"]), GPU["seq"])
        mfu = f"{fpt * ours / peak:.1%} of {peak / 1e12:.0f} TFLOP/s dense bf16" if peak else "unknown peak"
        print(f"GPU: {name}: gpt2-124m bf16 compiled, {ours:,.0f} tokens/s, MFU {mfu} (goal >= 50 %)")


if __name__ == "__main__":
    main()
