"""The host-side sampler: one JSON line per interval with the GPUs, the host and the job processes.

    python -u sampler.py [--interval 1] [--workdir W] [--once] [--stall-after 30]

Nothing is installed on the hosts: the collector ships this file's text over the existing connection
(through bootstrap.py, like every program here). It prints one JSON line per interval (`Sampler.sample`
plus "self_cpu_s", its own CPU time): with --once a single one. It imports only the standard library at
module level; psutil and pynvml are used when the host's python has them (/proc is the fallback for
CPU, memory and network; no NVML means no GPUs, not an error). It exits when its session ends: stdin
reaches EOF, or stdout breaks, or a write blocks for --stall-after seconds. For `localhost` the
collector uses `Sampler` in-process instead.

Attribution happens here, next to /proc: a process belongs to job J when its environment holds
HEADNODE_JOB_ID=J (the scheduler sets it; torchrun's workers inherit it). Environments are read
once per new pid, so a tick costs one /proc listing plus the stat files of the job's own pids.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import threading
import time

MARKER = b"HEADNODE_JOB_ID="
FORMAT = 1


def _optional(module: str):
    try:
        return __import__(module)
    except Exception:  # absent, or present but broken (e.g. a pynvml without its library)
        return None


class Sampler:
    """Takes samples; keeps what must persist between them (CPU counters, known pids, NVML handles).

    `nvml` and `psutil` default to the real modules when importable; tests pass a fake NVML here,
    which is the only boundary faked (there is no GPU in CI).
    """

    def __init__(self, workdir: str = ".", *, nvml="auto", psutil="auto", proc: str = "/proc"):
        self.workdir = os.path.expanduser(workdir)
        self.proc = proc
        self.psutil = _optional("psutil") if psutil == "auto" else psutil
        self.nvml = _optional("pynvml") if nvml == "auto" else nvml
        self.nvml_error: str | None = None
        self.driver: str | None = None
        self.handles: list = []
        self._init_nvml()
        self._netns = _readlink(f"{proc}/self/ns/net")
        self._job_of: dict[int, str | None] = {}  # pid -> job id, read once per pid ...
        self._unsure: set[int] = set()  # ... and once more for unmarked pids seen for the first time
        self._job_ticks: dict[int, int] = {}  # pid -> utime+stime at the last sample
        self._clk = os.sysconf("SC_CLK_TCK")
        self._last_t = time.monotonic()
        self._last_cpu = self._cpu_times()
        self._last_net = self._net_bytes()

    # --- GPUs ---------------------------------------------------------------------------------

    def _init_nvml(self) -> None:
        if self.nvml is None:
            self.nvml_error = "pynvml is not installed for this python"
            return
        try:
            self.nvml.nvmlInit()
            count = self.nvml.nvmlDeviceGetCount()
            self.handles = [self.nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception as e:  # no driver / no library: this host has no GPUs
            self.nvml_error = f"NVML unavailable: {e}"
            self.handles = []
            return
        self.driver = _text(self._call("nvmlSystemGetDriverVersion"))

    def _call(self, name: str, *args):
        """One NVML query; None when this board or driver does not support it (shown as N/A)."""
        fn = getattr(self.nvml, name, None)
        if fn is None:
            return None
        try:
            return fn(*args)
        except Exception:  # NVMLError_NotSupported, _FunctionNotFound, _GpuIsLost, ...
            return None

    def _processes(self, h) -> list | None:
        # Versioned variants exist only on newer drivers; older ones answer FunctionNotFound.
        for name in (
            "nvmlDeviceGetComputeRunningProcesses_v3",
            "nvmlDeviceGetComputeRunningProcesses_v2",
            "nvmlDeviceGetComputeRunningProcesses",
        ):
            procs = self._call(name, h)
            if procs is not None:
                return procs
        return None

    def gpus(self) -> list[dict]:
        nv = self.nvml
        out = []
        for i, h in enumerate(self.handles):
            util = self._call("nvmlDeviceGetUtilizationRates", h)
            mem = self._call("nvmlDeviceGetMemoryInfo", h)
            power = self._call("nvmlDeviceGetPowerUsage", h)
            limit = self._call("nvmlDeviceGetEnforcedPowerLimit", h)
            if limit is None:
                limit = self._call("nvmlDeviceGetPowerManagementLimit", h)
            procs = self._processes(h)
            out.append(
                {
                    "index": i,
                    "name": _text(self._call("nvmlDeviceGetName", h)),
                    "uuid": _text(self._call("nvmlDeviceGetUUID", h)),
                    "util": util.gpu if util is not None else None,
                    "mem_util": util.memory if util is not None else None,
                    "mem_used": mem.used if mem is not None else None,
                    "mem_total": mem.total if mem is not None else None,
                    "temp": self._call("nvmlDeviceGetTemperature", h, getattr(nv, "NVML_TEMPERATURE_GPU", 0)),
                    "power": power / 1000 if power is not None else None,  # mW -> W
                    "power_limit": limit / 1000 if limit is not None else None,
                    "pstate": self._call("nvmlDeviceGetPerformanceState", h),
                    "sm_clock": self._call("nvmlDeviceGetClockInfo", h, getattr(nv, "NVML_CLOCK_SM", 1)),
                    "mem_clock": self._call("nvmlDeviceGetClockInfo", h, getattr(nv, "NVML_CLOCK_MEM", 2)),
                    "fan": self._call("nvmlDeviceGetFanSpeed", h),
                    "processes": None
                    if procs is None
                    else [{"pid": p.pid, "job": self.job_of(p.pid), "mem_used": _mem(p)} for p in procs],
                }
            )
        return out

    # --- the host -----------------------------------------------------------------------------

    def _cpu_times(self) -> tuple[float, float]:
        """(busy, total) CPU seconds since boot, all cores."""
        if self.psutil is not None:
            t = self.psutil.cpu_times()
            total = sum(t)
            return total - t.idle - getattr(t, "iowait", 0.0), total
        with open(f"{self.proc}/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
        total = sum(fields[:8])  # guest time is already inside user/nice
        return total - idle, total

    def _memory(self) -> tuple[int, int]:
        """(used, total) bytes; used = total - available, as free(1) and psutil count it."""
        if self.psutil is not None:
            m = self.psutil.virtual_memory()
            return m.total - m.available, m.total
        info = {}
        with open(f"{self.proc}/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                info[key] = int(rest.split()[0]) * 1024
        return info["MemTotal"] - info["MemAvailable"], info["MemTotal"]

    def _net_bytes(self) -> tuple[int, int]:
        """(received, sent) bytes on every interface but loopback."""
        if self.psutil is not None:
            nics = self.psutil.net_io_counters(pernic=True)
            return (
                sum(c.bytes_recv for n, c in nics.items() if n != "lo"),
                sum(c.bytes_sent for n, c in nics.items() if n != "lo"),
            )
        rx = tx = 0
        with open(f"{self.proc}/net/dev") as f:
            for line in f.readlines()[2:]:
                name, _, rest = line.partition(":")
                if name.strip() != "lo":
                    cols = rest.split()
                    rx, tx = rx + int(cols[0]), tx + int(cols[8])
        return rx, tx

    def host(self, dt: float) -> dict:
        busy, total = self._cpu_times()
        d_busy, d_total = busy - self._last_cpu[0], total - self._last_cpu[1]
        self._last_cpu = busy, total
        rx, tx = self._net_bytes()
        d_rx, d_tx = rx - self._last_net[0], tx - self._last_net[1]
        self._last_net = rx, tx
        used, mem_total = self._memory()
        disk = _disk_usage(self.workdir)
        return {
            "cpus": os.cpu_count(),
            "cpu_percent": round(100 * d_busy / d_total, 1) if d_total > 0 else 0.0,
            "mem_used": used,
            "mem_total": mem_total,
            "mem_percent": round(100 * used / mem_total, 1),
            "load": list(os.getloadavg()),
            "disk_used": disk.used if disk else None,
            "disk_total": disk.total if disk else None,
            "net_rx_bps": max(d_rx, 0) / dt if dt > 0 else 0.0,
            "net_tx_bps": max(d_tx, 0) / dt if dt > 0 else 0.0,
        }

    # --- job processes ------------------------------------------------------------------------

    def job_of(self, pid: int) -> str | None:
        if pid not in self._job_of:
            self._job_of[pid] = self._read_marker(pid)
        return self._job_of[pid]

    def _read_marker(self, pid: int) -> str | None:
        try:
            with open(f"{self.proc}/{pid}/environ", "rb") as f:
                env = f.read()
        except OSError:  # gone, or another user's process we may not read
            return None
        for var in env.split(b"\0"):
            if var.startswith(MARKER):
                return var[len(MARKER) :].decode(errors="replace")
        return None

    def jobs(self, dt: float) -> dict[str, dict]:
        """{job: {pids, cpu_percent}} for the marked processes of this host.

        A pid stays cached while it is listed in /proc; the kernel cannot hand the same pid to a new
        process within one interval short of wrapping the whole pid space, so no start-time check.
        An unmarked new pid is read again on the next tick: caught between fork and exec (`env
        HEADNODE_JOB_ID=... cmd` keeps its pid), it still showed its parent's environment.
        Processes in another network namespace are another host's (containers; the namespace test
        cluster shares one PID space), so they are not this host's ranks.
        """
        pids = {int(p) for p in os.listdir(self.proc) if p.isdigit()}
        for gone in self._job_of.keys() - pids:
            del self._job_of[gone]
        recheck, self._unsure = self._unsure & pids, set()
        for pid in (pids - self._job_of.keys()) | recheck:
            job = self._read_marker(pid)
            if job is not None and self._netns and _readlink(f"{self.proc}/{pid}/ns/net") not in (None, self._netns):
                job = None
            elif job is None and pid not in recheck:
                self._unsure.add(pid)
            self._job_of[pid] = job
        out: dict[str, dict] = {}
        ticks_now: dict[int, int] = {}
        for pid, job in self._job_of.items():
            if job is None:
                continue
            entry = out.setdefault(job, {"pids": [], "cpu_percent": 0.0})
            entry["pids"].append(pid)
            ticks = _cpu_ticks(f"{self.proc}/{pid}/stat")
            if ticks is None:
                continue
            ticks_now[pid] = ticks
            if pid in self._job_ticks and dt > 0:
                entry["cpu_percent"] += 100 * (ticks - self._job_ticks[pid]) / self._clk / dt
        self._job_ticks = ticks_now
        for entry in out.values():
            entry["pids"].sort()
            entry["cpu_percent"] = round(entry["cpu_percent"], 1)
        return out

    # --- one sample ---------------------------------------------------------------------------

    def sample(self) -> dict:
        now = time.monotonic()
        dt, self._last_t = now - self._last_t, now
        jobs = self.jobs(dt)  # first: the GPU processes' lookups then hit the fresh pid cache
        return {
            "format": FORMAT,
            "ts": time.time(),
            "hostname": os.uname().nodename,
            "host": self.host(dt),
            "gpus": self.gpus(),
            "jobs": jobs,
            "nvml": self.nvml_error,
            "driver": self.driver,
        }


# --- helpers -------------------------------------------------------------------------------------


def _text(v) -> str | None:
    return v.decode(errors="replace") if isinstance(v, bytes) else v


def _mem(p) -> int | None:
    used = getattr(p, "usedGpuMemory", None)
    return used if isinstance(used, int) else None  # NVML reports "not available" as None


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _cpu_ticks(stat_path: str) -> int | None:
    try:
        with open(stat_path) as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # the command name may hold spaces and ")"
    return int(fields[11]) + int(fields[12])  # utime, stime


def _disk_usage(path: str):
    """Usage of the filesystem holding path; the workdir may not exist yet, so try its parents."""
    path = os.path.abspath(path)
    while True:
        try:
            return shutil.disk_usage(path)
        except OSError:
            parent = os.path.dirname(path)
            if parent == path:
                return None
            path = parent


def _exit_when_stdin_closes() -> None:
    """The SSH session's end shows as EOF on stdin; a silent host would never break stdout."""
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return

    def watch() -> None:
        while os.read(0, 4096):
            pass
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


