"""The trainer's command line and the checks that turn bad input into one sentence (exit 2)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from trainer import shards

PARALLEL = ("auto", "none", "ddp", "fsdp", "tp", "fsdp+tp")


class UsageError(Exception):
    """Bad input: printed as one line on stderr, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    from trainer.model import PRESETS

    p = argparse.ArgumentParser(prog="python -m trainer", description="Pretrain a GPT on token shards.")
    a = p.add_argument
    a("--data", help="dataset version dir with manifest.json (default $HEADNODE_DATA)")
    a("--run-dir", help="checkpoints and metrics.jsonl go here (default $HEADNODE_RUN_DIR)")
    a("--model", default="tiny", help=f"preset: {', '.join(PRESETS)} (default tiny)")
    a("--mlp", choices=("gelu", "swiglu"), help="override the preset's MLP")
    a("--dropout", type=float, help="override the preset's dropout (0)")
    a("--max-steps", type=int, default=1000, help="optimizer steps to train in all (default 1000)")
    a("--parallel", choices=PARALLEL, default="auto", help="auto: ddp when there are several ranks")
    a("--tp-size", type=int, help="tensor-parallel group size for fsdp+tp (default: ranks per node)")
    a("--batch-size", type=int, default=16, help="sequences per rank per micro-step (default 16)")
    a("--seq-len", type=int, help="tokens per sequence (default the preset's context)")
    a("--batch-tokens", type=int, help="global batch in tokens per optimizer step; the rest is made up "
      "by gradient accumulation (default one micro-step: batch-size x seq-len x data-parallel ranks)")
    a("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    a("--min-lr-ratio", type=float, default=0.1, help="cosine floor as a fraction of --lr (default 0.1)")
    a("--warmup-steps", type=int, help="linear warmup (default max-steps / 10, at most 200)")
    a("--decay-steps", type=int, help="cosine length (default max-steps)")
    a("--weight-decay", type=float, default=0.1)
    a("--grad-clip", type=float, default=1.0, help="clip the global gradient norm (0: off)")
    a("--eval-every", type=int, default=100, help="evaluate every N steps and at the end (0: never)")
    a("--eval-windows", type=int, default=128, help="held-out sequences per evaluation (default 128)")
    a("--ckpt-every", type=int, default=100, help="checkpoint every N steps, at the end and on SIGTERM")
    a("--keep", type=int, default=3, help="checkpoints kept (default 3)")
    a("--log-every", type=int, default=1, help="metrics line every N steps (default 1)")
    a("--seed", type=int, default=1337)
    a("--dtype", choices=("auto", "bf16", "fp32"), default="auto", help="auto: bf16 on CUDA, fp32 on CPU")
    a("--compile", action="store_true", help="torch.compile each block")
    a("--activation-checkpointing", action="store_true", help="recompute block activations in backward")
    a("--peak-flops", type=float, help="device peak FLOP/s for MFU (default: known GPUs; none on CPU)")
    a("--threads", type=int, help="CPU threads per rank (default: cores / ranks on this node)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from trainer.model import PRESETS

    args = build_parser().parse_args(argv)
    args.data = resolve_dir(args.data, "HEADNODE_DATA", "data", must_exist=True)
    args.run_dir = resolve_dir(args.run_dir, "HEADNODE_RUN_DIR", "run dir", must_exist=False)
    if not (args.data / shards.MANIFEST).is_file():
        raise UsageError(f"{args.data} has no {shards.MANIFEST}, so it is not a prepared dataset: "
                         "point --data at a version made by `headnode data prepare`")
    if args.model not in PRESETS:
        raise UsageError(f"unknown model preset {args.model!r}: choose one of {', '.join(PRESETS)}")
    for name in ("max_steps", "batch_size", "log_every", "keep"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    if args.seq_len is not None and args.seq_len < 1:
        raise UsageError("--seq-len must be at least 1")
    if args.warmup_steps is None:
        args.warmup_steps = min(200, args.max_steps // 10)
    if args.decay_steps is None:
        args.decay_steps = args.max_steps
    return args


def resolve_dir(value: str | None, env: str, what: str, *, must_exist: bool) -> Path:
    path = value or os.environ.get(env)
    if not path:
        raise UsageError(f"no {what} given: pass --{what.replace(' ', '-')} or set ${env}")
    p = Path(path).expanduser()
    if must_exist and not p.is_dir():
        raise UsageError(f"{what} {p} does not exist: check the path, or that the dataset is placed on this host")
    return p
