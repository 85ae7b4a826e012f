"""Execution: the only module that talks to hosts.

SSH goes through Fabric (it reads ~/.ssh/config: user, port, IdentityFile, ProxyJump) with one change
that matters: Fabric trusts unknown host keys by default (AutoAddPolicy), so every connection here is
switched to RejectPolicy with the system and inventory known_hosts loaded. A host whose address is
`localhost` runs the same argv through subprocess, with the same Result.

Commands are argv lists, quoted with shlex.join for the remote shell; environment variables travel
as an `env K=V ...` prefix (sshd's AcceptEnv is usually closed).

A failed connection becomes one true sentence (connect_error), never paramiko's own words: a host that
accepts TCP but never sends its SSH banner (sshd stopped or swamped) is reported as exactly that within
the connect timeout, and paramiko's log records (its transport thread logs tracebacks) never reach the
terminal: they are dropped, or written to STATE_DIR/ssh-debug.log under HEADNODE_DEBUG=1.
"""

from __future__ import annotations

import abc
import errno
import logging
import os
import select
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .inventory import Host, Inventory
from .terminal import escape_controls
from .remote import source

NOT_FOUND = 127  # the shell's "command not found"
DEBUG_LOG = "ssh-debug.log"  # under the state dir, with HEADNODE_DEBUG=1: paramiko's own log


@dataclass
class Result:
    host: str
    ok: bool
    exit_code: int | None
    stdout: str
    stderr: str
    error: str | None  # why the command could not run (unreachable, auth, key, timeout); None if it ran
    elapsed: float

    @property
    def reason(self) -> str | None:
        """One line for a human: the connection error, else the command's failure."""
        if self.error:
            return self.error
        if self.exit_code:
            tail = escape_controls((self.stderr.strip().splitlines() or [""])[-1][:200])  # the host's words
            return f"exited {self.exit_code}" + (f": {tail}" if tail else "")
        return None


class HostUnreachable(Exception):
    """Raised by helpers that need a result (stream, put); carries the human sentence."""


class HandshakeFailed(Exception):
    """The host took the TCP connection, but the SSH handshake did not complete: at `stage` ("banner":
    no SSH version line yet; "key exchange": after it), because nothing came within `seconds`, or because
    the server closed the connection (`closed`)."""

    def __init__(self, stage: str, seconds: float, closed: bool = False):
        super().__init__(f"SSH handshake failed at the {stage} ({'closed' if closed else f'nothing within {seconds:g} s'})")
        self.stage, self.seconds, self.closed = stage, seconds, closed


# Every Python program goes through remote/bootstrap.py, so that the login directory cannot shadow the
# standard library: `python -c BOOTSTRAP PROGRAM ARG...`.
BOOTSTRAP = source("bootstrap.py")


def python_argv(host: Host, code: str, args: Sequence[str] = (), *, flags: Sequence[str] = ()) -> list[str]:
    return [host.python, *flags, "-c", BOOTSTRAP, code, *args]


def with_env(argv: Sequence[str], env: Mapping[str, str] | None) -> list[str]:
    if not env:
        return list(argv)
    return ["env", *(f"{k}={v}" for k, v in env.items()), *argv]


