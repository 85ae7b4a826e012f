"""Where a host's ranks meet: the address torchrun is given for it (`--local-addr` on the host itself,
`--rdzv-endpoint` on every node when it is node 0). That is not always where SSH goes: hosts.toml's
`address` may be an `~/.ssh/config` alias (reached through a ProxyJump gateway) that no host can
resolve, or a management address while ranks talk on the cluster network.

A host's rendezvous address is the first of:

1. `rdzv_address` in hosts.toml;
2. what `headnode hosts probe` learned on the host itself (remote/probe_host.py): the IPv4 address of
   its `network_interface` when one is set, else the address its SSH connection arrived at
   (SSH_CONNECTION: through a ProxyJump, the address the gateway reached it at). A probe made for
   another address or interface than hosts.toml names now does not count;
3. the SSH destination after the ssh config (HostName), when it is an IP address, or a DNS name
   that this machine resolves (the hosts are taken to share its DNS; a probe overrides it).

An SSH alias is never one. A host with none takes no part in multi-node jobs: they wait, with a reason
saying to set rdzv_address or run `hosts probe` (scheduler/loop.py). A single-node job meets on the
loopback address, and `localhost` on 127.0.0.1 unless rdzv_address says otherwise.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .inventory import Host, Inventory
from .store import Store

LOOPBACK = "127.0.0.1"
RESOLVE_TTL = 60.0  # seconds a "this machine resolves NAME" answer is kept


@dataclass(frozen=True)
class Meeting:
    """A host's rendezvous address (None: not known) and where it came from, for humans."""

    address: str | None
    source: str


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def endpoint(address: str, port: int) -> str:
    """HOST:PORT as torchrun parses it (an IPv6 address in brackets)."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def learned(host: Host, probe: dict | None) -> str | None:
    """The address the host's last probe learned, if that probe was made for the current hosts.toml."""
    if not probe or not probe.get("rdzv_address"):
        return None
    if probe.get("address") != host.address or probe.get("network_interface") != host.network_interface:
        return None
    return probe["rdzv_address"]


def resolve(
    host: Host,
    probe: dict | None = None,
    *,
    lookup: Callable[[Host], dict] | None = None,
    resolves: Callable[[str], bool] | None = None,
) -> Meeting:
    """Host's rendezvous address by the rules above. `probe` is its last `hosts probe` entry (or the
    part of it with address, network_interface and rdzv_address)."""
    if host.rdzv_address:
        return Meeting(host.rdzv_address, "rdzv_address in hosts.toml")
    if host.is_local:
        return Meeting(LOOPBACK, "localhost")
    found = learned(host, probe)
    if found:
        how = f"its {host.network_interface}" if host.network_interface else "its SSH connection"
        return Meeting(found, f"hosts probe ({how})")
    if is_ip(host.address):
        return Meeting(host.address, "SSH address")
    destination = _destination(host, lookup)
    if destination is not None and is_ip(destination):
        return Meeting(destination, "HostName in the ssh config")
    if destination is not None and (resolves or resolves_here)(destination):
        return Meeting(destination, "SSH address (resolved here)" if destination == host.address else "HostName in the ssh config")
    return Meeting(None, "none known")


def _destination(host: Host, lookup: Callable[[Host], dict] | None) -> str | None:
    """Where SSH really connects for host (the ssh config's HostName), None if the config cannot be read."""
    if lookup is None:
        from .execute import ssh_lookup as lookup  # paramiko: only hosts that need the ssh config pay
    try:
        return lookup(host).get("hostname") or host.address
    except Exception:  # an unreadable or unparsable ssh config: SSH itself says so, with the file
        return None


_resolved: dict[str, tuple[bool, float]] = {}
_resolved_lock = threading.Lock()


def resolves_here(name: str) -> bool:
    """Whether this machine resolves `name` (the answer kept RESOLVE_TTL seconds)."""
    now = time.monotonic()
    with _resolved_lock:
        hit = _resolved.get(name)
    if hit is not None and now - hit[1] < RESOLVE_TTL:
        return hit[0]
    try:
        ok = bool(socket.getaddrinfo(name, None))
    except (OSError, UnicodeError):
        ok = False
    with _resolved_lock:
        _resolved[name] = (ok, now)
    return ok


def meetings(store: Store, inventory: Inventory, names: set[str] | None = None) -> dict[str, Meeting]:
    """Every inventory host's (or those in `names`) rendezvous address, from hosts.toml and the store's
    last probe of each. One query; the probe JSON is read by SQLite."""
    rows = {
        r["name"]: r
        for r in store.query(
            "SELECT name, json_extract(probe, '$.address') AS address, "
            "json_extract(probe, '$.network_interface') AS network_interface, "
            "json_extract(probe, '$.rdzv_address') AS rdzv_address FROM hosts WHERE json_valid(probe)"
        )
    }
    return {h.name: resolve(h, rows.get(h.name)) for h in inventory.hosts if names is None or h.name in names}


def waiting_reason(names: list[str]) -> str:
    """Why a multi-node job waits for these hosts, with what to do."""
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    them = "it" if len(names) == 1 else "them"
    return (
        f"{WAITING_PREFIX}: {shown} {'has' if len(names) == 1 else 'have'} none that the other hosts' ranks could reach"
        f" (an SSH alias is not one); set rdzv_address for {them} in hosts.toml, or run `headnode hosts probe` to"
        f" learn it on the host{'' if len(names) == 1 else 's'} (from network_interface)"
    )


WAITING_PREFIX = "waiting for a rendezvous address"
