"""A real multi-host test cluster: N sshd hosts in Linux network namespaces on this machine.

Each host is a network namespace with `lo`, one veth (renamed `eth0` inside) on a bridge in the root
namespace, and its own `sshd -D -f CONF` listening on its address. The namespaces share the
filesystem and the PID space with the test, so a test can read any host's files and processes
directly (`Cluster.pids`).

Several engineers run the suite at once on one machine, so every name carries a random 6-hex suffix
and the /24 is picked free under a file lock. Each cluster writes a registry file before it creates
anything; a later build removes whatever a dead (SIGKILLed) run left behind.

    with Cluster.build(3) as c:
        c.ssh("node0", ["hostname"])
        c.cut("node1"); ...; c.heal("node1")
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import pwd
import random
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REGISTRY = Path(tempfile.gettempdir()) / "headnode-clusters"
LOCK = REGISTRY / ".lock"
NETNS_DIR = Path("/run/netns")
SUBNET = "10.213.{x}.0/24"
CLUSTER_DEFAULT_HOSTS = 3
IFACE = "eth0"  # the namespace side of every veth: one NCCL/GLOO_SOCKET_IFNAME for all hosts
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
# Our names, so that a leftover can be recognised without its registry file.
NETNS_RE = re.compile(r"^headnode-([0-9a-f]{6})-\d+$")
LINK_RE = re.compile(r"^hn[bv]([0-9a-f]{6})\d*$")


class ClusterUnavailable(RuntimeError):
    """This machine cannot build the cluster (not root, no `ip` or `sshd`, no namespaces)."""


@dataclass(frozen=True)
class ClusterHost:
    name: str
    address: str
    netns: str
    veth: str  # the root-namespace end: `cut` sets it down
    workdir: Path  # the cluster's own; cluster_config gives every test fresh ones
    sshd_log: Path


@dataclass
class Cluster:
    suffix: str
    root: Path
    subnet: ipaddress.IPv4Network
    bridge: str
    hosts: list[ClusterHost]
    client_key: Path
    known_hosts: Path
    build_seconds: float = 0.0
    _sshd: list[subprocess.Popen] = field(default_factory=list, repr=False)

    # --- building -------------------------------------------------------------------------------

    @classmethod
    def build(cls, n: int = CLUSTER_DEFAULT_HOSTS, *, ready_timeout: float = 20.0) -> Cluster:
        check_available()
        t0 = time.monotonic()
        REGISTRY.mkdir(exist_ok=True)
        suffix = secrets.token_hex(3)
        root = Path(tempfile.mkdtemp(prefix=f"headnode-cluster-{suffix}-"))
        with _locked():
            _clean_leftovers()
            subnet = _free_subnet()
            # The registry entry comes first: if we die from here on, the next build cleans up.
            _registry_file(suffix).write_text(
                json.dumps({"pid": os.getpid(), "start": _start_time(os.getpid()), "root": str(root)})
            )
            c = cls(suffix, root, subnet, f"hnb{suffix}", [], root / "client_key", root / "known_hosts")
            try:
                c._make_bridge()  # holds the subnet's address: later builds see it taken
            except BaseException:
                c.close()
                raise
        try:
            c._make_keys()
            c.hosts = [c._make_host(i) for i in range(n)]
            c._wait_ready(ready_timeout)
        except BaseException:
            c.close()
            raise
        c.build_seconds = time.monotonic() - t0
        return c

    def _make_bridge(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.subnet[1]}/{self.subnet.prefixlen}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def _make_keys(self) -> None:
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "headnode-test", "-f", str(self.client_key)])
        (self.root / "authorized_keys").write_text(self.client_key.with_suffix(".pub").read_text())

    def _make_host(self, i: int) -> ClusterHost:
        name, netns = f"node{i}", f"headnode-{self.suffix}-{i}"
        address = str(self.subnet[10 + i])
        veth, peer = f"hnv{self.suffix}{i}", f"hnp{self.suffix}{i}"
        home = self.root / name
        (home / "work").mkdir(parents=True)
        _ip("netns", "add", netns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", peer, "netns", netns)
        _ip("-n", netns, "link", "set", peer, "name", IFACE)
        _ip("-n", netns, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", IFACE)
        _ip("-n", netns, "link", "set", IFACE, "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("link", "set", veth, "master", self.bridge)
        _ip("link", "set", veth, "up")

        host_key = home / "ssh_host_ed25519_key"
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(host_key)])
        key_type, key = host_key.with_suffix(".pub").read_text().split()[:2]
        with self.known_hosts.open("a") as f:
            f.write(f"{address} {key_type} {key}\n")
        conf = home / "sshd_config"
        conf.write_text(_sshd_config(address, host_key, self.root / "authorized_keys"))
        log = home / "sshd.log"
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        self._sshd.append(subprocess.Popen(
            ["ip", "netns", "exec", netns, *self._clean_login(), SSHD, "-D", "-f", str(conf), "-E", str(log)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        ))
        return ClusterHost(name, address, netns, veth, home / "work", log)

    def _clean_login(self) -> list[str]:
        """A prefix that hides root's ~/.bashrc from the host's sessions, as on a fresh server.

        Debian's bash sources ~/.bashrc even for `ssh host CMD`; this machine's (pyenv init) costs
        ~0.4 s per remote command. `ip netns exec` gives sshd its own mount namespace, so an empty
        file bound over it there changes nothing outside the host."""
        bashrc = Path(pwd.getpwnam("root").pw_dir) / ".bashrc"
        if not bashrc.is_file():
            return []
        empty = self.root / "empty_bashrc"
        empty.touch()
        return ["sh", "-c", 'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh", str(empty), str(bashrc)]

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = {h.name: h for h in self.hosts}
        while pending:
            for name, h in list(pending.items()):
                with contextlib.suppress(OSError), socket.create_connection((h.address, 22), timeout=0.5):
                    del pending[name]
            dead = [p for p in self._sshd if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "; ".join(f"{h.name}: {_tail(h.sshd_log)}" for h in pending.values())
                raise RuntimeError(f"sshd did not come up on {sorted(pending)}: {logs}")
            if pending:
                time.sleep(0.02)

    # --- using ----------------------------------------------------------------------------------

    def host(self, name: str) -> ClusterHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(f"no cluster host {name!r}; hosts are {[h.name for h in self.hosts]}")

    def ssh_argv(self, name: str, argv: Sequence[str], *, connect_timeout: float = 5.0) -> list[str]:
        """The system OpenSSH command line for `argv` on host `name` (no user config, no agent)."""
        h = self.host(name)
        return [
            "ssh", "-F", "/dev/null", "-i", str(self.client_key), "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={connect_timeout:g}", "-o", "LogLevel=ERROR",
            f"root@{h.address}", "--", shlex.join(argv),
        ]

    def ssh(self, name: str, argv: Sequence[str], *, timeout: float = 30.0, connect_timeout: float = 5.0,
            input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.ssh_argv(name, argv, connect_timeout=connect_timeout),
            input=input, capture_output=True, text=True, timeout=timeout,
        )

    def cut(self, name: str) -> None:
        """Drop the host's link: it stops answering (connections hang, new ones time out)."""
        _ip("link", "set", self.host(name).veth, "down")

    def heal(self, name: str) -> None:
        _ip("link", "set", self.host(name).veth, "up")

    def freeze(self, name: str) -> None:
        """SIGSTOP the host's sshd: the kernel still completes TCP handshakes into its listen backlog, but
        no SSH banner ever comes (a hung or swamped sshd). Sessions already open keep working."""
        os.kill(self._sshd_pid(name), signal.SIGSTOP)

    def thaw(self, name: str) -> None:
        os.kill(self._sshd_pid(name), signal.SIGCONT)

    def _sshd_pid(self, name: str) -> int:
        # `ip netns exec` and the login prefix both exec: the process we started is sshd itself.
        pid = self._sshd[self.hosts.index(self.host(name))].pid
        assert Path(f"/proc/{pid}/comm").read_text().strip() == "sshd", f"{name}: pid {pid} is not its sshd"
        return pid

    @contextlib.contextmanager
    def behind(self, name: str, gateway: str, *, timeout: float = 20.0) -> Iterator[str]:
        """Host `name` gets a second address that only host `gateway` can reach, with an sshd of its own
        listening there alone (same host key, log in its home as sshd-behind.log): a host behind a
        bastion. Yields that address; all is undone on exit.

        A veth links the two namespaces directly, with the subnet's .200 (gateway) and .201 (`name`) as
        /32 addresses and a route each way. This machine cannot reach .201: its bridge route makes it
        ask by ARP, and `name` answers ARP only for addresses on the interface asked (arp_ignore=1)."""
        h, g = self.host(name), self.host(gateway)
        near, far = str(self.subnet[200]), str(self.subnet[201])
        arp = Path("/proc/sys/net/ipv4/conf/all/arp_ignore")
        before = _run(["ip", "netns", "exec", h.netns, "cat", str(arp)]).stdout.strip()
        _ip("-n", g.netns, "link", "add", "hnbehind", "type", "veth", "peer", "name", "hnbehind", "netns", h.netns)
        proc = None
        try:
            _run(["ip", "netns", "exec", h.netns, "sh", "-c", f"echo 1 > {arp}"])
            for ns, mine, other in ((g.netns, near, far), (h.netns, far, near)):
                _ip("-n", ns, "addr", "add", f"{mine}/32", "dev", "hnbehind")
                _ip("-n", ns, "link", "set", "hnbehind", "up")
                _ip("-n", ns, "route", "add", f"{other}/32", "dev", "hnbehind", "src", mine)
            home = h.workdir.parent
            conf, log = home / "sshd_config-behind", home / "sshd-behind.log"
            conf.write_text(_sshd_config(far, home / "ssh_host_ed25519_key", self.root / "authorized_keys"))
            log.write_text("")
            proc = subprocess.Popen(
                ["ip", "netns", "exec", h.netns, *self._clean_login(), SSHD, "-D", "-f", str(conf), "-E", str(log)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )
            deadline = time.monotonic() + timeout
            while "Server listening on" not in log.read_text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the sshd behind {gateway} did not come up on {name}: {_tail(log)}")
                time.sleep(0.02)
            yield far
        finally:
            if proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    proc.wait(timeout=5)
            _ip("-n", g.netns, "link", "del", "hnbehind", check=False)  # its peer goes with it
            _run(["ip", "netns", "exec", h.netns, "sh", "-c", f"echo {before or 0} > {arp}"], check=False)

    def known_hosts_line(self, name: str, address: str) -> str:
        """A known_hosts line for host `name`'s key under `address`."""
        key_type, key = (self.host(name).workdir.parent / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        return f"{address} {key_type} {key}\n"

    def pids(self, name: str, env: Mapping[str, str] | None = None) -> list[int]:
        """Processes running on host `name` (in its network namespace), optionally only those whose
        environment contains every `env` item, e.g. pids("node0", {"HEADNODE_JOB_ID": "3"})."""
        ino = _netns_inode(self.host(name).netns)
        want = {f"{k}={v}".encode() for k, v in (env or {}).items()}
        return [p for p in _all_pids() if _proc_netns(p) == ino and want <= set(_environ(p))]

    def job_pids(self, name: str) -> dict[int, str]:
        """Every process on host `name` that carries a job marker, any job: {pid: HEADNODE_JOB_ID}."""
        out = {}
        for pid in self.pids(name):
            env = dict(e.split(b"=", 1) for e in _environ(pid) if b"=" in e)
            if b"HEADNODE_JOB_ID" in env and not _is_zombie(pid):
                out[pid] = env[b"HEADNODE_JOB_ID"].decode(errors="replace")
        return out

    def write_config(self, path: Path, *, state_dir: Path, workdirs: Path, gpus: int = 2) -> Path:
        """A hosts.toml for these hosts; every host gets its own fresh workdir under `workdirs`."""
        lines = [
            "[cluster]", 'name = "test"', f"state_dir = {_toml(state_dir)}", "",
            "[defaults]", 'user = "root"', f"python = {_toml(sys.executable)}",
            f"identity_file = {_toml(self.client_key)}", f"known_hosts = {_toml(self.known_hosts)}",
            f"network_interface = {_toml(IFACE)}",
        ]
        for h in self.hosts:
            workdir = workdirs / h.name
            workdir.mkdir(parents=True, exist_ok=True)
            lines += ["", "[[hosts]]", f"name = {_toml(h.name)}", f"address = {_toml(h.address)}",
                      f"workdir = {_toml(workdir)}", f"gpus = {gpus}"]
        path.write_text("\n".join(lines) + "\n")
        return path

    # --- tearing down ---------------------------------------------------------------------------

    def kill_jobs(self, roots: Iterable[Path] = ()) -> list[int]:
        """SIGKILL every process carrying HEADNODE_JOB_ID that belongs to this cluster: it runs in
        one of our namespaces, or its HEADNODE_RUN_DIR lies under our root or one of `roots`."""
        inodes = {_netns_inode(h.netns) for h in self.hosts} - {None}
        return kill_job_processes([self.root, *roots], inodes)

    def close(self) -> None:
        """Remove everything; safe to call twice and after a partial build."""
        _teardown(self.suffix, self.root)
        for p in self._sshd:
            with contextlib.suppress(Exception):
                p.wait(timeout=5)  # reap: they were SIGKILLed with their namespaces
        self._sshd.clear()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_available() -> None:
    if os.geteuid() != 0:
        raise ClusterUnavailable("the namespace cluster needs root (ip netns, sshd)")
    for tool in ("ip", "ssh", "ssh-keygen"):
        if not shutil.which(tool):
            raise ClusterUnavailable(f"`{tool}` is not installed (apt-get install -y iproute2 openssh-client)")
    if not os.access(SSHD, os.X_OK):
        raise ClusterUnavailable("`sshd` is not installed (apt-get install -y openssh-server)")


def kill_job_processes(roots: Iterable[Path], netns_inodes: set[int] = frozenset()) -> list[int]:
    """Kill job processes (HEADNODE_JOB_ID in their environment) whose HEADNODE_RUN_DIR is under one
    of `roots` or that run in one of `netns_inodes`; other people's jobs on this machine are left
    alone. Returns the pids killed; waits (bounded) until they are gone."""
    prefixes = [str(Path(r)) + os.sep for r in roots]
    killed = []
    for pid in _all_pids():
        env = dict(e.split(b"=", 1) for e in _environ(pid) if b"=" in e)
        if b"HEADNODE_JOB_ID" not in env or pid == os.getpid():
            continue
        run_dir = env.get(b"HEADNODE_RUN_DIR", b"").decode(errors="replace")
        if any(run_dir.startswith(p) for p in prefixes) or _proc_netns(pid) in netns_inodes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    _wait_gone(killed)
    return killed


def job_processes(roots: Iterable[Path]) -> dict[int, str]:
    """Live job processes anywhere on this machine whose HEADNODE_RUN_DIR lies under one of `roots`:
    {pid: HEADNODE_JOB_ID}. Looks only; kills nothing."""
    prefixes = [str(Path(r)) + os.sep for r in roots]
    out = {}
    for pid in _all_pids():
        env = dict(e.split(b"=", 1) for e in _environ(pid) if b"=" in e)
        run_dir = env.get(b"HEADNODE_RUN_DIR", b"").decode(errors="replace")
        if b"HEADNODE_JOB_ID" in env and any(run_dir.startswith(p) for p in prefixes) and not _is_zombie(pid):
            out[pid] = env[b"HEADNODE_JOB_ID"].decode(errors="replace")
    return out


def clean_leftovers() -> None:
    """Remove clusters whose owner died, and our-named namespaces/links that have no registry."""
    REGISTRY.mkdir(exist_ok=True)
    with _locked():
        _clean_leftovers()


def _clean_leftovers() -> None:
    # Under the lock: a build registers before it creates names, so an unregistered name is stale.
    live = set()
    for f in REGISTRY.glob("*.json"):
        with contextlib.suppress(Exception):
            entry = json.loads(f.read_text())
            if _start_time(entry["pid"]) == entry["start"]:
                live.add(f.stem)
                continue
            _teardown(f.stem, Path(entry["root"]))
    for ns in _netns_names():
        m = NETNS_RE.match(ns)
        if m and m.group(1) not in live:
            _kill_netns(ns)
            _ip("netns", "del", ns, check=False)
    for link in _link_names():
        m = LINK_RE.match(link)
        if m and m.group(1) not in live:
            _ip("link", "del", link, check=False)


# --- internals ------------------------------------------------------------------------------------

def _teardown(suffix: str, root: Path) -> None:
    namespaces = [ns for ns in _netns_names() if NETNS_RE.match(ns) and ns.split("-")[1] == suffix]
    inodes = {_netns_inode(ns) for ns in namespaces} - {None}
    kill_job_processes([root], inodes)
    for ns in namespaces:
        _kill_netns(ns)  # sshd and every session: a namespace with live processes never goes away
        _ip("netns", "del", ns, check=False)  # also removes both ends of its veth
    for link in _link_names():
        m = LINK_RE.match(link)
        if m and m.group(1) == suffix:
            _ip("link", "del", link, check=False)
    shutil.rmtree(root, ignore_errors=True)
    _registry_file(suffix).unlink(missing_ok=True)


def _kill_netns(ns: str) -> None:
    ino = _netns_inode(ns)
    if ino is None:
        return
    pids = [p for p in _all_pids() if _proc_netns(p) == ino and p != os.getpid()]
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    _wait_gone(pids)


def _wait_gone(pids: list[int], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    for p in pids:
        while Path(f"/proc/{p}").exists() and not _is_zombie(p) and time.monotonic() < deadline:
            time.sleep(0.01)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _free_subnet() -> ipaddress.IPv4Network:
    """A 10.213.X.0/24 that no address or route on this machine overlaps (call under the lock)."""
    taken = [ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False)
             for link in _ip_json("-4", "addr", "show") for a in link.get("addr_info", [])]
    taken += [ipaddress.ip_network(r["dst"], strict=False)
              for r in _ip_json("-4", "route", "show", "table", "all") if r.get("dst", "default") != "default"]
    candidates = [ipaddress.ip_network(SUBNET.format(x=x)) for x in range(1, 255)]
    free = [n for n in candidates if not any(n.overlaps(t) for t in taken)]
    if not free:
        raise RuntimeError("no free 10.213.X.0/24 subnet left for a test cluster")
    return random.choice(free)


def _sshd_config(address: str, host_key: Path, authorized_keys: Path) -> str:
    return "\n".join([
        f"ListenAddress {address}",
        "Port 22",
        f"HostKey {host_key}",
        f"AuthorizedKeysFile {authorized_keys}",
        "PidFile none",  # -D: we hold the process; no pid files to clash between clusters
        "UsePAM no",
        "StrictModes no",  # the keys live under /tmp
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UseDNS no",
        "PrintMotd no",
        "MaxSessions 100",  # one cached connection may carry many channels
        "MaxStartups 100:30:200",  # benchmarks open many connections at once
        "Subsystem sftp internal-sftp",  # Executor.put copies over SFTP
        "",
    ])


def _toml(value: object) -> str:
    return json.dumps(str(value))  # a TOML basic string is a JSON string for these paths and names


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return _run(["ip", *args], check=check)


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def _netns_names() -> list[str]:
    return [p.name for p in NETNS_DIR.iterdir()] if NETNS_DIR.is_dir() else []


def _link_names() -> list[str]:
    return [link["ifname"] for link in _ip_json("link", "show")]


def _ip_json(*args: str) -> list[dict]:
    return json.loads(_ip("-j", *args).stdout or "[]")


def _netns_inode(ns: str) -> int | None:
    try:
        return (NETNS_DIR / ns).stat().st_ino
    except OSError:
        return None


def _all_pids() -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def _proc_netns(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def _environ(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks: with the pid it identifies a process (pids recycle)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _registry_file(suffix: str) -> Path:
    return REGISTRY / f"{suffix}.json"


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    with open(LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _tail(path: Path, n: int = 300) -> str:
    try:
        return path.read_text()[-n:].strip() or "(empty log)"
    except OSError:
        return "(no log)"


def main() -> None:
    """`python -m tests.cluster [N]`: a cluster to poke at by hand, removed on Ctrl-C."""
    n = int(sys.argv[1]) if len(sys.argv) > 1 else CLUSTER_DEFAULT_HOSTS
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill` and `timeout` tear down too
    with Cluster.build(n) as c:
        config = c.write_config(c.root / "hosts.toml", state_dir=c.root / "state", workdirs=c.root / "work")
        print(f"{n} hosts on {c.subnet} built in {c.build_seconds:.2f} s")
        print(f"  headnode --config {config} hosts probe")
        print(f"  {shlex.join(c.ssh_argv(c.hosts[0].name, ['hostname', '-I']))}")
        print("Ctrl-C removes it.")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