class Executor:
    def __init__(self, inventory: Inventory, *, connect_timeout: float = 5.0):
        self.inventory = inventory
        self.connect_timeout = connect_timeout
        quiet_paramiko(inventory.state_dir)
        self._conns: dict[str, object] = {}
        self._locks: dict[str, threading.Lock] = {h.name: threading.Lock() for h in inventory.hosts}
        self._guard = threading.Lock()

    # --- connections ------------------------------------------------------------------------------

    def _lock(self, host: Host) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(host.name, threading.Lock())

    def connection(self, host: Host):
        """The cached, open Fabric Connection for host (opened on first use)."""
        with self._lock(host):
            conn = self._conns.get(host.name)
            if conn is not None and conn.is_connected:
                return conn
            conn = self._new_connection(host)
            try:
                conn.open()
            except Exception as e:
                route = _route(conn, host)
                cause = _handshake_failure(_chain(conn)[::-1][route.failed], e, self.connect_timeout)
                _close_chain(conn)  # else its transport thread waits on for the banner
                raise ConnectFailed(cause, route) from e
            conn.transport.set_keepalive(5)  # notice a dead link between commands
            self._conns[host.name] = conn
            return conn

    def _new_connection(self, host: Host):
        import fabric  # 160 ms: only commands that touch remote hosts pay it

        # Every wait of the handshake within the connect timeout: the TCP connect and the negotiation
        # (Fabric passes connect_timeout as paramiko's `timeout`), the banner and each auth reply. The
        # Config carries them (and identity_file) to the ProxyJump gateways too, which Fabric builds
        # from the ssh config with nothing but a clone of it.
        waits = {"banner_timeout": self.connect_timeout, "auth_timeout": self.connect_timeout}
        config = fabric.Config(
            ssh_config=ssh_config(host),  # the inventory's ssh_config, else ~/.ssh/config (parsed once)
            overrides={
                "connect_kwargs": {**waits, **({"key_filename": [host.identity_file]} if host.identity_file else {})},
                "timeouts": {"connect": self.connect_timeout},
            },
        )
        conn = fabric.Connection(
            host.address,
            user=host.user,
            port=host.port,
            connect_timeout=self.connect_timeout,
            connect_kwargs=dict(waits),  # identity_file comes from the Config: listed once, not twice
            config=config,
        )
        _reject_unknown_keys(conn, host)
        _bound_gateways(conn, self.connect_timeout)
        return conn

    def drop(self, host: Host) -> None:
        with self._lock(host):
            conn = self._conns.pop(host.name, None)
        if conn is not None:
            _close_chain(conn)

    def close(self) -> None:
        for h in list(self._conns):
            self.drop(self.inventory.host(h))

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- running commands -------------------------------------------------------------------------

    def run(
        self,
        host: Host,
        argv: Sequence[str],
        *,
        input: str | bytes | None = None,
        timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
    ) -> Result:
        argv = with_env(argv, env)
        t0 = time.monotonic()
        if host.is_local:
            return _run_local(host, argv, input, timeout, t0)
        try:
            conn = self.connection(host)
        except Exception as e:
            return Result(host.name, False, None, "", "", connect_error(host, e, self.connect_timeout), time.monotonic() - t0)
        return self._run_remote(host, conn, argv, input, timeout, t0)

    def _run_remote(self, host, conn, argv, input, timeout, t0) -> Result:
        """One SSH channel per command, read as bytes and decoded once at the end. (Fabric's run, via
        invoke, feeds stdin one byte per 10 ms and decodes output per 1000-byte chunk, which splits
        multi-byte UTF-8 characters; a raw channel has neither problem and no reader threads.)"""
        deadline = t0 + timeout
        try:
            chan = conn.transport.open_session(timeout=min(self.connect_timeout, timeout))
            chan.exec_command(shlex.join(argv))
            if input is not None:
                chan.sendall(input.encode() if isinstance(input, str) else input)
            chan.shutdown_write()
        except Exception as e:
            self.drop(host)  # a wedged transport (cut link): reconnect next time
            return Result(host.name, False, None, "", "", connect_error(host, e, self.connect_timeout), time.monotonic() - t0)
        out, err = bytearray(), bytearray()
        try:
            while True:
                while chan.recv_ready():
                    out += chan.recv(1 << 16)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(1 << 16)
                # The server sends all output before the exit status, and paramiko feeds packets in
                # order: once the status is here, the buffers hold everything.
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.drop(host)
                    return Result(host.name, False, None, out.decode(errors="replace"), err.decode(errors="replace"),
                                  f"timed out after {timeout:g} s", time.monotonic() - t0)
                # stdout data wakes select; stderr and the exit status do not, hence the short cap.
                select.select([chan], [], [], min(remaining, 0.005))
            code = chan.recv_exit_status()
        finally:
            chan.close()
        return Result(host.name, code == 0, code, out.decode(errors="replace"), err.decode(errors="replace"), None, time.monotonic() - t0)

    def run_many(
        self,
        hosts: Iterable[Host],
        argv: Sequence[str] | Callable[[Host], Sequence[str]],
        **kw,
    ) -> dict[str, Result]:
        """Run on every host at once; a dead host costs its own timeout, not everyone's."""
        hosts = list(hosts)
        if not hosts:
            return {}

        def one(h: Host) -> Result:
            return self.run(h, argv(h) if callable(argv) else argv, **kw)

        with ThreadPoolExecutor(max_workers=min(len(hosts), 64)) as pool:
            return {h.name: r for h, r in zip(hosts, pool.map(one, hosts))}

    def python(self, host: Host, code: str, args: Sequence[str] = (), **kw) -> Result:
        """Run a small Python program with the host's interpreter (nothing installed on the host)."""
        return self.run(host, python_argv(host, code, args), **kw)

    def python_many(
        self,
        hosts: Iterable[Host],
        code: str,
        args: Sequence[str] | Callable[[Host], Sequence[str]] = (),
        **kw,
    ) -> dict[str, Result]:
        return self.run_many(hosts, lambda h: python_argv(h, code, args(h) if callable(args) else args), **kw)

    # --- long-lived streams and files -------------------------------------------------------------

    def stream(self, host: Host, argv: Sequence[str], *, input: str | None = None, read_timeout: float | None = None) -> Stream:
        """Start a long-lived command and iterate its stdout lines. Closing the stream ends the
        remote process (its stdin and channel close). Raises HostUnreachable if it cannot start."""
        if host.is_local:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                start_new_session=True,
            )
            if input:
                proc.stdin.write(input)
                proc.stdin.flush()
            return LocalStream(proc)
        try:
            conn = self.connection(host)
            chan = conn.transport.open_session(timeout=self.connect_timeout)
            chan.exec_command(shlex.join(argv))
        except Exception as e:
            self.drop(host)
            raise HostUnreachable(connect_error(host, e, self.connect_timeout)) from None
        if input:
            chan.sendall(input.encode())
        if read_timeout:
            chan.settimeout(read_timeout)
        return RemoteStream(chan, lambda: self.drop(host))

    def put(self, host: Host, local_path: str | os.PathLike, remote_path: str) -> None:
        if host.is_local:
            Path(remote_path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local_path, remote_path)
            return
        try:
            self.connection(host).put(str(local_path), remote_path)
        except Exception as e:
            self.drop(host)
            raise HostUnreachable(connect_error(host, e, self.connect_timeout)) from None

    def ssh_command(self, host: Host) -> list[str]:
        """The OpenSSH client argv that reaches host with the same settings (for rsync -e)."""
        cmd = ["ssh", *(["-F", host.ssh_config] if host.ssh_config else [])]
        cmd += ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", f"ConnectTimeout={int(self.connect_timeout)}"]
        if host.port:
            cmd += ["-p", str(host.port)]
        if host.identity_file:
            cmd += ["-i", host.identity_file]
        if host.known_hosts:
            cmd += ["-o", f"UserKnownHostsFile={host.known_hosts}"]
        return cmd

    def target(self, host: Host) -> str:
        return f"{host.user}@{host.address}" if host.user else host.address


