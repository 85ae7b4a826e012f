"""hosts.toml: the inventory, loaded once into one typed, immutable object.

Resolution: --config PATH, else $HEADNODE_CONFIG, else ./hosts.toml, else the embedded default (this
machine alone as `localhost`, GPUs detected). Every mistake is rejected at load with the file, the line
(or key path) and a fix — never a traceback.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import stat
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from . import bounds
from .errors import ConfigError, UserError

ENV_CONFIG = "HEADNODE_CONFIG"
DEFAULT_FILE = "hosts.toml"
LOCALHOST = "localhost"

# Names end up in paths, events and (quoted) remote argv; a strict alphabet keeps them readable and
# makes hostile values fail at load rather than relying on quoting alone.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
ADDRESS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:_-]{0,252}$")
USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]{0,31}$")
# A DNS name (RFC 1123 labels): what rdzv_address may be besides an IP literal.
DNS_NAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")

MAX_FILE_BYTES = 4 << 20  # an inventory of thousands of hosts is ~1 MB
MAX_TEXT = 4096  # any string value (paths are at most PATH_MAX)
MAX_TAGS = 64
MAX_CLUSTER_NAME = 100


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
    # The address ranks meet on (torchrun's --rdzv-endpoint / --local-addr), when it is not the SSH
    # address: see scheduler/rendezvous.py for what is used when it is not set.
    rdzv_address: str | None = None
    ssh_config: str | None = None  # an OpenSSH client config used instead of ~/.ssh/config (like ssh -F)

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
    "rdzv_address": str,
    "ssh_config": str,
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
# Seconds, inclusive, by Settings field: finite, and wide enough for tests and for slow clusters alike.
# hosts.toml documents them; a value outside is refused at load (nan would kill every loop, inf would
# never renew a lease or never end a grace period).
DAY = 86400.0
SETTING_RANGES: dict[str, tuple[float, float]] = {
    "cycle_interval": (0.05, 600.0),
    "node_lost_timeout": (1.0, DAY),
    "grace_period": (0.1, 3600.0),
    "lease_ttl": (1.0, 3600.0),
    "telemetry_interval": (0.05, 600.0),
    "down_after": (1.0, DAY),
    "hang_after": (1.0, 30 * DAY),
    "raw_retention": (60.0, 365 * DAY),
    "minute_retention": (60.0, 3650 * DAY),
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
    text = read_text(resolved)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{resolved}: not valid TOML ({e})", None, "fix the syntax at that line") from None
    except RecursionError:
        line = _deepest_line(text)
        raise ConfigError(
            f"{resolved}{f':{line}' if line else ''}: arrays or tables are nested too deeply to read",
            None,
            "an inventory needs at most a list of tags; remove the nesting",
        ) from None
    except ValueError:  # tomllib lets int()'s own limit through: an integer of thousands of digits
        line = next((i for i, ln in enumerate(text.splitlines(), 1) if re.search(r"\d{1000}", ln)), None)
        raise ConfigError(
            f"{resolved}{f':{line}' if line else ''}: a number has too many digits to read",
            None,
            "write a number within the documented range",
        ) from None
    return parse(doc, resolved, text)


def read_text(path: Path) -> str:
    """The file as UTF-8 (a BOM is allowed), bounded in size; every failure one sentence with the line."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"cannot read {path}", e.strerror or str(e), "check the path and its permissions") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(
            f"{path}: too big for an inventory (over {MAX_FILE_BYTES >> 20} MiB)",
            None,
            "check that --config names your hosts.toml",
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {column})",
            None,
            "save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`, or remove that byte",
        ) from None