class _StallWatch:
    """Exit when a write has blocked for `limit` seconds. After a network cut the head gives up on
    this session and starts another sampler, but sshd here only learns of it when TCP times out
    (many minutes): meanwhile the pipe fills and the write blocks. Nobody reads us any more."""

    def __init__(self, limit: float):
        self.limit, self.since = limit, None
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while True:
            time.sleep(min(1.0, self.limit / 4))
            if self.since is not None and time.monotonic() - self.since > self.limit:
                os._exit(0)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="headnode-sampler")
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--workdir", default=".")
    p.add_argument("--once", action="store_true", help="print one sample and exit")
    p.add_argument("--stall-after", type=float, default=30.0, help="exit when a write blocks this long")
    args = p.parse_args(argv)
    sampler = Sampler(args.workdir)
    if args.once:
        time.sleep(min(args.interval, 0.25))  # CPU percent needs a window
    else:
        _exit_when_stdin_closes()
    watch = _StallWatch(args.stall_after)
    deadline = time.monotonic()
    while True:
        sample = sampler.sample()
        sample["self_cpu_s"] = time.process_time()  # the sampler's own cost, for benchmarks
        line = json.dumps(sample, separators=(",", ":"))
        watch.since = time.monotonic()
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, OSError):
            os._exit(0)
        watch.since = None
        if args.once:
            return 0
        deadline += args.interval
        time.sleep(max(0.0, deadline - time.monotonic()))


if __name__ == "__main__":
    sys.exit(main())