class Stream(abc.ABC):
    """Lines of a long-lived command's stdout; closing it ends the command."""

    @abc.abstractmethod
    def __iter__(self) -> Iterator[str]: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LocalStream(Stream):
    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    def __iter__(self) -> Iterator[str]:
        for line in self.proc.stdout:
            yield line.rstrip("\n")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class RemoteStream(Stream):
    def __init__(self, chan, on_error: Callable[[], None]):
        self.chan, self.on_error = chan, on_error

    def __iter__(self) -> Iterator[str]:
        buf = b""
        while True:
            try:
                data = self.chan.recv(65536)
            except (TimeoutError, OSError):
                self.on_error()
                raise HostUnreachable("no data within the read timeout (link down?)") from None
            if not data:
                if buf:
                    yield buf.decode(errors="replace")
                return
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                yield line.decode(errors="replace")

    def close(self) -> None:
        try:
            self.chan.close()
        except Exception:
            pass


# --- helpers ---------------------------------------------------------------------------------------


# --- ~/.ssh/config ---------------------------------------------------------------------------------

USER_SSH_CONFIG, SYSTEM_SSH_CONFIG = "~/.ssh/config", "/etc/ssh/ssh_config"
_ssh_configs: dict[tuple, object] = {}
_ssh_configs_lock = threading.Lock()


