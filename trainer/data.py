"""Batches of token windows from memory-mapped shards: disjoint per rank, deterministic, resumable.

A split's shards are cut into non-overlapping windows of seq_len + 1 tokens (inputs and their
next-token targets; a window never straddles two shards). Training walks an endless stream of windows:
epoch e is a permutation of all window indices drawn from (seed, e). Each optimizer step consumes the
next `global_batch` windows of that stream and hands rank r of micro-step m the slice

    [position + (m * dp_size + r) * batch_size, ... + batch_size)

so the union over ranks and micro-steps is the same whatever the split into processes: one process
with batch 8 and two with batch 4 see the same windows per step. The stream position (one integer) is
all the state there is; it goes into the checkpoint, so a resumed run neither repeats nor skips data.

Evaluation reads a fixed set of windows in order: the `val` split when the dataset has one, else the
last ~1 % of the train windows, which training then never sees.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trainer import shards as shardfmt

HOLDOUT_FRACTION = 0.01


class Windows:
    """Window i of a list of shards, as an int64 array of seq_len + 1 tokens."""

    def __init__(self, maps: list[np.ndarray], seq_len: int):
        self.maps, self.seq_len = maps, seq_len
        counts = [max(0, (len(m) - 1) // seq_len) for m in maps]
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, i: int) -> np.ndarray:
        s = int(np.searchsorted(self.starts, i, side="right")) - 1
        off = (i - int(self.starts[s])) * self.seq_len
        return np.asarray(self.maps[s][off:off + self.seq_len + 1], dtype=np.int64)


class Loader:
    def __init__(self, data_dir: str | Path, *, seq_len: int, batch_size: int, dp_rank: int = 0,
                 dp_size: int = 1, accum_steps: int = 1, seed: int = 0):
        self.dir = Path(data_dir)
        self.manifest = shardfmt.read_manifest(self.dir)
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.dp_rank, self.dp_size, self.accum_steps = dp_rank, dp_size, accum_steps
        train = self._windows("train")
        val = self._windows("val")
        if len(val) == 0:  # no held-out split: keep the tail of train for evaluation
            held = max(1, int(len(train) * HOLDOUT_FRACTION)) if len(train) > 1 else 0
            self.n_train = len(train) - held
            self.val_ids = np.arange(self.n_train, len(train))
            val = train
        else:
            self.n_train = len(train)
            self.val_ids = np.arange(len(val))
        if self.n_train == 0:
            raise ValueError(f"{self.dir} holds fewer than {seq_len + 1} training tokens per shard, "
                             f"not enough for one window of seq_len {seq_len}")
        self.train, self.val = train, val
        self.position = 0  # windows of the training stream consumed so far
        self._epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def _windows(self, split: str) -> Windows:
        m = self.manifest
        return Windows([shardfmt.open_shard(self.dir, s, m.dtype) for s in m.split(split)], self.seq_len)

    @property
    def global_batch(self) -> int:
        """Windows per optimizer step, over all data-parallel ranks and micro-steps."""
        return self.batch_size * self.dp_size * self.accum_steps

    def _stream(self, p: int) -> int:
        epoch, i = divmod(p, self.n_train)
        if epoch != self._epoch:
            self._epoch = epoch
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n_train)
        return int(self._perm[i])

    def next_step(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's (inputs, targets) micro-batches for one optimizer step; advances the position."""
        out = []
        for m in range(self.accum_steps):
            first = self.position + (m * self.dp_size + self.dp_rank) * self.batch_size
            rows = np.stack([self.train[self._stream(p)] for p in range(first, first + self.batch_size)])
            t = torch.from_numpy(rows)
            out.append((t[:, :-1], t[:, 1:]))
        self.position += self.global_batch
        return out

    def eval_batches(self, max_windows: int):
        """This rank's share of the first max_windows held-out windows, in batches. Every rank gets as
        many batches as every other (FSDP and TP run collectives inside forward: they must pair up)."""
        n = min(max_windows, len(self.val_ids))
        ids = self.val_ids[:n - n % self.dp_size][self.dp_rank::self.dp_size]
        for i in range(0, len(ids), self.batch_size):
            t = torch.from_numpy(np.stack([self.val[int(j)] for j in ids[i:i + self.batch_size]]))
            yield t[:, :-1], t[:, 1:]

    def state_dict(self) -> dict:
        return {"position": self.position, "seed": self.seed, "global_batch": self.global_batch}

    def load_state_dict(self, state: dict) -> None:
        # The position counts windows, so it stays valid when the world size or batch split changes.
        self.position = int(state["position"])
