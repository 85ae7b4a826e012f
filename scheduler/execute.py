"""Execution: the only module that talks to hosts.

SSH goes through Fabric (it reads ~/.ssh/config: user, port, IdentityFile, ProxyJump) with one change
that matters: Fabric trusts unknown host keys by default (AutoAddPolicy), so every connection here is
switched to RejectPolicy with the system and inventory known_hosts loaded. A host whose address is
`localhost` runs the same argv through subprocess, with the same Result.

Commands are argv lists, quoted with shlex.join for the remote shell; environment variables travel
as an `env K=V ...` prefix (sshd's AcceptEnv is usually closed).
"""

from __future__ import annotations

import abc
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
from .remote import source

NOT_FOUND = 127  # the shell's "command not found"


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
            tail = (self.stderr.strip().splitlines() or [""])[-1][:200]
            return f"exited {self.exit_code}" + (f": {tail}" if tail else "")
        return None


class HostUnreachable(Exception):
    """Raised by helpers that need a result (stream, put); carries the human sentence."""


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
            conn.open()
            conn.transport.set_keepalive(5)  # notice a dead link between commands
            self._conns[host.name] = conn
            return conn

    def _new_connection(self, host: Host):
        import fabric  # 160 ms: only commands that touch remote hosts pay it

        kwargs: dict = {}
        if host.identity_file:
            kwargs["key_filename"] = [host.identity_file]
        conn = fabric.Connection(
            host.address,
            user=host.user,
            port=host.port,
            connect_timeout=self.connect_timeout,
            connect_kwargs=kwargs,
        )
        _reject_unknown_keys(conn, host)
        return conn

    def drop(self, host: Host) -> None:
        with self._lock(host):
            conn = self._conns.pop(host.name, None)
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

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
            return Result(host.name, False, None, "", "", connect_error(host, e), time.monotonic() - t0)
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
            return Result(host.name, False, None, "", "", connect_error(host, e), time.monotonic() - t0)
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
            raise HostUnreachable(connect_error(host, e)) from None
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
            raise HostUnreachable(connect_error(host, e)) from None

    def ssh_command(self, host: Host) -> list[str]:
        """The OpenSSH client argv that reaches host with the same settings (for rsync -e)."""
        cmd = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", f"ConnectTimeout={int(self.connect_timeout)}"]
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


def connect_error(host: Host, e: BaseException) -> str:
    """Turn paramiko/socket exceptions into one sentence that says what to do."""
    import paramiko

    where = f"{host.address}:{host.port or 22}"
    known = host.known_hosts or "~/.ssh/known_hosts"
    keyscan = shlex.join(["ssh-keyscan", *(["-p", str(host.port)] if host.port else []), host.address])
    if isinstance(e, paramiko.BadHostKeyException):
        return (
            f"host key changed for {where}: the server's key does not match {known} (possible "
            f"man-in-the-middle, or the host was reinstalled); if the change is expected, remove the old "
            f"entry with `ssh-keygen -R {host.address} -f {known}` and add the new one with `{keyscan} >> {known}`"
        )
    if isinstance(e, paramiko.SSHException) and "not found in known_hosts" in str(e):
        return f"host key unknown for {where}: it is not in {known}; to trust this host, check its fingerprint and run `{keyscan} >> {known}`"
    if isinstance(e, paramiko.AuthenticationException):
        return f"authentication refused by {where} for user {host.user or 'default'}: set identity_file or user in hosts.toml, or load the key into ssh-agent"
    if isinstance(e, paramiko.SSHException) and "Timeout opening channel" in str(e):
        return f"unreachable: {where} stopped answering (no reply to opening a channel; link down?)"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return f"unreachable: no answer from {where} within the connect timeout"
    if isinstance(e, paramiko.ssh_exception.NoValidConnectionsError):
        return f"unreachable: {where} refused the connection (is sshd running there, on that port?)"
    if isinstance(e, OSError):
        return f"unreachable: cannot connect to {where} ({_short(e)})"
    return f"SSH to {where} failed: {_short(e)}"


def _short(e: BaseException) -> str:
    s = str(e) or type(e).__name__
    return s.splitlines()[0][:200]


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
        host.name, proc.returncode == 0, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"), None, time.monotonic() - t0
    )