def ssh_config(host: Host):
    """The OpenSSH client config that SSH to `host` follows (a paramiko SSHConfig): the inventory's
    ssh_config file alone (as `ssh -F FILE`), else ~/.ssh/config then /etc/ssh/ssh_config, as
    Fabric reads them. Parsed once per version of the files (shared: lookups only read it)."""
    import paramiko

    paths = [host.ssh_config] if host.ssh_config else [os.path.expanduser(USER_SSH_CONFIG), SYSTEM_SSH_CONFIG]
    key = tuple((p, *_version(p)) for p in paths)
    with _ssh_configs_lock:
        cached = _ssh_configs.get(key)
    if cached is not None:
        return cached
    config = paramiko.SSHConfig()
    for p in paths:
        if os.path.isfile(p):
            with open(p) as f:
                config.parse(f)
        elif host.ssh_config:  # named in hosts.toml (checked at load), and gone since
            raise FileNotFoundError(errno.ENOENT, "ssh_config named in hosts.toml is missing", p)
    with _ssh_configs_lock:
        _ssh_configs[key] = config
    return config


def _version(path: str) -> tuple:
    try:
        st = os.stat(path)
    except OSError:
        return (None, None)
    return (st.st_mtime_ns, st.st_size)


def ssh_lookup(host: Host) -> dict:
    """What the ssh config says for host.address: `hostname` (the real destination, the address itself
    when no HostName applies), and `proxyjump`, `port`, `user` ... when set."""
    return dict(ssh_config(host).lookup(host.address))


# --- host keys and connection errors ---------------------------------------------------------------


def _reject_unknown_keys(conn, host: Host) -> None:
    """Undo Fabric's AutoAddPolicy on this connection and any ProxyJump gateway behind it."""
    import paramiko

    c = conn
    while c is not None and hasattr(c, "client"):
        c.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            c.client.load_system_host_keys()
        except OSError:
            pass
        if host.known_hosts and os.path.exists(host.known_hosts):
            c.client.load_host_keys(host.known_hosts)
        c = c.gateway if not isinstance(c.gateway, str) else None


@dataclass(frozen=True)
class Hop:
    """One SSH connection on the way to a host: a ProxyJump gateway, or the host itself (the last)."""

    name: str  # as written: hosts.toml's address, or the ProxyJump entry's host
    hostname: str  # where the TCP connection goes: the ssh config's HostName, else the name
    port: int
    user: str | None


@dataclass(frozen=True)
class Route:
    """How SSH reaches a host (gateways first, the host last) and which connection failed."""

    hops: tuple[Hop, ...]
    failed: int  # index into hops
    proxy_command: str | None = None  # the host is reached through a ProxyCommand instead
    jumps: tuple[str, ...] = ()  # the ProxyJump entries as the ssh config writes them, one per gateway


class ConnectFailed(Exception):
    """Opening the connection to a host failed with `error`, at `route.hops[route.failed]`."""

    def __init__(self, error: BaseException, route: Route):
        super().__init__(str(error))
        self.error, self.route = error, route


def _chain(conn) -> list:
    """The Fabric connection and the ProxyJump gateways behind it: the host first, the first hop last."""
    out, c = [], conn
    while c is not None and hasattr(c, "client"):
        out.append(c)
        c = c.gateway if not isinstance(c.gateway, str) else None
    return out


def _route(conn, host: Host) -> Route:
    """conn's route, and the first connection along it that did not get through (opened outward in)."""
    chain = _chain(conn)[::-1]
    hops = tuple(
        Hop(host.address if c is conn else c.original_host, c.host, int(c.port), c.user) for c in chain
    )
    failed = len(chain) - 1
    for i, c in enumerate(chain):
        t = c.client.get_transport()
        if t is None or not t.is_authenticated():
            failed = i
            break
    jumps = tuple(j.strip() for j in (conn.ssh_config.get("proxyjump") or "").split(",") if j.strip())
    if len(jumps) != len(chain) - 1:  # a gateway with a ProxyJump of its own: name each by its connection
        jumps = tuple(f"{h.user}@{h.name}" + (f":{h.port}" if h.port != 22 else "") for h in hops[:-1])
    command = conn.gateway if isinstance(conn.gateway, str) else None
    return Route(hops, failed, command, jumps)


