"""The programs that run on hosts (scheduler/remote/), run here on crafted inputs like any module.

Each runs as it is shipped: the text `source` gives, through the bootstrap, on a python started with
-S -E (no site-packages, no PYTHONPATH: like a host, it has no headnode, no psutil and no pynvml), in
a scratch working directory. A few also run as plain files, as a person would run them.
"""

from __future__ import annotations

import ast
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

from scheduler import remote
from scheduler.execute import BOOTSTRAP
from scheduler.remote import source
from trainer.metrics import last_metrics

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = Path(remote.__file__).parent
FILES = sorted(p.name for p in PROGRAMS.iterdir() if p.suffix in (".py", ".sh") and p.name != "__init__.py")
PY_FILES = [f for f in FILES if f.endswith(".py")]


def ship(name: str, *args: str, cwd: Path, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run program `name` the way execute.python_argv ships it, on a python that knows nothing of headnode."""
    return subprocess.run([sys.executable, "-S", "-E", "-c", BOOTSTRAP, source(name), *args], cwd=cwd, input=input,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def wait_until(what: str, cond, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# --- the folder as a whole ------------------------------------------------------------------------


def _shipped_names() -> set[str]:
    """Every program name given to source("...") anywhere in scheduler/ (outside remote/ itself)."""
    names = set()
    for path in (ROOT / "scheduler").rglob("*.py"):
        if PROGRAMS in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            func = getattr(node, "func", None)
            if isinstance(node, ast.Call) and getattr(func, "id", getattr(func, "attr", None)) == "source" and node.args:
                if isinstance(node.args[0], ast.Constant):
                    names.add(node.args[0].value)
    return names


def test_every_program_in_remote_is_shipped_by_the_scheduler_and_every_shipped_one_exists():
    assert _shipped_names() == set(FILES)


def imports(text: str) -> set[str]:
    """Every module a text imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
    return found


def test_the_programs_import_only_the_standard_library_besides_guarded_nvml_and_the_bundled_metrics_rule():
    foreign = {}
    for name in PY_FILES:
        others = {m for m in imports((PROGRAMS / name).read_text()) if m.split(".")[0] not in sys.stdlib_module_names}
        if others:
            foreign[name] = others
    assert foreign == {"kill.py": {"pynvml"}, "probe_host.py": {"pynvml"}, "probe_nodes.py": {"trainer.metrics"}}


def test_the_loader_finds_exactly_the_headnode_imports_of_every_program_and_bundled_module():
    texts = [(PROGRAMS / n).read_text() for n in PY_FILES] + [Path(sys.modules["trainer.metrics"].__file__).read_text()]
    found = [remote.headnode_imports(t) for t in texts]
    assert found == [{m for m in imports(t) if m.split(".")[0] in remote.BUNDLED} for t in texts]


def test_no_program_is_named_like_a_standard_library_module():
    """Run as a file, a program's own folder is first on sys.path."""
    assert {f.rsplit(".", 1)[0] for f in FILES} & sys.stdlib_module_names == set()


def test_a_bundled_module_imports_only_the_standard_library():
    text = Path(sys.modules["trainer.metrics"].__file__).read_text()
    assert {m for m in imports(text) if m.split(".")[0] not in sys.stdlib_module_names} == set()


@pytest.mark.parametrize("name", FILES)
def test_each_program_compiles_as_shipped(name):
    if name.endswith(".sh"):
        assert subprocess.run(["sh", "-n", "-c", source(name)], capture_output=True, text=True).stderr == ""
    else:
        compile(source(name), name, "exec")


def test_importing_a_program_does_nothing():
    code = "import importlib, sys\n" + "".join(f"importlib.import_module('scheduler.remote.{n[:-3]}')\n" for n in PY_FILES)
    r = subprocess.run([sys.executable, "-c", code, "an-argument"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def test_the_package_ships_every_program_that_is_not_a_module():
    import fnmatch
    import tomllib

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["scheduler.remote"]
    assert [f for f in FILES if not f.endswith(".py") and not any(fnmatch.fnmatch(f, p) for p in patterns)] == []


def test_a_shell_program_ships_without_its_comment_lines():
    assert source("wrap.sh") == (
        'exitf=$1; shift\n'
        'if [ -e "${exitf%/*}/ended" ]; then echo "headnode: ${exitf%/*} ended before this node started; not starting it"; exit 0; fi\n'
        '"$@"; code=$?; printf "%s\\n" "$code" >"$exitf.tmp" && mv -f -- "$exitf.tmp" "$exitf"\n'
    )


def test_a_program_without_headnode_imports_ships_as_its_file():
    assert source("kill.py") == (PROGRAMS / "kill.py").read_text()


# --- processes carrying a job's marker -----------------------------------------------------------

# The leader of a node's group starts a marked process in a session of its own (as torchrun does with
# its workers), and two in its own group: a marked one that ignores SIGTERM and an unmarked one (it
# goes because its group does); then prints their pids.
LEADER = r"""
import os, subprocess, sys, time
py = sys.executable
worker = subprocess.Popen([py, "-c", "import time; time.sleep(300)"], start_new_session=True)
deaf = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(300)"
stubborn = subprocess.Popen([py, "-c", deaf], stdout=subprocess.PIPE)
unmarked = subprocess.Popen([py, "-c", "import time; time.sleep(300)"], env={})
stubborn.stdout.readline()
print(worker.pid, stubborn.pid, unmarked.pid, flush=True)
time.sleep(300)
"""


def marker(job: int, host: str, run_dir: Path, attempt: int = 1, node: int = 0) -> dict[str, str]:
    return {"HEADNODE_JOB_ID": str(job), "HEADNODE_HOST": host, "HEADNODE_RUN_DIR": os.path.realpath(run_dir),
            "HEADNODE_ATTEMPT": str(attempt), "HEADNODE_NODE_RANK": str(node)}  # fmt: skip


@pytest.fixture
def spawn():
    """spawn(env, code) -> Popen: a process group leader running `code`, all of it killed afterwards."""
    procs = []

    def start(env: dict[str, str], code: str = "import time; time.sleep(300)") -> subprocess.Popen:
        p = subprocess.Popen(
            [sys.executable, "-c", code], env={**os.environ, **env}, stdout=subprocess.PIPE, text=True, start_new_session=True
        )
        procs.append(p)
        return p

    yield start
    for p in procs:
        for pid in [p.pid, *getattr(p, "children", ())]:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        p.wait()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def test_kill_stops_the_marked_processes_with_their_groups_and_spares_another_headnodes_job(tmp_path, spawn):
    run_dir = tmp_path / "runs" / "3"
    run_dir.mkdir(parents=True)
    leader = spawn(marker(3, "h1", run_dir), LEADER)
    worker, stubborn, unmarked = map(int, leader.stdout.readline().split())
    leader.children = (worker,)
    other = spawn(marker(3, "h1", tmp_path / "elsewhere" / "runs" / "3"))  # another store's job 3 here
    out = ship("kill.py", "3", "h1", str(run_dir), "0.5", "5", cwd=tmp_path)
    assert json.loads(out.stdout) == {"found": 4, "killed": 1, "left": [], "gpu": []}
    assert [alive(p) for p in (leader.pid, worker, stubborn, unmarked, other.pid)] == [False, False, False, False, True]


def test_kill_of_a_job_with_no_process_here_finds_nothing(tmp_path):
    out = ship("kill.py", "3", "h1", str(tmp_path), "0.5", "5", cwd=tmp_path)
    assert json.loads(out.stdout) == {"found": 0, "killed": 0, "left": [], "gpu": []}


def test_the_node_probe_finds_a_node_by_its_marker_and_reads_metrics_by_the_trainers_rule(tmp_path, spawn):
    run_dir = tmp_path / "runs" / "4"
    (run_dir / "attempt-2").mkdir(parents=True)
    (run_dir / "attempt-2" / "node-0.log").write_text("hello\n")
    metrics = run_dir / "metrics.jsonl"
    metrics.write_text('{"event":"start"}\n{"step":1,"loss":2.5}\n{"step":2,"loss":2.0}\n{"event":"checkpoint","step":2}\n{"step":3,"lo')
    leader = spawn(marker(4, "h1", run_dir, attempt=2))
    spec = {"host": "h1", "nodes": [{"job": 4, "attempt": 2, "node": 0, "run_dir": str(run_dir), "pid": None}]}
    out = ship("probe_nodes.py", json.dumps(spec), cwd=tmp_path)
    assert json.loads(out.stdout) == [{
        "pid": leader.pid, "alive": True, "exit": None, "left": None, "log_size": 6,
        "metrics_size": metrics.stat().st_size, "metrics_last": json.dumps(last_metrics(metrics)),
    }]  # fmt: skip
    assert last_metrics(metrics) == {"step": 2, "loss": 2.0}


def test_the_node_probe_of_an_exited_node_reports_its_status_and_what_is_left(tmp_path):
    run_dir = tmp_path / "runs" / "5"
    (run_dir / "attempt-1").mkdir(parents=True)
    (run_dir / "attempt-1" / "node-1.exit").write_text("143\n")
    spec = {"host": "h1", "nodes": [{"job": 5, "attempt": 1, "node": 1, "run_dir": str(run_dir), "pid": 2**22 + 1}]}
    out = ship("probe_nodes.py", json.dumps(spec), cwd=tmp_path)
    assert json.loads(out.stdout) == [
        {"pid": 2**22 + 1, "alive": False, "exit": 143, "left": 0, "log_size": None, "metrics_size": None, "metrics_last": None}
    ]


def test_watch_prints_the_nodes_that_ended_and_nothing_else(tmp_path, spawn):
    run_dir = tmp_path / "runs" / "6"
    (run_dir / "attempt-1").mkdir(parents=True)
    (run_dir / "attempt-1" / "node-1.exit").write_text("0\n")
    running, ended = spawn({}), spawn({})
    nodes = [{"job": 6, "attempt": 1, "node": 0, "run_dir": str(run_dir), "pid": running.pid},
             {"job": 6, "attempt": 1, "node": 1, "run_dir": str(run_dir), "pid": ended.pid}]  # fmt: skip
    out = ship("watch.py", json.dumps(nodes), cwd=tmp_path)
    assert json.loads(out.stdout) == [nodes[1]]


def test_watch_ends_silently_when_its_stdin_closes(tmp_path, spawn):
    running = spawn({})
    nodes = [{"job": 6, "attempt": 1, "node": 0, "run_dir": str(tmp_path), "pid": running.pid}]
    out = ship("watch.py", json.dumps(nodes), cwd=tmp_path, input="")
    assert (out.returncode, out.stdout) == (0, "")


# --- starting a node ------------------------------------------------------------------------------


def start_argv(run_dir: Path, env: list[str], command: list[str], *, check: tuple[str, ...] = ("", "", "")) -> list[str]:
    return ["sh", "-c", source("start.sh"), "headnode-start", str(run_dir), "1", "0", "", *check, str(len(env)), *env,
            "sh", "-c", source("wrap.sh"), "headnode-wrap", "attempt-1/node-0.exit", *command]  # fmt: skip


def test_start_detaches_the_wrapper_which_records_the_exit_status(tmp_path):
    run_dir = tmp_path / "runs" / "7"
    argv = start_argv(run_dir, ["HEADNODE_JOB_ID=7", "WORDS=a  b $HOME"], ["sh", "-c", 'echo "$WORDS|$HEADNODE_RUN_DIR|$PWD"; exit 7'])
    out = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert out.stdout.strip().isdigit()
    exit_file = run_dir / "attempt-1" / "node-0.exit"
    wait_until("the exit file", exit_file.exists)
    assert exit_file.read_text() == "7\n"
    assert (run_dir / "attempt-1" / "node-0.log").read_text() == f"a  b $HOME|{os.path.realpath(run_dir)}|{run_dir}\n"


def test_start_on_a_taken_rendezvous_port_says_port_busy_and_starts_nothing(tmp_path):
    with socket.create_server(("", 0)) as taken:
        port = taken.getsockname()[1]
        check = [sys.executable, str(port), source("port_free.py")]
        out = subprocess.run(
            start_argv(tmp_path / "run", [], ["true"], check=check), cwd=tmp_path, capture_output=True, text=True, timeout=30
        )
    assert (out.stdout, (tmp_path / "run").exists()) == ("port busy\n", False)


def test_port_free_run_as_a_file_exits_3_for_a_taken_port_and_0_for_a_free_one():
    def run(port: int) -> int:
        return subprocess.run([sys.executable, "-I", str(PROGRAMS / "port_free.py"), str(port)], timeout=30).returncode

    with socket.create_server(("", 0)) as taken:
        busy = run(taken.getsockname()[1])
    free = socket.create_server(("", 0))
    port = free.getsockname()[1]
    free.close()
    assert (busy, run(port)) == (3, 0)


# --- logs and data --------------------------------------------------------------------------------


def test_log_read_returns_each_file_whole_with_its_partial_last_line_or_why_it_cannot(tmp_path):
    (tmp_path / "node-0.log").write_bytes(b"[rank0]: one\nbad \xff byte\npartial")
    out = ship("log_read.py", str(tmp_path / "node-0.log"), str(tmp_path / "node-1.log"), cwd=tmp_path)
    assert json.loads(out.stdout) == {
        str(tmp_path / "node-0.log"): {"text": "[rank0]: one\nbad \ufffd byte\npartial"},
        str(tmp_path / "node-1.log"): {"error": "No such file or directory"},
    }


def test_log_follow_sends_what_is_written_until_the_exit_file_appears(tmp_path):
    log, exit_file = tmp_path / "node-0.log", tmp_path / "node-0.exit"
    argv = [sys.executable, "-S", "-E", "-c", BOOTSTRAP, source("log_follow.py"), str(log), str(exit_file)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=tmp_path)
    try:
        log.write_bytes(b"first\n")
        assert proc.stdout.read(6) == b"first\n"
        with open(log, "ab") as f:
            f.write(b"second, cut")
        exit_file.write_text("0\n")
        assert (proc.stdout.read(), proc.wait(timeout=30)) == (b"second, cut", 0)
    finally:
        proc.kill()
        proc.stdin.close()
        proc.stdout.close()


def test_log_follow_ends_when_the_head_closes_its_stdin(tmp_path):
    out = ship("log_follow.py", str(tmp_path / "never.log"), str(tmp_path / "never.exit"), cwd=tmp_path, input="")
    assert (out.returncode, out.stdout) == (0, "")


def test_data_check_reports_every_file_and_check_mode_trusts_the_record_of_a_full_hash(tmp_path):
    import hashlib

    d = tmp_path / "data"
    d.mkdir()
    files = {"a.bin": b"a" * 10, "b.bin": b"b" * 10, "c.bin": b"c" * 10}
    for name, data in files.items():
        (d / name).write_bytes(data)
        os.utime(d / name, (time.time() - 60, time.time() - 60))  # older than the record, by far
    (d / "b.bin").write_bytes(b"b" * 9)
    want = {n: [len(b), hashlib.sha256(b).hexdigest()] for n, b in files.items()} | {"gone.bin": [1, "0" * 64]}

    def check(mode: str) -> dict:
        out = ship("data_check.py", str(d), cwd=tmp_path, input=json.dumps({"files": want, "mode": mode}))
        return json.loads(out.stdout)

    first = check("verify")
    assert first == {"dir": str(d), "rsync": shutil.which("rsync") is not None, "status": {
        "a.bin": "ok", "b.bin": "size 9, expected 10", "c.bin": "ok", "gone.bin": "missing"}}  # fmt: skip
    st = (d / "c.bin").stat()
    (d / "c.bin").write_bytes(b"C" * 10)  # corrupted in place, size and mtime kept
    os.utime(d / "c.bin", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (check("check")["status"]["c.bin"], check("verify")["status"]["c.bin"]) == ("ok", "hash mismatch")


# --- the host probe -------------------------------------------------------------------------------


def test_probe_host_run_as_a_file_describes_this_machine(tmp_path):
    out = subprocess.run([sys.executable, str(PROGRAMS / "probe_host.py"), str(tmp_path / "not" / "yet")],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    facts = json.loads(out.stdout)
    assert sorted(facts) == [
        "cpus", "cuda", "disk_free_bytes", "driver", "gpus", "hostname", "interface", "load", "python", "python_too_old",
        "ssh_address", "torch",
    ]
    assert {k: facts[k] for k in ("hostname", "python", "python_too_old", "torch", "cpus")} == {
        "hostname": socket.gethostname(), "python": platform.python_version(), "python_too_old": False,
        "torch": metadata.version("torch"), "cpus": os.cpu_count(),
    }  # fmt: skip
    assert facts["disk_free_bytes"] > 0
