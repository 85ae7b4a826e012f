"""Rules every front end shares, each defined once (pure functions over plain values)."""

from __future__ import annotations


def procs_per_node(gpus_per_node: int, procs_per_node: int | None) -> int:
    """Processes torchrun starts on each node: one per GPU for a GPU job (a rank per device), else
    --procs-per-node as asked, else one."""
    return gpus_per_node or procs_per_node or 1