def _bound_gateways(conn, seconds: float) -> None:
    """Open each ProxyJump hop's forwarded channel within `seconds` (Fabric waits paramiko's default of
    an hour for a gateway that cannot reach the next host)."""
    chain = _chain(conn)
    for c, gw in zip(chain, chain[1:]):
        def open_gateway(c=c, gw=gw):
            gw.open()
            return gw.transport.open_channel("direct-tcpip", dest_addr=(c.host, int(c.port)), src_addr=("", 0), timeout=seconds)

        c.open_gateway = open_gateway


def connect_error(host: Host, e: BaseException, seconds: float | None = None) -> str:
    """Turn paramiko/socket exceptions into one true sentence that says what to do; `seconds` is the
    connect timeout the connection was held to. paramiko's own texts ("No existing session", "Error
    reading SSH protocol banner") say where it stopped, not why, and never reach the user.

    When the connection went through ProxyJump gateways (or an ssh config alias), the sentence names
    the connection that failed, the gateway or the host, and gives a fix that works for that one: an
    `ssh-keyscan` of the real HostName and port, run through the gateway before it when the head
    cannot reach it directly."""
    import paramiko

    route = None
    if isinstance(e, ConnectFailed):
        route, e = e.route, e.error
    if route is None:
        route = Route((Hop(host.address, host.address, host.port or 22, host.user),), 0)
    hop = route.hops[route.failed]
    gateway = route.failed < len(route.hops) - 1
    through = route.hops[route.failed - 1] if route.failed else None
    if gateway:
        where = f"the ProxyJump gateway {_at(hop)} on the way to {host.address}"
    elif through is not None:
        where = f"{_at(hop)}, reached through the ProxyJump gateway {through.name}"
    elif route.proxy_command:
        where = f"{_at(hop)}, reached through a ProxyCommand"
    else:
        where = _at(hop)
    within = f"within {seconds:g} s" if seconds else "within the connect timeout"
    known = host.known_hosts or "~/.ssh/known_hosts"
    text = str(e)
    if isinstance(e, HandshakeFailed):
        if e.closed and e.stage == "banner":
            return (f"unreachable: {where} closed the connection before sending an SSH banner "
                    f"(sshd at its MaxStartups limit, or no SSH server on that port?)")
        if e.closed:
            return f"SSH key exchange with {where} failed: the server closed the connection (see its sshd log)"
        if e.stage == "banner":
            return f"no SSH banner from {where} within {e.seconds:g} s (sshd hung or overloaded?)"
        return f"SSH key exchange with {where} did not finish within {e.seconds:g} s (sshd hung or overloaded?)"
    if isinstance(e, paramiko.BadHostKeyException):
        return (
            f"host key changed for {where}: the server's key does not match {known} (possible "
            f"man-in-the-middle, or the host was reinstalled); if the change is expected, remove the old "
            f"entry with `{shlex.join(['ssh-keygen', '-R', _known_name(hop), '-f', known])}` and add the new one with"
            f" `{_keyscan(host, route, known)}`"
        )
    if isinstance(e, paramiko.SSHException) and "not found in known_hosts" in text:
        which = "the gateway" if gateway else "this host"
        return (f"host key unknown for {where}: it is not in {known}; to trust {which}, check its fingerprint and run "
                f"`{_keyscan(host, route, known)}`")
    if isinstance(e, paramiko.AuthenticationException) and "timeout" in text.lower():
        return f"no answer to authentication from {where} {within} (sshd hung or overloaded?)"
    if isinstance(e, paramiko.AuthenticationException) and gateway:
        return (f"authentication refused by {where} for user {hop.user or 'default'}: set User and IdentityFile for "
                f"{hop.name} in the ssh config, or load its key into ssh-agent")
    if isinstance(e, paramiko.AuthenticationException):
        return (f"authentication refused by {where} for user {hop.user or host.user or 'default'}: set identity_file or"
                " user in hosts.toml, or load the key into ssh-agent")
    if isinstance(e, paramiko.ChannelException) and through is not None and not gateway:
        return (f"unreachable: the ProxyJump gateway {through.name} could not connect to {_at(hop)} "
                f"({_short(e.text)}; is it up, and is that address right for the gateway?)")
    if isinstance(e, paramiko.ChannelException):
        return f"{where} refused to open a session ({_short(e.text)}; sshd's MaxSessions reached?)"
    if isinstance(e, paramiko.SSHException) and "Timeout opening channel" in text and through is not None and not gateway:
        return (f"unreachable: the ProxyJump gateway {through.name} did not connect to {_at(hop)} {within} "
                "(host down, or a firewall between them?)")
    if isinstance(e, paramiko.SSHException) and "Timeout opening channel" in text:
        return f"unreachable: {where} stopped answering (no reply to opening a channel; link down?)"
    if isinstance(e, paramiko.SSHException) and text in ("No existing session", "SSH session not active"):
        return f"unreachable: lost the SSH connection to {where} (sshd restarted, or the link dropped?)"
    if isinstance(e, EOFError) or (isinstance(e, paramiko.SSHException) and text.startswith("Channel closed")):
        return f"SSH to {where}: the server closed the channel before the command ran (an over-long command line? see its sshd log)"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return f"unreachable: no answer from {where} {within} (host down, or a firewall dropping SSH?)"
    if isinstance(e, paramiko.ssh_exception.NoValidConnectionsError):
        if all(getattr(err, "errno", None) == errno.ECONNREFUSED for err in e.errors.values()):
            return f"unreachable: {where} refused the connection (is sshd running there, on that port?)"
        return f"unreachable: no route to {where} (host down, or not on this network?)"
    if isinstance(e, FileNotFoundError) and host.ssh_config and e.filename == host.ssh_config:
        return (f"cannot read the ssh config {host.ssh_config} that hosts.toml names for {host.name}: it is gone; restore it,"
                " or drop ssh_config")
    if isinstance(e, socket.gaierror):
        fix = "check the address in hosts.toml" if hop.name == hop.hostname and not gateway else "check its HostName in the ssh config"
        return f"unreachable: cannot resolve {hop.hostname} ({_short(e)}); {fix}"
    if isinstance(e, OSError):
        return f"unreachable: cannot connect to {where} ({_short(e)})"
    return f"SSH to {where} failed: {_short(e)}"


