"""Datasets: prepare tokenized shards, version them, ship them to hosts and verify the copies there.

What the scheduler needs is importable from here without numpy: `resolve` (a `--data` spec to its
row), `preflight` (each host's copy state) and `host_path` (where a version lives on a host).
"""

from scheduler.data.versions import host_path, preflight, resolve

__all__ = ["host_path", "preflight", "resolve"]