def _deepest_line(text: str) -> int | None:
    counts = [line.count("[") + line.count("{") for line in text.splitlines()]
    return counts.index(max(counts)) + 1 if counts and max(counts) > 1 else None


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
        if len(needles) == 1 and re.fullmatch(r"\w+", needles[0]):  # a key: where it is assigned, if anywhere
            key = re.compile(rf"\s*[\"']?{needles[0]}[\"']?\s*=")
            for i, line in enumerate(self.lines[start:], start + 1):
                if key.match(line):
                    return i
        for i, line in enumerate(self.lines[start:], start + 1):
            stripped = line.split("#", 1)[0]
            if all(n in stripped for n in needles):
                return i
        return None

    def section(self, name: str) -> int:
        """Line index of the [name] header (0 if there is none), to look for keys from there."""
        return next((i for i, line in enumerate(self.lines) if line.strip().startswith(f"[{name}]")), 0)

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
            self.fail(where, f"{key} must be {name}, not {_repr(value)}", f"write {key} as {name}", key, start=start)
        if want is str and ("\0" in value or len(value) > MAX_TEXT):
            self.fail(where, f"{key} must be at most {MAX_TEXT} characters without NUL, not {_repr(value)}", f"fix {key}", key, start=start)

    def seconds(self, where: str, key: str, value: Any, lo: float, hi: float, *, start: int = 0) -> float:
        """A finite number of seconds in lo..hi (the type is checked already)."""
        fix = f"set {key} to a number of seconds from {lo:g} to {hi:g}"
        if isinstance(value, float) and not math.isfinite(value):
            self.fail(where, f"{key} must be a finite number of seconds, not {_repr(value)}", fix, key, start=start)
        if value <= 0:
            self.fail(where, f"{key} must be positive, not {_repr(value)}", fix, key, start=start)
        if value < lo:
            self.fail(where, f"{key} must be at least {lo:g} s, not {_repr(value)}", fix, key, start=start)
        if value > hi:
            self.fail(where, f"{key} must be at most {hi:g} s, not {_repr(value)}", fix, key, start=start)
        return float(value)