def _at(hop: Hop) -> str:
    """A hop for a sentence: `10.0.0.1:22`, or `gpu01 (10.0.0.1:22)` when an ssh config alias names it."""
    return f"{hop.hostname}:{hop.port}" if hop.name == hop.hostname else f"{hop.name} ({hop.hostname}:{hop.port})"


def _known_name(hop: Hop) -> str:
    """How known_hosts (and paramiko's lookup) names the hop: the real hostname, with a non-22 port."""
    return hop.hostname if hop.port == 22 else f"[{hop.hostname}]:{hop.port}"


def _keyscan(host: Host, route: Route, known: str) -> str:
    """A command line that appends the failed hop's host key to `known`, one that works for that hop:
    ssh-keyscan of its real hostname and port, run here for the first hop, else on the gateway before
    it (which can reach it), over ssh with headnode's settings."""
    hop = route.hops[route.failed]
    scan = ["ssh-keyscan", *(["-p", str(hop.port)] if hop.port != 22 else []), hop.hostname]
    if route.failed == 0 and route.proxy_command:  # reached only through a command: OpenSSH shows the key, and asks
        config = ["-F", host.ssh_config] if host.ssh_config else []
        return shlex.join(["ssh", *config, "-o", f"UserKnownHostsFile={known}", host.address, "true"])
    if route.failed == 0:
        return f"{shlex.join(scan)} >> {known}"
    jumps = route.jumps[: route.failed]
    ssh = ["ssh", *(["-F", host.ssh_config] if host.ssh_config else [])]
    if host.identity_file:
        ssh += ["-i", host.identity_file]
    if host.known_hosts:
        ssh += ["-o", f"UserKnownHostsFile={host.known_hosts}"]
    if len(jumps) > 1:
        ssh += ["-J", ",".join(jumps[:-1])]
    return f"{shlex.join([*ssh, jumps[-1], *scan])} >> {known}"


