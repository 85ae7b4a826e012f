"""Generate text from a run's newest checkpoint, on one process:

    python -m trainer.sample --run-dir RUN --prompt "def main(" [--tokens 200] [--temperature 0.8]

The checkpoint may come from any parallelism: DCP reshards it into the plain model. The tokenizer is the
dataset's (its manifest's "tokenizer" as stored in trainer.json): bytes, or a `tokenizers` BPE file found
in the dataset dir (--data overrides where that is, e.g. on another host).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

from trainer.checkpoint import latest_checkpoint, read_trainer_state
from trainer.model import GPT, GPTConfig, generate


class ByteCodec:
    """Tokens 0..255 are bytes; the end-of-text token (256) and padding decode to nothing."""

    def encode(self, text: str) -> list[int]:
        return list(text.encode())

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode(errors="replace")


class BPECodec:
    def __init__(self, file: Path):
        from tokenizers import Tokenizer  # only BPE datasets need it, and hosts may lack it

        self.tok = Tokenizer.from_file(str(file))

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)


def codec_for(state: dict, data_dir: Path | None):
    tok = state["tokenizer"]
    if tok["kind"] == "byte":
        return ByteCodec()
    if tok["kind"] == "bpe":
        return BPECodec((data_dir or Path(state["data"])) / tok["file"])
    raise ValueError(f"unknown tokenizer kind {tok['kind']!r}")


def load_model(checkpoint: Path, device: torch.device) -> GPT:
    state = read_trainer_state(checkpoint)
    model = GPT(GPTConfig(**state["model"]))
    msd = get_model_state_dict(model)
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        dcp.load({"model": msd}, checkpoint_id=checkpoint, no_dist=True)
    set_model_state_dict(model, msd)
    return model.to(device).eval()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.sample", description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", required=True, type=Path)
    p.add_argument("--prompt", default="\n")
    p.add_argument("--tokens", type=int, default=200, help="tokens to generate (default 200)")
    p.add_argument("--temperature", type=float, default=0.8, help="0: greedy")
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, help="dataset dir holding the tokenizer (default: the run's)")
    args = p.parse_args(argv)

    ckpt = latest_checkpoint(args.run_dir)
    if ckpt is None:
        print(f"trainer.sample: {args.run_dir} holds no complete checkpoint: train first "
              "(python -m trainer --run-dir ...)", file=sys.stderr)
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(ckpt, device)
    state = read_trainer_state(ckpt)
    try:
        codec = codec_for(state, args.data)
    except (ValueError, OSError, ImportError, RuntimeError) as e:  # tokenizers raises plain Exceptions too
        print(f"trainer.sample: cannot load the run's tokenizer ({e}): pass --data DIR with the dataset "
              "that holds it, or install `tokenizers`", file=sys.stderr)
        return 2
    ids = codec.encode(args.prompt) or [state["eot"]]
    g = torch.Generator(device=device).manual_seed(args.seed)
    out = generate(model, torch.tensor([ids], device=device), args.tokens, temperature=args.temperature,
                   top_k=args.top_k, generator=g)
    sys.stdout.write(codec.decode(out[0].tolist()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
