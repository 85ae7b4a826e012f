"""Checkpoints with torch.distributed.checkpoint: `{run_dir}/checkpoints/step-NNNNNNNN/`, written
atomically, the newest `keep` kept, resumed from the newest complete one.

A checkpoint is written into `step-N.tmp-R/` (R: the writing rank) and renamed to `step-N/` only after
every rank finished writing and `trainer.json` (step, loader position, model config, dataset) is on
disk; a run killed mid-save leaves a `.tmp-R` that is ignored and cleaned up. Each folder holds:

    .metadata, __R_0.distcp   DCP: model and optimizer state ({"model": ..., "optim": ...})
    rng.pt                    every rank's torch RNG states, gathered by rank 0 (a list by rank)
    trainer.json              the rest of the training state, human-readable

Two layouts, chosen once per run by probing whether all ranks see the same run dir:

- shared (one node, or a shared filesystem): every rank writes its own shards (sharded DCP). Saving
  costs each rank only its part, and a run can resume with another parallelism or world size.
- per-host run dirs (headnode's multi-host default: `{workdir}/runs/{store}/{job}` on each host): the full
  (unsharded) state is gathered on every rank and each host's local rank 0 writes a complete copy,
  so any rank can resume from its own host's disk whichever node rank it gets next time. A run
  resumes from the newest step that every host has; on new hosts it starts from step 0. Gathering
  the full state costs a full copy of model and optimizer per device while saving: for models that
  need FSDP across hosts, give the run a shared run dir instead.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

STEP_DIR = re.compile(r"^step-(\d+)$")
FULL = StateDictOptions(full_state_dict=True)


def _dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    return dist.get_rank() if _dist() else 0


def _barrier() -> None:
    if _dist():
        dist.barrier()


def _broadcast(obj):
    if not _dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def complete_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint, oldest first."""
    root = Path(run_dir) / "checkpoints"
    found = [(int(m[1]), p) for p in root.glob("step-*") if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return sorted(found)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    found = complete_checkpoints(run_dir)
    return found[-1][1] if found else None


def read_trainer_state(path: str | os.PathLike) -> dict:
    return json.loads((Path(path) / "trainer.json").read_text())


def run_dir_is_shared(run_dir: Path) -> bool:
    """True when every rank sees the same run dir: rank 0 creates a file under a fresh random name
    (so no cached lookup can answer for it), then every rank looks for it."""
    if not _dist() or int(os.environ.get("LOCAL_WORLD_SIZE", "1")) == dist.get_world_size():
        return True
    probe = run_dir / f".shared-probe-{_broadcast(secrets.token_hex(8) if _rank() == 0 else None)}"
    if _rank() == 0:
        probe.touch()
    dist.barrier()
    shared = all(_all_gather(probe.exists()))
    if _rank() == 0:
        probe.unlink()
    return shared


class Checkpointer:
    def __init__(self, run_dir: str | os.PathLike, *, keep: int = 3, shared: bool = True):
        self.root = Path(run_dir) / "checkpoints"
        self.keep, self.shared = keep, shared
        # One writer per distinct run dir: rank 0 when all share it, else each host's local rank 0.
        self.writer = _rank() == 0 if shared else int(os.environ.get("LOCAL_RANK", "0")) == 0
        if self.writer:
            self.root.mkdir(parents=True, exist_ok=True)
            for stale in self.root.glob("step-*.tmp-*"):  # left by a run killed while saving
                shutil.rmtree(stale, ignore_errors=True)
        _barrier()

    def save(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> Path:
        """Collective: every rank calls it. Returns the final folder."""
        final = self.root / f"step-{step:08d}"
        # Writers never share a temp dir, even if a shared filesystem was taken for per-host dirs.
        tmp = final.with_name(f"{final.name}.tmp-{0 if self.shared else _rank()}")
        if self.writer:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        _barrier()
        msd, osd = get_state_dict(model, optimizer, options=None if self.shared else FULL)
        if self.shared or self.writer:
            _dcp(dcp.save, {"model": msd, "optim": osd}, tmp, collective=self.shared)
        rngs = _gather_rng()
        _barrier()
        if self.writer:
            torch.save(rngs, tmp / "rng.pt")
            _write_durably(tmp / "trainer.json", json.dumps(state, indent=1, sort_keys=True))
            if final.exists():  # a resumed run re-saving the step it resumed from
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_dir(self.root)
            for _, old in complete_checkpoints(self.root.parent)[:-self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        _barrier()
        return final

    def resume(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, check=None) -> dict | None:
        """Load the newest checkpoint every writer has into model and optimizer (collective); returns
        its trainer.json, or None when there is none. check(trainer_state) may refuse it by raising,
        before anything is loaded."""
        mine = {s for s, _ in complete_checkpoints(self.root.parent)} if self.writer else None
        step = max(set.intersection(*[s for s in _all_gather(mine) if s is not None]), default=None)
        if step is None:
            return None
        path = self.root / f"step-{step:08d}"
        state = read_trainer_state(path)
        if check is not None:
            check(state)
        if self.shared:
            msd, osd = get_state_dict(model, optimizer)
            _dcp(dcp.load, {"model": msd, "optim": osd}, path, collective=True)
            set_state_dict(model, optimizer, model_state_dict=msd, optim_state_dict=osd)
        else:  # every rank reads the full copy on its own host and keeps its part
            msd, osd = get_state_dict(model, optimizer, options=FULL)
            _dcp(dcp.load, {"model": msd, "optim": osd}, path, collective=False)
            set_state_dict(model, optimizer, model_state_dict=msd, optim_state_dict=osd, options=FULL)
        rngs = torch.load(path / "rng.pt")
        if _rank() < len(rngs):  # same world size: continue each rank's random stream exactly
            _set_rng(rngs[_rank()])
        return state


def _all_gather(obj) -> list:
    if not _dist():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _dcp(fn, state: dict, path: Path, *, collective: bool) -> None:
    """dcp.save / dcp.load, by all ranks together or by this process alone."""
    if collective and _dist():
        fn(state, checkpoint_id=path)
        return
    with warnings.catch_warnings():  # "assuming the intent is to save in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        fn(state, checkpoint_id=path, no_dist=True)


def _gather_rng() -> list[dict]:
    mine = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        mine["cuda"] = torch.cuda.get_rng_state()
    return _all_gather(mine)


def _set_rng(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _write_durably(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
