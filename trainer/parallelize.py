"""Apply parallelism to a plain GPT, in torchtitan's order: tensor parallel -> activation checkpointing
-> compile -> FSDP2 (or DDP). The model file knows nothing of this.

Modes (world = all ranks; tp = --tp-size, default the GPUs of one node so TP traffic stays on NVLink):
    none     one process
    ddp      replicate the model, all-reduce gradients
    fsdp     FSDP2 `fully_shard` per block then the root: parameters, gradients and optimizer state
             sharded over all ranks (for models whose training state does not fit one device)
    tp       Megatron-style tensor parallel over all ranks: q/k/v and the MLP's input layers split
             column-wise, both output projections row-wise (one all-reduce each per block)
    fsdp+tp  2-D mesh (dp, tp): TP inside groups of tp ranks, FSDP2 across them

The model arrives built whole on the CPU from the same seed on every rank (so every layout starts from
the same weights as one process) and is sharded here: its fp32 weights must fit host memory once per
rank, while gradients and AdamW state, three quarters of training memory, only ever exist sharded.

The embedding and head stay replicated under TP: a vocab-parallel *tied* embedding gets untied by
`parallelize_module` and trains wrong (FIELD-NOTES), and at GPT-2 vocab sizes it is a small share.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

MODES = ("none", "ddp", "fsdp", "tp", "fsdp+tp")


@dataclass
class Layout:
    mode: str
    mesh: DeviceMesh | None
    dp_rank: int  # which shard of the data this rank reads
    dp_size: int  # how many different batches are read at once
    tp_size: int


def make_layout(mode: str, device_type: str, tp_size: int | None = None) -> Layout:
    """The device mesh for a mode; checks that the world fits it (ValueError with the reason)."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    if mode not in MODES:
        raise ValueError(f"unknown parallelism {mode!r} (choose from {', '.join(MODES)})")
    if world == 1 or mode == "none":
        if world > 1:
            raise ValueError(f"--parallel none runs one process, but the world has {world}")
        return Layout("none", None, 0, 1, 1)
    if mode == "ddp":
        return Layout(mode, None, rank, world, 1)
    if mode == "fsdp":
        return Layout(mode, init_device_mesh(device_type, (world,), mesh_dim_names=("dp",)), rank, world, 1)
    if mode == "tp":
        return Layout(mode, init_device_mesh(device_type, (world,), mesh_dim_names=("tp",)), 0, 1, world)
    tp = tp_size or int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if tp < 2 or world % tp or world == tp:
        raise ValueError(f"fsdp+tp needs a tp size that divides the world of {world} into at least 2 groups "
                         f"of at least 2 ranks (got tp size {tp}); pass --tp-size")
    mesh = init_device_mesh(device_type, (world // tp, tp), mesh_dim_names=("dp", "tp"))
    return Layout(mode, mesh, mesh["dp"].get_local_rank(), world // tp, tp)


def parallelize(model: nn.Module, layout: Layout, *, device: torch.device, compile: bool = False,
                activation_checkpointing: bool = False, param_dtype: torch.dtype | None = None) -> nn.Module:
    """Returns the module to train (the same object, or its DDP wrapper), on `device`.
    param_dtype: FSDP2's compute dtype (bf16 on CUDA); other modes use autocast instead."""
    if layout.tp_size > 1:
        _apply_tp(model, layout.mesh["tp"])
    if activation_checkpointing:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

        for i, block in enumerate(model.blocks):
            model.blocks[i] = checkpoint_wrapper(block, preserve_rng_state=False)
    if compile:
        for i, block in enumerate(model.blocks):  # per block: small graphs, one compile reused L times
            model.blocks[i] = torch.compile(block)
    if layout.mode in ("fsdp", "fsdp+tp"):
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
        for block in model.blocks:
            fully_shard(block, mesh=layout.mesh["dp"], mp_policy=mp)
        fully_shard(model, mesh=layout.mesh["dp"], mp_policy=mp)
    model.to(device)
    if layout.mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model


def _apply_tp(model: nn.Module, mesh: DeviceMesh) -> None:
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    cfg = model.cfg
    if cfg.n_head % mesh.size():
        raise ValueError(f"tensor parallel of {mesh.size()} needs n_head ({cfg.n_head}) divisible by it")
    for block in model.blocks:
        plan = {"attn.q": ColwiseParallel(), "attn.k": ColwiseParallel(), "attn.v": ColwiseParallel(),
                "attn.proj": RowwiseParallel(), "mlp.fc": ColwiseParallel(), "mlp.proj": RowwiseParallel()}
        if cfg.mlp == "swiglu":
            plan["mlp.gate"] = ColwiseParallel()
        parallelize_module(block, mesh, plan)


def grad_sync(model: nn.Module, enabled: bool):
    """Context for one micro-step's forward+backward: skip the gradient all-reduce / reduce-scatter on
    all but the last micro-step of an accumulated step (the sum is reduced once at the end)."""
    if enabled:
        return contextlib.nullcontext()
    if hasattr(model, "no_sync"):  # DDP
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2

        @contextlib.contextmanager
        def unsynced():
            model.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                model.set_requires_gradient_sync(True)

        return unsynced()
    return contextlib.nullcontext()


@torch.no_grad()
def clip_grad_norm(params, max_norm: float) -> torch.Tensor:
    """Global L2 norm of all gradients (clipped to max_norm when > 0), over any mix of plain tensors
    and DTensors on different meshes (TP leaves embeddings and norms as plain tensors)."""
    from torch.distributed.tensor import DTensor

    groups: dict[object, list[torch.Tensor]] = {}
    for p in params:
        if p.grad is not None:
            key = (p.grad.device_mesh, p.grad.placements) if isinstance(p.grad, DTensor) else None
            groups.setdefault(key, []).append(p)
    sq = []
    for ps in groups.values():
        n = torch.nn.utils.get_total_norm([p.grad for p in ps])
        sq.append((n.full_tensor() if isinstance(n, DTensor) else n).float() ** 2)
    total = torch.stack(sq).sum().sqrt()
    if max_norm > 0:
        for ps in groups.values():
            torch.nn.utils.clip_grads_with_norm_(ps, max_norm, total)
    return total