def _repr(value: Any) -> str:
    """A value as the file wrote it, shortened: a message never floods the terminal."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:40]) + f"… ({len(value)} characters)"
    if isinstance(value, bool):
        return repr(value)
    return bounds.shown(value)


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
    name = cluster.get("name")
    if name is not None and (not name or len(name) > MAX_CLUSTER_NAME or not name.isprintable()):
        what = f"name must be 1 to {MAX_CLUSTER_NAME} printable characters, not {_repr(name)}"
        chk.fail("[cluster]", what, "choose a short name", "name")
    if cluster.get("state_dir") == "":
        chk.fail("[cluster]", "state_dir is empty", "name a directory, or omit state_dir for .headnode/ beside this file", "state_dir")
    state_dir = Path(os.path.expanduser(cluster.get("state_dir", ".headnode")))
    if not state_dir.is_absolute():
        state_dir = (path.parent / state_dir).absolute()
    problem = _state_dir_problem(state_dir)
    if problem:
        chk.fail(
            "[cluster]", f"state_dir {str(state_dir)!r} {problem}",
            "point state_dir at a directory this user can create and write (it is created if missing)", "state_dir",
        )

    defaults = doc.get("defaults", {})
    chk.type_("[defaults]", "defaults", defaults, dict)
    _check_host_keys(chk, "[defaults]", defaults)

    hosts_doc = doc.get("hosts", [])
    if not isinstance(hosts_doc, list):
        chk.fail("hosts", "must be an array of tables", "write each host as a [[hosts]] table", "hosts")
    if len(hosts_doc) > bounds.MAX_NODES:
        what = f"{len(hosts_doc)} hosts are more than headnode manages ({bounds.MAX_NODES})"
        chk.fail("[[hosts]]", what, "split the cluster into several inventories")
    hosts: list[Host] = []
    names: dict[str, int] = {}
    addresses: dict[tuple, str] = {}
    meeting: dict[str, str] = {}  # rdzv_address -> host
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
            chk.fail(where, f"address {_repr(h['address'])} is not a host name or IP address", "fix the address", "address", start=start)
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
        rdzv = merged.get("rdzv_address")
        if rdzv is not None:
            if rdzv in meeting:
                chk.fail(where, f"duplicate rdzv_address {rdzv} (also host {meeting[rdzv]!r})",
                         "give every host the address it has on the cluster network", "rdzv_address", start=start)
            if not is_local and _is_loopback(rdzv):
                chk.fail(where, f"rdzv_address {rdzv} is a loopback address: the other hosts' ranks cannot reach it",
                         "set it to the host's address on the cluster network", "rdzv_address", start=start)
            meeting[rdzv] = name
        ssh_config = _expand(merged.get("ssh_config"), path)
        if ssh_config is not None and not os.path.isfile(ssh_config):
            chk.fail(where, f"ssh_config {_repr(ssh_config)} is not a file",
                     "name an OpenSSH client config file (like ~/.ssh/config), or omit ssh_config to use ~/.ssh/config",
                     "ssh_config", start=start if "ssh_config" in h else chk.section("defaults"))
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
                rdzv_address=rdzv,
                ssh_config=ssh_config,
            )
        )

    settings = Settings()
    for section, mapping in (("scheduler", SCHEDULER_KEYS), ("telemetry", TELEMETRY_KEYS)):
        values = doc.get(section, {})
        chk.type_(f"[{section}]", section, values, dict)
        at = chk.section(section)
        for k, v in values.items():
            if k not in mapping:
                chk.fail(f"[{section}]", f"unknown key {k!r}", f"use only {sorted(mapping)}", k, start=at)
            if k == "port_range":
                ok = isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
                if not ok or not (1024 <= v[0] <= v[1] <= 65535):
                    chk.fail(
                        f"[{section}]", f"port_range must be [LOW, HIGH] within 1024..65535, not {_repr(v)}",
                        "e.g. port_range = [29500, 29999]", k, start=at,
                    )
                v = (v[0], v[1])
            else:
                chk.type_(f"[{section}]", k, v, float, start=at)
                v = chk.seconds(f"[{section}]", k, v, *SETTING_RANGES[mapping[k]], start=at)
            settings = replace(settings, **{mapping[k]: v})
    _check_together(chk, doc, settings)

    if not hosts:
        chk.fail(
            "[[hosts]]",
            "no host is listed",
            'add a [[hosts]] table per server (name = "gpu01", address = "10.0.0.11"); for this machine alone,'
            ' name = "localhost", address = "localhost"',
        )

    return Inventory(
        path=path.absolute(),
        cluster_name=cluster.get("name", path.parent.absolute().name or "cluster"),
        state_dir=state_dir,
        hosts=tuple(hosts),
        settings=settings,
    )


def _check_together(chk: _Checker, doc: dict, s: Settings) -> None:
    """Settings that are only sane relative to each other."""
    if s.lease_ttl <= s.cycle_interval:
        key = "lease_ttl" if "lease_ttl" in doc.get("scheduler", {}) else "cycle_interval"
        chk.fail(
            "[scheduler]",
            f"lease_ttl ({s.lease_ttl:g} s) must be longer than cycle_interval ({s.cycle_interval:g} s):"
            " a loop renews its lease once a cycle, so a shorter lease lapses and a second loop could take over",
            "make lease_ttl several cycles long, e.g. lease_ttl = 15 with cycle_interval = 1",
            key,
            start=chk.section("scheduler"),
        )
    if s.down_after <= s.telemetry_interval:
        key = "down_after" if "down_after" in doc.get("telemetry", {}) else "interval"
        chk.fail(
            "[telemetry]",
            f"down_after ({s.down_after:g} s) must be longer than interval ({s.telemetry_interval:g} s):"
            " every host would be shown down between two samples",
            "make down_after several intervals long, e.g. down_after = 10 with interval = 1",
            key,
            start=chk.section("telemetry"),
        )
    if s.minute_retention < s.raw_retention:
        chk.fail(
            "[telemetry]",
            f"minute_retention ({s.minute_retention:g} s) must be at least raw_retention ({s.raw_retention:g} s):"
            " per-minute averages would expire before they are made",
            "raise minute_retention or lower raw_retention",
            "minute_retention" if "minute_retention" in doc.get("telemetry", {}) else "raw_retention",
            start=chk.section("telemetry"),
        )


def _state_dir_problem(path: Path) -> str | None:
    """Why path can never be the state dir (None if it is a directory, or could be created)."""
    probe = path
    while True:
        try:
            st = os.stat(probe)
        except (FileNotFoundError, NotADirectoryError):  # not there yet, or a parent is a file: look up
            if probe.parent == probe:
                return None
            probe = probe.parent
            continue
        except OSError as e:
            return f"cannot be used ({e.strerror or e})"
        if stat.S_ISDIR(st.st_mode):
            return None
        return "is not a directory" if probe == path else f"cannot be created: {str(probe)!r} is not a directory"


def _check_host_keys(chk: _Checker, where: str, table: dict, *, start: int = 0) -> None:
    for k, v in table.items():
        if k in ("name", "address") and where != "[defaults]":
            continue
        if k not in HOST_KEYS:
            chk.fail(where, f"unknown key {k!r}", f"use only {sorted(HOST_KEYS)}", k, start=start)
        chk.type_(where, k, v, HOST_KEYS[k], start=start)
        if k == "gpus" and v < 0:
            what = f"gpus must be 0 or more, not {_repr(v)}"
            chk.fail(where, what, "declare the number of GPUs, or omit gpus to detect them", k, start=start)
        if k == "gpus" and v > bounds.MAX_GPUS_PER_NODE:
            chk.fail(
                where, f"gpus must be at most {bounds.MAX_GPUS_PER_NODE}, not {_repr(v)}",
                "declare the number of GPUs the host has, or omit gpus to detect them", k, start=start,
            )
        if k == "port" and not 1 <= v <= 65535:
            chk.fail(where, f"port must be 1..65535, not {_repr(v)}", "use the host's SSH port", k, start=start)
        if k == "tags":
            if len(v) > MAX_TAGS:
                chk.fail(where, f"{len(v)} tags are more than {MAX_TAGS}", "keep the tags jobs ask for", k, start=start)
            for t in v:
                if not isinstance(t, str) or not NAME_RE.match(t):
                    chk.fail(where, f"tag {_repr(t)} may contain only letters, digits, '.', '_' and '-'", "rename the tag", k, start=start)
        if k == "user" and not USER_RE.match(v):
            chk.fail(where, f"user {_repr(v)} is not a valid login name", "fix the user name", k, start=start)
        if k == "network_interface" and not NAME_RE.match(v):
            chk.fail(where, f"network_interface {_repr(v)} is not an interface name", "use a name like eth0", k, start=start)
        if k in ("python", "workdir", "ssh_config") and (not v or "\n" in v or "\0" in v):
            chk.fail(where, f"{k} must be a non-empty single-line path", f"fix {k}", k, start=start)
        if k == "rdzv_address" and where == "[defaults]":
            chk.fail(where, "rdzv_address is one host's own address, not a default for all",
                     "set rdzv_address in each [[hosts]] table that needs it", k, start=start)
        if k == "rdzv_address" and not _is_ip(v) and not DNS_NAME_RE.match(v):
            chk.fail(where, f"rdzv_address {_repr(v)} is not an IP address or DNS name",
                     "set it to the host's address on the cluster network, e.g. rdzv_address = \"10.1.0.11\"", k, start=start)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_loopback(text: str) -> bool:
    return text.rstrip(".").lower() == LOCALHOST or (_is_ip(text) and ipaddress.ip_address(text).is_loopback)


def _expand(p: str | None, config_path: Path) -> str | None:
    if not p:
        return None
    q = Path(os.path.expanduser(p))
    return str(q if q.is_absolute() else (config_path.parent / q).absolute())
