"""The training loop: AdamW, warmup + cosine, gradient accumulation to a global batch, clipping,
evaluation, checkpoints, metrics, and a clean stop on SIGTERM."""

from __future__ import annotations

import contextlib
import math
import os
import resource
import signal
import sys
import time

import torch
import torch.distributed as dist

from trainer import checkpoint, metrics, shards
from trainer.config import UsageError
from trainer.data import Loader
from trainer.model import GPT, flops_per_token, preset
from trainer.parallelize import clip_grad_norm, grad_sync, make_layout, parallelize

# Dense bf16 peak FLOP/s by device name (first match wins), for MFU; others need --peak-flops.
PEAK_BF16 = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12),
             ("B200", 2250e12), ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12))


def lr_at(step: int, *, peak: float, warmup: int, decay: int, min_ratio: float) -> float:
    """Linear warmup from peak/warmup to peak, then cosine down to min_ratio * peak at `decay`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if step >= decay:
        return peak * min_ratio
    progress = (step - warmup) / max(1, decay - warmup)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class StopFlag:
    """Set by SIGTERM/SIGINT once armed; the loop reads it between steps, and all ranks agree before
    stopping."""

    def __init__(self):
        self.signum: int | None = None

    def arm(self) -> None:
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            print(f"trainer: got {signal.Signals(signum).name}: finishing this step, then checkpointing",
                  file=sys.stderr, flush=True)
        self.signum = signum


class Trainer:
    def __init__(self, args):
        self.args = a = args
        self.stop = StopFlag()
        self.device = self._init_distributed()
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        cuda = self.device.type == "cuda"
        self.bf16 = a.dtype == "bf16" or (a.dtype == "auto" and cuda)
        if self.bf16 and not cuda:
            raise UsageError("--dtype bf16 needs a CUDA device; this host has none (use --dtype fp32)")

        mode = a.parallel if a.parallel != "auto" else ("ddp" if self.world > 1 else "none")
        try:
            self.layout = make_layout(mode, self.device.type, a.tp_size)
        except ValueError as e:
            raise UsageError(str(e)) from None

        try:
            manifest = shards.read_manifest(a.data)
        except (ValueError, KeyError, OSError) as e:
            raise UsageError(f"{a.data}/{shards.MANIFEST} cannot be read ({e}): prepare the dataset again") from None
        self.cfg = preset(a.model, vocab_size=manifest.vocab_size, seq_len=a.seq_len, mlp=a.mlp, dropout=a.dropout)
        T, dp = self.cfg.seq_len, self.layout.dp_size
        micro_tokens = a.batch_size * T * dp
        self.batch_tokens = a.batch_tokens or micro_tokens
        if self.batch_tokens % micro_tokens:
            raise UsageError(f"--batch-tokens {self.batch_tokens} is not a multiple of batch-size x seq-len x "
                             f"data-parallel ranks = {a.batch_size} x {T} x {dp} = {micro_tokens}")
        try:
            self.loader = Loader(a.data, seq_len=T, batch_size=a.batch_size, dp_rank=self.layout.dp_rank,
                                 dp_size=dp, accum_steps=self.batch_tokens // micro_tokens, seed=a.seed)
        except ValueError as e:
            raise UsageError(str(e)) from None

        torch.manual_seed(a.seed)  # the same initial weights on every rank
        self.raw = GPT(self.cfg)
        self.n_params = self.raw.num_params()
        try:
            self.model = parallelize(self.raw, self.layout, device=self.device, compile=a.compile,
                                     activation_checkpointing=a.activation_checkpointing,
                                     param_dtype=torch.bfloat16 if self.bf16 else None)
        except ValueError as e:
            raise UsageError(str(e)) from None
        torch.manual_seed(a.seed + 1 + self.layout.dp_rank)  # dropout differs across data shards only
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                         if self.bf16 and "fsdp" not in self.layout.mode else contextlib.nullcontext())
        self.optimizer = self._make_optimizer()

        a.run_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt = checkpoint.Checkpointer(a.run_dir, keep=a.keep, shared=checkpoint.run_dir_is_shared(a.run_dir))
        self.writer = metrics.MetricsWriter(a.run_dir) if self.rank == 0 else None
        self.flops_per_token = flops_per_token(self.cfg, T)
        self.peak_flops = a.peak_flops or (self._known_peak() if self.bf16 else None)
        self.step, self.tokens = 0, 0

    def _init_distributed(self) -> torch.device:
        cuda = torch.cuda.is_available()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        else:  # ranks on one node share its cores; oversubscribing them costs more than it brings
            local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            torch.set_num_threads(self.args.threads or max(1, len(os.sched_getaffinity(0)) // local))
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
        return device

    def _make_optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        # Weight decay on matrices (and the tied embedding) only; norms and biases are left alone.
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": self.args.weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        fused = self.device.type == "cuda"
        return torch.optim.AdamW(groups, lr=self.args.lr, betas=(0.9, 0.95), eps=1e-8, fused=fused)

    def _known_peak(self) -> float | None:
        name = torch.cuda.get_device_name(self.device)
        return next((f for key, f in PEAK_BF16 if key in name), None)

    def _trainer_state(self) -> dict:
        m = self.loader.manifest
        return {"step": self.step, "tokens": self.tokens, "loader": self.loader.state_dict(),
                "model": self.cfg.to_json(), "preset": self.args.model, "data": str(self.args.data),
                "dataset_version": m.version, "tokenizer": m.tokenizer, "eot": m.eot,
                "world_size": self.world, "parallel": self.layout.mode, "time": time.time()}

    def _can_resume(self, state: dict) -> None:
        """Continuing a run on other data or with another model would be silently wrong: refuse."""
        version = self.loader.manifest.version
        if state["dataset_version"] != version:
            raise UsageError(f"{self.args.run_dir} holds a run on dataset version {state['dataset_version']}, "
                             f"but --data is version {version}: use a new run dir, or the run's own dataset")
        if state["model"] != self.cfg.to_json():
            raise UsageError(f"{self.args.run_dir} holds a run of another model ({state['model']}): "
                             "use a new run dir, or the same --model, --seq-len and --mlp")

    def log(self, **fields) -> None:
        if self.writer is not None:
            self.writer.write(**fields)

    def say(self, text: str) -> None:
        if self.rank == 0:
            print(text, flush=True)

    def run(self) -> bool:
        """Train to max_steps; False when a signal stopped it first (after a checkpoint)."""
        a = self.args
        self.stop.arm()  # from here on a signal means "checkpoint and leave", not "die"
        state = self.ckpt.resume(self.model, self.optimizer, check=self._can_resume)
        if state is not None:
            self.step, self.tokens = state["step"], state["tokens"]
            self.loader.load_state_dict(state["loader"])
        self.log(event="start", step=self.step, resumed=state is not None, world_size=self.world,
                 parallel=self.layout.mode, model=a.model, params=self.n_params, dataset=self.loader.manifest.version,
                 batch_tokens=self.batch_tokens, accum_steps=self.loader.accum_steps,
                 flops_per_token=self.flops_per_token, device=str(self.device))
        self.say(f"{a.model}: {self.n_params / 1e6:.2f}M parameters, {self.world} rank(s), {self.layout.mode}, "
                 f"{self.batch_tokens} tokens/step, " + (f"resumed at step {self.step}" if state else "from scratch"))
        self.model.train()
        while self.step < a.max_steps:
            stop, line = self.train_step()
            last = self.step == a.max_steps
            evaluate = a.eval_every and (self.step % a.eval_every == 0 or last)
            if evaluate:
                line["eval_loss"] = self.evaluate()
            if evaluate or stop or last or self.step % a.log_every == 0:
                self.log(**line)
                self.say(f"step {self.step}/{a.max_steps} loss {line['loss']:.4f} lr {line['lr']:.2e} "
                         f"{line['tokens_per_s'] / 1e3:.1f}k tok/s"
                         + (f" mfu {line['mfu']:.1%}" if line["mfu"] is not None else "")
                         + (f" eval {line['eval_loss']:.4f}" if line.get("eval_loss") is not None else ""))
            if stop or self.step % a.ckpt_every == 0 or self.step == a.max_steps:
                path = self.ckpt.save(self.step, self.model, self.optimizer, self._trainer_state())
                self.log(event="checkpoint", step=self.step, path=str(path))
            if stop:
                self.log(event="stop", step=self.step, signal=signal.Signals(self.stop.signum).name)
                self.say(f"stopped at step {self.step} on {signal.Signals(self.stop.signum).name}; checkpoint written")
                return False
        self.log(event="done", step=self.step)
        return True

    def train_step(self) -> tuple[bool, dict]:
        """One optimizer step; returns whether any rank was asked to stop, and its metrics."""
        a = self.args
        t0 = time.perf_counter()
        lr = lr_at(self.step, peak=a.lr, warmup=a.warmup_steps, decay=a.decay_steps, min_ratio=a.min_lr_ratio)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        micro = self.loader.next_step()
        loss_sum = torch.zeros((), device=self.device)
        for i, (x, y) in enumerate(micro):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with grad_sync(self.model, i == len(micro) - 1), self.autocast:
                loss = self.model(x, y) / len(micro)
            loss.backward()
            loss_sum += loss.detach()
        grad_norm = clip_grad_norm(self.model.parameters(), a.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens += self.batch_tokens
        # One small all-reduce carries both the loss (for the log) and "stop?" so no rank leaves alone.
        both = torch.stack([loss_sum, torch.tensor(float(bool(self.stop.signum)), device=self.device)])
        if self.world > 1:
            dist.all_reduce(both)
        loss, stop = both.tolist()
        loss /= self.world  # TP ranks hold the same loss; averaging over the world averages over data
        dt = time.perf_counter() - t0
        tps = self.batch_tokens / dt
        mfu = self.flops_per_token * tps / (self.peak_flops * self.world) if self.peak_flops else None
        return stop > 0, dict(step=self.step, loss=loss, lr=lr, grad_norm=grad_norm.item(), tokens=self.tokens,
                              tokens_per_s=round(tps, 1), mfu=mfu, peak_mem_bytes=self._peak_mem(),
                              step_time_s=round(dt, 5))

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Mean loss per token over the same held-out windows whatever the world size."""
        total = torch.zeros(2, device=self.device, dtype=torch.float64)
        self.model.eval()
        for x, y in self.loader.eval_batches(self.args.eval_windows):
            x, y = x.to(self.device), y.to(self.device)
            with self.autocast:
                total[0] += self.model(x, y).double() * y.numel()
            total[1] += y.numel()
        self.model.train()
        if self.world > 1:
            dist.all_reduce(total)
        return (total[0] / total[1]).item() if total[1] > 0 else None

    def _peak_mem(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
