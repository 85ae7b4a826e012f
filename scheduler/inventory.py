"""hosts.toml: the inventory, loaded once into one typed, immutable object.

Resolution: --config PATH, else $HEADNODE_CONFIG, else ./hosts.toml, else the embedded default (this
machine alone as `localhost`, GPUs detected). Every mistake is rejected at load with the file, the line
(or key path) and a fix — never a traceback.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import ConfigError, UserError

ENV_CONFIG = "HEADNODE_CONFIG"
DEFAULT_FILE = "hosts.toml"
LOCALHOST = "localhost"

# Names end up in paths, events and (quoted) remote argv; a strict alphabet keeps them readable and
# makes hostile values fail at load rather than relying on quoting alone.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
ADDRESS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:_-]{0,252}$")
USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]{0,31}$")


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    user: str | None = None
    port: int | None = None
    python: str = "python3"
    workdir: str = "~/headnode"
    identity_file: str | None = None
    known_hosts: str | None = None
    network_interface: str | None = None
    gpus: int | None = None  # declared; None = detect by probe
    tags: tuple[str, ...] = ()

    @property
    def is_local(self) -> bool:
        return self.address == LOCALHOST

    def path(self, *parts: str) -> str:
        """A path under the workdir as the host sees it. Remote commands run from the login home,
        so `~/x` becomes the relative `x` (a quoted `~` would not be expanded by the remote shell)."""
        base = self.workdir
        if self.is_local:
            base = os.path.expanduser(base)
        elif base == "~":
            base = "."
        elif base.startswith("~/"):
            base = base[2:]
        return "/".join([base.rstrip("/"), *parts]) if parts else base


@dataclass(frozen=True)
class Settings:
    """The optional [scheduler] and [telemetry] sections (seconds unless said otherwise)."""

    cycle_interval: float = 1.0
    node_lost_timeout: float = 30.0
    grace_period: float = 10.0
    lease_ttl: float = 15.0
    port_range: tuple[int, int] = (29500, 29999)
    telemetry_interval: float = 1.0
    down_after: float = 10.0
    hang_after: float = 300.0
    raw_retention: float = 3600.0
    minute_retention: float = 7 * 86400.0


@dataclass(frozen=True)
class Inventory:
    path: Path | None
    cluster_name: str
    state_dir: Path
    hosts: tuple[Host, ...]
    settings: Settings = field(default_factory=Settings)

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        known = ", ".join(h.name for h in self.hosts) or "none"
        raise UserError(
            f"unknown host {name!r}",
            f"{self.source} defines {known}",
            "check the name with `headnode hosts`",
        )

    @property
    def source(self) -> str:
        return str(self.path) if self.path else "the embedded default inventory"


# --- loading -------------------------------------------------------------------------------------

HOST_KEYS: dict[str, type | tuple[type, ...]] = {
    "user": str,
    "port": int,
    "python": str,
    "workdir": str,
    "identity_file": str,
    "known_hosts": str,
    "network_interface": str,
    "gpus": int,
    "tags": list,
}
SECTIONS = {"cluster", "defaults", "hosts", "scheduler", "telemetry"}
CLUSTER_KEYS = {"name": str, "state_dir": str}
SCHEDULER_KEYS = {
    "cycle_interval": "cycle_interval",
    "node_lost_timeout": "node_lost_timeout",
    "grace_period": "grace_period",
    "lease_ttl": "lease_ttl",
    "port_range": "port_range",
}
TELEMETRY_KEYS = {
    "interval": "telemetry_interval",
    "down_after": "down_after",
    "hang_after": "hang_after",
    "raw_retention": "raw_retention",
    "minute_retention": "minute_retention",
}


def resolve_path(explicit: str | os.PathLike | None = None) -> Path | None:
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            raise ConfigError(
                f"config file {str(p)!r} not found",
                "--config names a file that does not exist",
                "pass the path of your hosts.toml, or omit --config to use ./hosts.toml",
            )
        return p
    env = os.environ.get(ENV_CONFIG)
    if env:
        p = Path(env)
        if not p.is_file():
            raise ConfigError(
                f"config file {env!r} not found",
                f"${ENV_CONFIG} names a file that does not exist",
                f"fix or unset {ENV_CONFIG}",
            )
        return p
    p = Path(DEFAULT_FILE)
    return p if p.is_file() else None


def load(path: str | os.PathLike | None = None) -> Inventory:
    resolved = resolve_path(path)
    if resolved is None:
        return default_inventory()
    text = resolved.read_text(encoding="utf-8", errors="replace")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{resolved}: not valid TOML ({e})", None, "fix the syntax at that line") from None
    return parse(doc, resolved, text)


def default_inventory(state_dir: str | os.PathLike | None = None) -> Inventory:
    """This machine alone, running locally: `headnode demo` needs no sshd and no config file."""
    sd = Path(state_dir or os.environ.get("HEADNODE_STATE_DIR") or ".headnode").absolute()
    host = Host(name=LOCALHOST, address=LOCALHOST, python=sys.executable, workdir=str(sd / "work"))
    return Inventory(path=None, cluster_name="local", state_dir=sd, hosts=(host,))


class _Checker:
    """Collects nothing: the first problem raises, naming file, line and key path."""

    def __init__(self, path: Path, text: str):
        self.path, self.lines = path, text.splitlines()

    def line_of(self, *needles: str, start: int = 0) -> int | None:
        for i, line in enumerate(self.lines[start:], start + 1):
            stripped = line.split("#", 1)[0]
            if all(n in stripped for n in needles):
                return i
        return None

    def fail(self, where: str, what: str, fix: str, *needles: str, start: int = 0) -> None:
        line = self.line_of(*needles, start=start) if needles else None
        loc = f"{self.path}:{line}" if line else str(self.path)
        raise ConfigError(f"{loc}: {where}: {what}", None, fix)

    def type_(self, where: str, key: str, value: Any, want, *, start: int = 0) -> None:
        ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
        if want is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            name = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "a table"}[want]
            self.fail(where, f"{key} must be {name}, not {value!r}", f"write {key} as {name}", key, start=start)


def _host_start(chk: _Checker, index: int) -> int:
    """Line index where the index-th [[hosts]] table starts (to point errors at the right host)."""
    seen = -1
    for i, line in enumerate(chk.lines):
        if line.strip().startswith("[[hosts]]"):
            seen += 1
            if seen == index:
                return i
    return 0


def parse(doc: dict, path: Path, text: str = "") -> Inventory:
    chk = _Checker(path, text)
    for key in doc:
        if key not in SECTIONS:
            chk.fail("top level", f"unknown section {key!r}", f"use only {sorted(SECTIONS)}", key)

    cluster = doc.get("cluster", {})
    chk.type_("[cluster]", "cluster", cluster, dict)
    for k, v in cluster.items():
        if k not in CLUSTER_KEYS:
            chk.fail("[cluster]", f"unknown key {k!r}", f"use only {sorted(CLUSTER_KEYS)}", k)
        chk.type_("[cluster]", k, v, CLUSTER_KEYS[k])
    state_dir = Path(os.path.expanduser(cluster.get("state_dir", ".headnode")))
    if not state_dir.is_absolute():
        state_dir = (path.parent / state_dir).absolute()

    defaults = doc.get("defaults", {})
    chk.type_("[defaults]", "defaults", defaults, dict)
    _check_host_keys(chk, "[defaults]", defaults)

    hosts_doc = doc.get("hosts", [])
    if not isinstance(hosts_doc, list):
        chk.fail("hosts", "must be an array of tables", "write each host as a [[hosts]] table", "hosts")
    hosts: list[Host] = []
    names: dict[str, int] = {}
    addresses: dict[tuple, str] = {}
    for i, h in enumerate(hosts_doc):
        start = _host_start(chk, i)
        where = f"hosts[{i}]"
        if not isinstance(h, dict):
            chk.fail(where, "must be a table", "write each host as a [[hosts]] table")
        for req in ("name", "address"):
            if req not in h:
                chk.fail(where, f"missing {req!r}", f"add {req} = \"...\" to this [[hosts]] table", "[[hosts]]", start=start)
            chk.type_(where, req, h[req], str, start=start)
        name = h["name"]
        where = f"host {name!r}"
        if not NAME_RE.match(name):
            chk.fail(where, "name may contain only letters, digits, '.', '_' and '-'", "rename the host", "name", start=start)
        if not ADDRESS_RE.match(h["address"]):
            chk.fail(where, f"address {h['address']!r} is not a host name or IP address", "fix the address", "address", start=start)
        if name in names:
            chk.fail(where, f"duplicate host name (also hosts[{names[name]}])", "give every host a unique name", "name", start=start)
        names[name] = i
        _check_host_keys(chk, where, h, start=start)
        merged = {**defaults, **{k: v for k, v in h.items() if k not in ("name", "address")}}
        is_local = h["address"] == LOCALHOST
        port = merged.get("port")
        key = (h["address"], port or 22)
        if key in addresses and not is_local:
            chk.fail(where, f"duplicate address {h['address']} (also host {addresses[key]!r})", "give every host its own address or port",
                     "address", start=start)
        addresses[key] = name
        hosts.append(
            Host(
                name=name,
                address=h["address"],
                user=merged.get("user"),
                port=port,
                python=merged.get("python") or (sys.executable if is_local else "python3"),
                workdir=merged.get("workdir") or (str(state_dir / "work") if is_local else "~/headnode"),
                identity_file=_expand(merged.get("identity_file"), path),
                known_hosts=_expand(merged.get("known_hosts"), path),
                network_interface=merged.get("network_interface"),
                gpus=merged.get("gpus"),
                tags=tuple(merged.get("tags", ())),
            )
        )

    settings = Settings()
    for section, mapping in (("scheduler", SCHEDULER_KEYS), ("telemetry", TELEMETRY_KEYS)):
        values = doc.get(section, {})
        chk.type_(f"[{section}]", section, values, dict)
        for k, v in values.items():
            if k not in mapping:
                chk.fail(f"[{section}]", f"unknown key {k!r}", f"use only {sorted(mapping)}", k)
            if k == "port_range":
                ok = isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
                if not ok or not (1024 <= v[0] <= v[1] <= 65535):
                    chk.fail(f"[{section}]", f"port_range must be [LOW, HIGH] within 1024..65535, not {v!r}",
                             "e.g. port_range = [29500, 29999]", k)
                v = (v[0], v[1])
            else:
                chk.type_(f"[{section}]", k, v, float)
                if v <= 0:
                    chk.fail(f"[{section}]", f"{k} must be positive, not {v!r}", f"set {k} to a number of seconds > 0", k)
                v = float(v)
            settings = replace(settings, **{mapping[k]: v})

    return Inventory(
        path=path.absolute(),
        cluster_name=cluster.get("name", path.parent.absolute().name or "cluster"),
        state_dir=state_dir,
        hosts=tuple(hosts),
        settings=settings,
    )


def _check_host_keys(chk: _Checker, where: str, table: dict, *, start: int = 0) -> None:
    for k, v in table.items():
        if k in ("name", "address") and where != "[defaults]":
            continue
        if k not in HOST_KEYS:
            chk.fail(where, f"unknown key {k!r}", f"use only {sorted(HOST_KEYS)}", k, start=start)
        chk.type_(where, k, v, HOST_KEYS[k], start=start)
        if k == "gpus" and v < 0:
            chk.fail(where, f"gpus must be 0 or more, not {v}", "declare the number of GPUs, or omit gpus to detect them", k, start=start)
        if k == "port" and not 1 <= v <= 65535:
            chk.fail(where, f"port must be 1..65535, not {v}", "use the host's SSH port", k, start=start)
        if k == "tags":
            for t in v:
                if not isinstance(t, str) or not NAME_RE.match(t):
                    chk.fail(where, f"tag {t!r} may contain only letters, digits, '.', '_' and '-'", "rename the tag", k, start=start)
        if k == "user" and not USER_RE.match(v):
            chk.fail(where, f"user {v!r} is not a valid login name", "fix the user name", k, start=start)
        if k == "network_interface" and not NAME_RE.match(v):
            chk.fail(where, f"network_interface {v!r} is not an interface name", "use a name like eth0", k, start=start)
        if k in ("python", "workdir") and (not v or "\n" in v or "\0" in v):
            chk.fail(where, f"{k} must be a non-empty single-line path", f"fix {k}", k, start=start)


def _expand(p: str | None, config_path: Path) -> str | None:
    if not p:
        return None
    q = Path(os.path.expanduser(p))
    return str(q if q.is_absolute() else (config_path.parent / q).absolute())
