"""The metrics line format: one JSON object per line in $HEADNODE_RUN_DIR/metrics.jsonl.

Rank 0 writes a line per logged step and flushes it, so `tail -f` and the scheduler see it at once.
The scheduler reads the lines back with this module, on the head and on the hosts (where
scheduler/remote/probe_nodes.py runs it, bundled): it must stay standard-library only.

Fields (absent or null when not measured):
    step            optimizer steps done
    loss            training loss of this step (mean over the global batch, nats/token)
    eval_loss       held-out loss, on steps that evaluated
    lr              learning rate used by this step
    grad_norm       global gradient L2 norm before clipping
    tokens          training tokens seen so far, all ranks
    tokens_per_s    global training throughput of this step
    mfu             model FLOPs utilisation: flops_per_token * tokens_per_s / (peak FLOP/s * devices);
                    null when the device's peak is unknown (CPU unless --peak-flops is given)
    peak_mem_bytes  peak device memory of rank 0 (CUDA allocator) or its peak RSS on CPU
    step_time_s     wall time of this step on rank 0
    time            unix time the line was written
Lines may also carry {"event": ...} records (start, checkpoint, stop) with their own fields.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

FILE = "metrics.jsonl"
FIELDS = ("step", "loss", "eval_loss", "lr", "grad_norm", "tokens", "tokens_per_s", "mfu",
          "peak_mem_bytes", "step_time_s", "time")
TAIL_BYTES = 1 << 16  # a metrics line is ~300 bytes: the last 64 KiB always holds the last step


class MetricsWriter:
    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", buffering=1)  # line-buffered: every line reaches the file

    def write(self, **fields) -> None:
        fields.setdefault("time", round(time.time(), 3))
        self._f.write(json.dumps(fields, separators=(",", ":")) + "\n")

    def close(self) -> None:
        self._f.close()


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Every complete step line (event records and a torn last line are skipped)."""
    return step_lines(Path(path).read_text(errors="replace").splitlines())


def last_metrics(path: str | os.PathLike) -> dict | None:
    """The newest step line, reading only the file's tail; None when there is none (yet)."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - TAIL_BYTES))
            lines = f.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    steps = step_lines(lines)
    return steps[-1] if steps else None


def step_lines(lines: list[str]) -> list[dict]:
    """The step records among metrics lines: event records and unparsable (torn) lines are skipped."""
    return [d for d in _parse(lines) if "step" in d and "event" not in d]


def _parse(lines: list[str]):
    for line in lines:
        try:
            d = json.loads(line)
        except ValueError:  # a line being written right now, or a cut-off first line of a tail read
            continue
        if isinstance(d, dict):
            yield d
