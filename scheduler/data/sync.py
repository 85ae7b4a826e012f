"""`data sync`: copy a version into hosts' workdirs, in parallel across hosts, resumably.

Per host, one thread: (1) one round trip asks the host which files it already holds intact (remote.CHECK,
which also creates the directory and says whether rsync is there); (2) only the others travel — with
rsync over the host's own SSH settings when both sides have it (it writes each file under a temp name
and renames it; --partial-dir resumes inside a big shard), else by SFTP to `.NAME.partial` then a
rename, one file at a time; (3) a second check hashes what arrived, and the placement becomes verified
or corrupt. A sync cut off anywhere leaves only whole, renamed files behind, so the next one sends
just the rest. Each thread writes progress to the store through its own connection.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Callable

from scheduler import humanize
from scheduler.data import remote
from scheduler.data.versions import host_path, placements, set_placement
from scheduler.errors import UserError
from scheduler.execute import Executor, HostUnreachable
from scheduler.inventory import Host
from scheduler.store import Store

CHECK_TIMEOUT = 600.0  # a first check may hash a big copy made by hand
RSYNC_PARTIAL = ".rsync-partial"


@dataclass
class HostSync:
    host: str
    state: str  # the placement afterwards: verified | corrupt | absent (or the old state when unreachable)
    sent: list[str] = field(default_factory=list)
    kept: int = 0  # files already there and intact
    bytes_sent: int = 0
    transport: str | None = None
    detail: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


def sync(
    store: Store,
    executor: Executor,
    hosts: list[Host],
    row: dict,
    *,
    transport: str = "auto",
    on_sent: Callable[[str, str], None] | None = None,
) -> list[HostSync]:
    """Sync one version (a datasets row) to hosts. on_sent(host, file) is called after each file lands
    (SFTP only; rsync sends a host's files in one go)."""
    if transport == "rsync" and not shutil.which("rsync"):
        raise UserError("--transport rsync: rsync is not installed on this machine", None, "install it, or use --transport sftp")
    files = remote.expected_files(row)
    name, version = row["name"], row["version"]
    before = placements(store, name, version)
    for h in hosts:
        set_placement(store, name, version, h.name, "syncing", "checking the copy there")

    def one(host: Host) -> HostSync:
        with Store(store.path, actor=store.actor) as own:  # sqlite connections stay in their thread
            try:
                r = _sync_host(own, executor, host, row, files, transport, on_sent)
            except BaseException as e:  # never leave a placement "syncing" with nobody syncing
                set_placement(own, name, version, host.name, "absent", f"sync interrupted ({type(e).__name__}); sync again to resume")
                raise
            old = before.get(host.name)
            if r.state == "unreachable":
                r.state = old["state"] if old else "absent"
            set_placement(own, name, version, host.name, r.state, r.detail)
            return r

    with ThreadPoolExecutor(max_workers=min(len(hosts), 16) or 1) as pool:
        return list(pool.map(one, hosts))


def _sync_host(store, executor, host, row, files, transport, on_sent) -> HostSync:
    t0 = time.monotonic()
    name, version = row["name"], row["version"]
    r = HostSync(host.name, "unreachable")
    target = host_path(host, name, version)
    first = _check(executor, host, target, files, mkdir=True)
    if isinstance(first, str):
        r.detail, r.seconds = f"sync failed: {first}", time.monotonic() - t0
        return r
    need = sorted(remote.problems(first["status"]))
    r.kept = len(files) - len(need)
    if need:
        size = sum(files[f][0] for f in need)
        try:
            r.transport = _transport(transport, host, first["rsync"])
            set_placement(store, name, version, host.name, "syncing",
                          f"sending {len(need)} of {len(files)} files ({humanize.size(size)}) by {r.transport}")
            if r.transport == "rsync":
                _rsync(executor, host, Path(row["path"]), first["dir"], need)
                r.sent = need
            else:
                for f in need:
                    _sftp_one(executor, host, Path(row["path"]) / f, first["dir"], f)
                    r.sent.append(f)
                    set_placement(store, name, version, host.name, "syncing", f"sent {len(r.sent)} of {len(need)} files")
                    if on_sent:
                        on_sent(host.name, f)
        except (HostUnreachable, TransferFailed) as e:
            r.bytes_sent = sum(files[f][0] for f in r.sent)
            r.state, r.detail = "absent", f"sync interrupted after {len(r.sent)} of {len(need)} files ({e}); sync again to resume"
            r.seconds = time.monotonic() - t0
            return r
        r.bytes_sent = size
    after = _check(executor, host, target, files, mkdir=False) if need else first
    if isinstance(after, str):  # files changed and none was checked: not verified, whatever it was before
        r.state, r.detail = "absent", f"sent, but the check afterwards failed: {after}; sync again"
    else:
        bad = remote.problems(after["status"])
        r.state = "corrupt" if bad else "verified"
        r.detail = remote.describe(bad, len(files))
    r.seconds = time.monotonic() - t0
    return r


class TransferFailed(Exception):
    pass


def _check(executor: Executor, host: Host, target: str, files, *, mkdir: bool) -> dict | str:
    """The host's answer, or a sentence saying why there is none."""
    res = executor.python(host, remote.CHECK, [target], input=remote.order(files, "check", mkdir), timeout=CHECK_TIMEOUT)
    if not res.ok:
        return res.reason or "the check program failed"
    try:
        return json.loads(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return f"the check program answered {res.stdout[:200]!r}"


def _transport(wanted: str, host: Host, remote_rsync: bool) -> str:
    if host.is_local:
        return "copy"
    if wanted == "sftp":
        return "sftp"
    both = remote_rsync and shutil.which("rsync") is not None
    if wanted == "rsync" and not both:
        raise TransferFailed(f"rsync is not installed on {host.name}")
    return "rsync" if both else "sftp"


def _rsync(executor: Executor, host: Host, head: Path, remote_dir: str, need: list[str]) -> None:
    argv = [
        # --ignore-times: these files failed their hash; rsync's own size+mtime check would skip a
        # damaged file that kept both (bit rot, or a write within the same second).
        # --protect-args: the remote path reaches the remote rsync as data, never parsed by its shell.
        "rsync", "--protect-args", "--times", "--ignore-times", "--partial-dir", RSYNC_PARTIAL, "--files-from=-",
        "-e", shlex.join(executor.ssh_command(host)),
        f"{head}/", f"{executor.target(host)}:{remote_dir}/",
    ]  # fmt: skip
    p = subprocess.run(argv, input="\n".join(need) + "\n", capture_output=True, text=True)
    if p.returncode:
        tail = (p.stderr.strip().splitlines() or [""])[-1][:200]
        raise TransferFailed(f"rsync exited {p.returncode}: {tail}")


def _sftp_one(executor: Executor, host: Host, src: Path, remote_dir: str, file: str) -> None:
    partial = f"{remote_dir}/.{file}.partial"
    executor.put(host, src, partial)
    res = executor.run(host, ["mv", "-f", "--", partial, f"{remote_dir}/{file}"])
    if not res.ok:
        raise TransferFailed(res.reason)
