"""The host-side sampler: NVML through a fake that stands only at the library boundary, the host and
the job processes read for real from this machine's /proc, and the shipped-as-source program."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pynvml
import pytest

from scheduler.remote import sampler as sampler_mod
from scheduler.remote import source
from scheduler.remote.sampler import Sampler

FIXTURE = Path(__file__).parent / "fixtures" / "nvml_h100.json"
SOURCE = source("sampler.py")  # the text the collector ships


class FakeNVML:
    """pynvml's function names answering from a recorded sample; {"error": NAME} raises
    pynvml.NVMLError_NAME, as the real library does on boards or drivers that lack a query."""

    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
    NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM
    NVML_CLOCK_MEM = pynvml.NVML_CLOCK_MEM
    NVMLError = pynvml.NVMLError

    def __init__(self, recorded: dict, *, pids: dict[int, int] | None = None, init_error: str | None = None):
        self.recorded, self.pids, self.init_error = recorded, pids or {}, init_error

    def nvmlInit(self):
        if self.init_error:
            raise getattr(pynvml, f"NVMLError_{self.init_error}")()

    def nvmlDeviceGetCount(self):
        return len(self.recorded["devices"])

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlSystemGetDriverVersion(self):
        return self.recorded["nvmlSystemGetDriverVersion"]

    def __getattr__(self, name):
        if not name.startswith("nvmlDevice"):
            raise AttributeError(name)

        def call(handle, *args):
            value = self.recorded["devices"][handle][name]
            if isinstance(value, dict) and "error" in value:
                raise getattr(pynvml, f"NVMLError_{value['error']}")()
            if name == "nvmlDeviceGetClockInfo":
                return value[str(args[0])]
            if name.startswith("nvmlDeviceGetComputeRunningProcesses"):
                return [SimpleNamespace(**{**p, "pid": self.pids.get(p["pid"], p["pid"])}) for p in value]
            if isinstance(value, dict):
                return SimpleNamespace(**value)
            return value

        return call


@pytest.fixture
def recorded() -> dict:
    return json.loads(FIXTURE.read_text())


@pytest.fixture
def job_process():
    """A real process carrying the job marker, and one without it."""
    env = {**os.environ, "HEADNODE_JOB_ID": "41"}
    marked = subprocess.Popen(["sleep", "60"], env=env)
    plain = subprocess.Popen(["sleep", "60"], env={k: v for k, v in os.environ.items() if k != "HEADNODE_JOB_ID"})
    yield marked.pid, plain.pid
    for p in (marked, plain):
        p.kill()
        p.wait()


def test_the_recorded_fixture_says_it_is_synthetic(recorded):
    assert recorded["source"].startswith("synthetic")


def test_gpus_report_every_field_the_board_supports_and_null_for_the_rest(recorded):
    s = Sampler(nvml=FakeNVML(recorded))
    gpus = s.gpus()
    assert [g["index"] for g in gpus] == [0, 1, 2]
    g0 = gpus[0]
    assert {k: g0[k] for k in ("name", "util", "mem_util", "mem_used", "mem_total", "temp", "pstate")} == {
        "name": "NVIDIA H100 80GB HBM3",
        "util": 98,
        "mem_util": 41,
        "mem_used": 70672973824,
        "mem_total": 85520809984,
        "temp": 63,
        "pstate": 0,
    }
    assert (g0["power"], g0["power_limit"], g0["sm_clock"], g0["mem_clock"]) == (611.734, 700.0, 1980, 2619)
    assert g0["fan"] is None  # NotSupported on SXM boards: N/A, not an error
    assert gpus[2]["pstate"] is None
    assert s.driver == "550.90.07" and s.nvml_error is None


def test_power_limit_falls_back_to_the_management_limit(recorded):
    assert Sampler(nvml=FakeNVML(recorded)).gpus()[1]["power_limit"] == 700.0


def test_processes_fall_back_from_the_v3_query_and_are_attributed_to_jobs(recorded, job_process):
    marked, plain = job_process
    s = Sampler(nvml=FakeNVML(recorded, pids={41873: marked, 52210: plain}))
    s.jobs(1.0)
    gpu1 = s.gpus()[1]
    assert gpu1["processes"] == [
        {"pid": marked, "job": "41", "mem_used": 69625446400},
        {"pid": plain, "job": None, "mem_used": None},
    ]


def test_a_host_without_nvml_reports_no_gpus_and_the_reason(recorded):
    s = Sampler(nvml=FakeNVML(recorded, init_error="LibraryNotFound"))
    sample = s.sample()
    assert sample["gpus"] == []
    assert "NVML unavailable" in sample["nvml"]


def test_this_machine_has_no_nvml_and_samples_without_error():
    sample = Sampler().sample()
    assert sample["gpus"] == [] and sample["nvml"]
    assert 0 <= sample["host"]["cpu_percent"] <= 100
    assert 0 < sample["host"]["mem_percent"] < 100


def test_the_proc_fallback_agrees_with_psutil():
    with_psutil, plain = Sampler(nvml=None), Sampler(nvml=None, psutil=None)
    a, b = with_psutil.host(1.0), plain.host(1.0)
    assert a["mem_total"] == b["mem_total"]
    assert abs(a["mem_used"] - b["mem_used"]) < 0.05 * a["mem_total"]
    assert b["disk_total"] > 0 and b["load"] == pytest.approx(a["load"], abs=1.0)


def test_marked_processes_are_reported_per_job_with_their_cpu(job_process):
    marked, plain = job_process
    s = Sampler(nvml=None)
    jobs = s.jobs(1.0)
    assert jobs["41"]["pids"] == [marked]
    assert all(plain not in j["pids"] for j in jobs.values())
    busy = subprocess.Popen(
        [sys.executable, "-c", "import time\nwhile time.process_time() < 60: pass"],
        env={**os.environ, "HEADNODE_JOB_ID": "42"},
    )
    try:
        s.jobs(1.0)  # first sight: the baseline
        t0, c0 = time.monotonic(), _cpu_seconds(busy.pid)
        time.sleep(1.0)
        c1, dt = _cpu_seconds(busy.pid), time.monotonic() - t0
        got = s.jobs(dt)["42"]["cpu_percent"]
        # The machine may be shared, so compare with what the kernel says it got, not with 100 %.
        assert got > 0 and got == pytest.approx(100 * (c1 - c0) / dt, abs=10)
    finally:
        busy.kill()
        busy.wait()


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_process_that_exits_leaves_its_job():
    p = subprocess.Popen(["sleep", "60"], env={**os.environ, "HEADNODE_JOB_ID": "43"})
    s = Sampler(nvml=None)
    assert "43" in s.jobs(1.0)
    p.kill()
    p.wait()
    assert "43" not in s.jobs(1.0)


def test_shipped_source_streams_lines_and_exits_when_its_session_ends(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-u", "-c", SOURCE, "--interval", "0.2", "--workdir", str(tmp_path / "not-yet")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = [json.loads(proc.stdout.readline()) for _ in range(2)]
    assert lines[1]["ts"] > lines[0]["ts"] and lines[0]["host"]["disk_total"] > 0
    proc.stdin.close()  # what sshd does when the SSH session ends
    assert proc.wait(timeout=10) == 0


def test_once_prints_one_sample_and_exits():
    out = subprocess.run([sys.executable, "-c", SOURCE, "--once"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    (line,) = out.stdout.splitlines()
    assert json.loads(line)["format"] == sampler_mod.FORMAT


def test_a_process_caught_between_fork_and_exec_is_read_again(tmp_path):
    """`env HEADNODE_JOB_ID=7 cmd` keeps its pid: a first read may still see the parent's environment."""
    (tmp_path / "300").mkdir()
    environ = tmp_path / "300" / "environ"
    environ.write_bytes(b"PATH=/bin\0")
    s = Sampler(nvml=None, proc=str(tmp_path))
    assert s.jobs(1.0) == {}
    environ.write_bytes(b"PATH=/bin\0HEADNODE_JOB_ID=7\0")  # the exec happened
    assert s.jobs(1.0) == {"7": {"pids": [300], "cpu_percent": 0.0}}


def test_the_sampler_exits_when_nobody_reads_it_any_more():
    """After a cut link the head has moved on, but sshd may keep this session for many minutes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SOURCE, "--interval", "0.001", "--stall-after", "1"],
        stdin=subprocess.PIPE,  # kept open: only the blocked stdout can tell
        stdout=subprocess.PIPE,  # never read, so the pipe fills and the write blocks
    )
    try:
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.stdin.close()
        proc.stdout.close()