def _short(e: BaseException | str) -> str:
    """The first line of an error, at most 200 characters, its control characters escaped (a host may
    have written it)."""
    s = str(e) or type(e).__name__
    return escape_controls(s.splitlines()[0][:200] if s.strip() else s[:200])


def _handshake_failure(conn, e: BaseException, seconds: float) -> BaseException:
    """What really stopped conn.open(): a HandshakeFailed when the server took the TCP connection but
    the SSH handshake did not complete, else `e` itself (TCP errors; host key and authentication come
    after the handshake and are already precise)."""
    import paramiko

    t = conn.client.get_transport()
    if t is None or t.initial_kex_done:
        return e
    stage = "key exchange" if t.remote_version else "banner"
    cause = e
    if not _banner_error(e):
        cause = t.get_exception() or e  # what the transport thread died of, if it did
    if _banner_error(cause):
        # paramiko raises it from inside the read's except: the read's own error is its __context__
        timed_out = isinstance(cause.__context__, (socket.timeout, TimeoutError))
        return HandshakeFailed("banner", seconds, closed=not timed_out)
    if isinstance(cause, EOFError) or (isinstance(cause, OSError) and not isinstance(cause, TimeoutError)):
        return HandshakeFailed(stage, seconds, closed=True)
    if isinstance(cause, paramiko.SSHException) and str(cause) == "No existing session":
        # start_client waited out its timeout while the thread still waited: nothing came in time
        return HandshakeFailed(stage, seconds)
    return cause


def _banner_error(e: BaseException) -> bool:
    return str(e).startswith("Error reading SSH protocol banner")


def _close_chain(conn) -> None:
    """Close a Fabric connection and the ProxyJump gateways behind it (Fabric's close leaves those
    open), whether or not its handshake finished."""
    c = conn
    while c is not None and hasattr(c, "client"):
        try:
            c.close()
            c.client.close()  # Fabric's close skips a transport whose handshake is still running
        except Exception:
            pass
        c = c.gateway if not isinstance(c.gateway, str) else None


_log_lock = threading.Lock()
_log_configured = False


def quiet_paramiko(state_dir: str | os.PathLike | None) -> None:
    """Keep paramiko's log away from the terminal, once per process.

    paramiko logs through `logging`, and its transport thread logs every failed handshake at ERROR
    with a traceback. headnode configures no logging, so Python's last-resort handler printed those
    on stderr: the CLI's, `scheduler run`'s, or over the console's screen. Here its records stop at the
    "paramiko" logger: dropped unformatted, or under HEADNODE_DEBUG=1 appended to STATE_DIR/ssh-debug.log."""
    global _log_configured
    with _log_lock:
        if _log_configured:
            return
        _log_configured = True
    logger = logging.getLogger("paramiko")
    logger.propagate = False  # nothing reaches the root logger's handlers, whoever configures them
    handler: logging.Handler = logging.NullHandler()
    logger.setLevel(logging.CRITICAL + 1)
    if os.environ.get("HEADNODE_DEBUG") == "1" and state_dir is not None:
        try:
            Path(state_dir).mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(Path(state_dir) / DEBUG_LOG, encoding="utf-8")
        except OSError:
            pass  # no writable state dir: no debug log, and still nothing on the terminal
        else:
            handler.setFormatter(logging.Formatter("%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s"))
            logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)


def _run_local(host: Host, argv: list[str], input, timeout: float, t0: float) -> Result:
    data = input.encode() if isinstance(input, str) else input
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a timeout kills the whole group, like a dropped SSH session
        )
    except FileNotFoundError:
        return Result(host.name, False, NOT_FOUND, "", f"{argv[0]}: command not found", None, time.monotonic() - t0)
    try:
        out, err = proc.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        return Result(host.name, False, None, "", "", f"timed out after {timeout:g} s", time.monotonic() - t0)
    return Result(
        host.name, proc.returncode == 0, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"), None,
        time.monotonic() - t0,
    )
