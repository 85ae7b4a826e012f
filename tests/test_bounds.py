"""Every number a user gives is bounded, and every store fault is one sentence.

Hostile values for every numeric command-line option and every numeric hosts.toml setting (nan, inf,
-1, 0, 2**63, 10**30, a string, a bool, a float for an integer) end as one sentence on stderr and exit
2, never as "internal error" or a traceback; job ids no store can hold are "not found"; and real
broken store files (random bytes, damaged pages, read-only, a full filesystem) each say what is wrong
with which file and what to do.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler import bounds, cli, inventory, jobs
from scheduler.errors import UserError
from scheduler.store import DB_NAME, Store

ROOT = Path(__file__).resolve().parent.parent
HOST = '[[hosts]]\nname = "a"\naddress = "localhost"\n'


def config(tmp_path: Path, text: str = "") -> Path:
    path = tmp_path / "hosts.toml"
    path.write_text(f'[cluster]\nstate_dir = "state"\n\n{HOST}{text}')
    return path


def headnode(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_sentence(err: str, *expected: str) -> None:
    assert err.startswith("headnode: "), err
    assert err.count("\n") == 1 and err.endswith(".\n"), err
    assert "Traceback" not in err and "internal error" not in err, err
    for text in expected:
        assert text in err, err


# --- every number on the command line -------------------------------------------------------------

DATA_PREPARE = ("data", "prepare", "src.txt", "--name", "d")
# (command, option, lo, hi, kind, open_lo, open_hi): every bounded option of every command.
CLI_NUMBERS = [
    (("submit",), "--nodes", 1, bounds.MAX_NODES, int, False, False),
    (("submit",), "--gpus-per-node", 0, bounds.MAX_GPUS_PER_NODE, int, False, False),
    (("submit",), "--procs-per-node", 1, bounds.MAX_PROCS_PER_NODE, int, False, False),
    (("submit",), "--priority", -bounds.MAX_PRIORITY, bounds.MAX_PRIORITY, int, False, False),
    (("submit",), "--retries", 0, bounds.MAX_RETRIES, int, False, False),
    (("cancel", "1"), "--timeout", 0, bounds.MAX_WAIT, float, False, False),
    (("logs", "1"), "--node", 0, bounds.MAX_NODES - 1, int, False, False),
    (("logs", "1"), "--rank", 0, bounds.MAX_NODES * bounds.MAX_PROCS_PER_NODE - 1, int, False, False),
    (("logs", "1"), "--attempt", 1, bounds.MAX_RETRIES + 1, int, False, False),
    (("wait", "1"), "--timeout", 0, bounds.MAX_WAIT, float, False, False),
    (("hosts", "probe"), "--timeout", 0, 3600, float, True, False),
    (("top",), "--interval", 0.1, 3600, float, False, False),
    (("metrics", "serve"), "--port", 0, 65535, int, False, False),
    (DATA_PREPARE, "--shard-tokens", 1, 1 << 32, int, False, False),
    (DATA_PREPARE, "--val-fraction", 0, 1, float, False, True),
    (DATA_PREPARE, "--workers", 1, 1024, int, False, False),
    (("data", "prune", "d"), "--keep", 0, 10**6, int, False, False),
    (("demo",), "--steps", 1, 10**6, int, False, False),
]
HOSTILE = ["nan", "inf", "-inf", "", "abc", "true", str(2**63), str(10**30), "9" * 5000, "-" + "9" * 40]


def _refused(lo, hi, kind, open_lo, open_hi) -> list[str]:
    values = list(HOSTILE)
    values += ["1.5", "1e3", "0x10", "1_000"] if kind is int else ["1e400", "0x10"]
    values += [str(lo - 1), str(hi + 1)] if kind is int else [str(lo - 1), str(hi * 2)]
    values += [repr(float(lo))] if open_lo else []
    values += [repr(float(hi))] if open_hi else []
    for v in ("-1", "0"):
        n = float(v)
        if n < lo or n > hi or (open_lo and n == lo):
            values.append(v)
    return values


CLI_CASES = [
    pytest.param(cmd, option, value, id=f"{' '.join(cmd[:2])} {option}={value[:12]}")
    for cmd, option, lo, hi, kind, open_lo, open_hi in CLI_NUMBERS
    for value in _refused(lo, hi, kind, open_lo, open_hi)
]


@pytest.mark.parametrize("cmd, option, value", CLI_CASES)
def test_every_numeric_option_refuses_hostile_values_in_one_sentence_with_exit_2(tmp_path, capsys, cmd, option, value):
    rc, out, err = headnode(capsys, "--config", str(config(tmp_path)), *cmd, f"{option}={value}")
    assert (rc, out) == (2, "")
    assert_one_sentence(err, f"bad {option} ")
    assert len(err) < 300  # a 5,000-digit value is shortened, not echoed


@pytest.mark.parametrize("cmd, option, lo, hi, kind, open_lo, open_hi", CLI_NUMBERS, ids=lambda v: v if isinstance(v, str) else None)
def test_every_numeric_option_accepts_both_ends_of_its_range(cmd, option, lo, hi, kind, open_lo, open_hi):
    parser = cli.build_parser()
    dest = option.lstrip("-").replace("-", "_")
    low = lo + 0.001 if open_lo else lo
    high = hi - 0.001 if open_hi else hi
    for value in (low, high):
        args = parser.parse_args([*cmd, f"{option}={value}"])
        assert getattr(args, dest) == pytest.approx(value)
        assert type(getattr(args, dest)) is kind


def _options(parser: argparse.ArgumentParser, path=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, (*path, name))
        elif action.option_strings:
            yield path, action


def test_no_option_is_parsed_by_a_bare_int_or_float_and_the_table_covers_every_bounded_one():
    bare, bounded = [], set()
    for path, action in _options(cli.build_parser()):
        if action.type in (int, float):
            bare.append((" ".join(path), action.option_strings))
        elif getattr(action.type, "__name__", "") in ("integer", "number"):
            bounded.add((path[0], next(o for o in action.option_strings if o.startswith("--"))))
    assert bare == []
    assert bounded == {(cmd[0], option) for cmd, option, *_ in CLI_NUMBERS}


@pytest.mark.parametrize(
    "value, why",
    [
        ("nan", "it must be a positive duration"),
        ("inf", "it must be a positive duration"),
        ("-1", "it must be a positive duration"),
        ("0", "it must be a positive duration"),
        ("1e400", "it must be a positive duration"),
        ("true", "it must be a positive duration"),
        (str(10**30), "it is longer than a year"),
        ("9" * 30 + "d", "it is longer than a year"),
        ("366d", "it is longer than a year"),
        ("9" * 5000 + ":00", "it must be a positive duration"),
    ],
)
def test_a_time_limit_is_a_positive_duration_of_at_most_a_year(tmp_path, capsys, value, why):
    rc, out, err = headnode(capsys, "--config", str(config(tmp_path)), "submit", f"--time-limit={value}")
    assert (rc, out) == (2, "")
    assert_one_sentence(err, "bad time limit", why)
    assert len(err) < 300


def test_a_hostile_number_run_as_a_real_process_is_one_sentence_and_exit_2(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "scheduler", "--config", str(config(tmp_path)), "submit", "--retries", str(10**30)],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == f"headnode: bad --retries {str(10**30)[:12]}… (31 digits): it is above 1000; use a whole number from 0 to 1000.\n"


# --- job ids ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["show", "logs", "wait", "cancel"])
@pytest.mark.parametrize("ref", [str(2**63), str(10**30), "9" * 5000, "0" * 30 + "7"])
def test_a_job_id_no_store_can_hold_is_not_found_not_an_overflow(tmp_path, capsys, command, ref):
    Store.for_state_dir(tmp_path / "state").close()  # made before: the first command would say so too
    rc, out, err = headnode(capsys, "--config", str(config(tmp_path)), command, ref)
    assert (rc, out) == (3, "")
    assert_one_sentence(err, "not found", "headnode queue --all")
    assert len(err) < 300


# --- the library: the console's submit form gets the same bounds ---------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("nodes", 10**30), ("nodes", 0), ("nodes", True), ("nodes", "2"), ("nodes", 2.0), ("nodes", bounds.MAX_NODES + 1),
        ("gpus_per_node", -1), ("gpus_per_node", 2**63), ("gpus_per_node", 1.5),
        ("procs_per_node", 100000), ("procs_per_node", 0), ("procs_per_node", False),
        ("priority", 10**6 + 1), ("priority", -(10**6) - 1), ("priority", "high"), ("priority", float("nan")),
        ("retries", 1001), ("retries", -1), ("retries", float("inf")),
        ("time_limit", float("nan")), ("time_limit", float("inf")), ("time_limit", 0.0), ("time_limit", -5.0),
        ("time_limit", 10.0**30), ("time_limit", "1h"), ("time_limit", True),
    ],
)
def test_validate_refuses_every_out_of_range_number_naming_its_field(tmp_path, field, value):
    inv = inventory.load(config(tmp_path))
    spec = jobs.JobSpec(command=["true"], **{field: value})
    with Store.for_state_dir(inv.state_dir) as store, pytest.raises(UserError) as e:
        jobs.validate(store, inv, spec)
    assert e.value.field == field
    assert "\n" not in e.value.sentence() and len(e.value.sentence()) < 300


# --- every number in hosts.toml --------------------------------------------------------------------

SECONDS = [("scheduler", k, *inventory.SETTING_RANGES[f]) for k, f in inventory.SCHEDULER_KEYS.items() if k != "port_range"]
SECONDS += [("telemetry", k, *inventory.SETTING_RANGES[f]) for k, f in inventory.TELEMETRY_KEYS.items()]
HOST_INTS = [("port", 1, 65535), ("gpus", 0, bounds.MAX_GPUS_PER_NODE)]
TOML_HOSTILE = ["nan", "inf", "-inf", "-1", "0", str(2**63), str(10**30), "'8'", "true", "[1]", "{ a = 1 }"]


def _setting_cases():
    for section, key, lo, hi in SECONDS:
        for value in [*TOML_HOSTILE, repr(lo / 2), repr(hi * 2)]:
            yield pytest.param(f"\n[{section}]\n{key} = {value}\n", key, id=f"{section}.{key}={value}")
    for key, lo, hi in HOST_INTS:
        in_range = {v for v in ("-1", "0") if lo <= int(v) <= hi}
        for value in [*(v for v in TOML_HOSTILE if v not in in_range), "1.5", "8.0", str(lo - 1), str(hi + 1)]:
            yield pytest.param(f"{key} = {value}\n", key, id=f"hosts.{key}={value}")
            yield pytest.param(f"\n[defaults]\n{key} = {value}\n", key, id=f"defaults.{key}={value}")
    for value in ["[nan, 30000]", "[1024, inf]", "[0, 30000]", f"[29500, {2**63}]", f"[{10**30}, 1]", "['a', 'b']",
                  "[true, 30000]", "[1.5, 30000]", "29500", "[30000, 29500]", "[29500]", "[29500, 29600, 29700]"]:
        yield pytest.param(f"\n[scheduler]\nport_range = {value}\n", "port_range", id=f"port_range={value}")


@pytest.mark.parametrize("text, key", list(_setting_cases()))
def test_every_numeric_setting_refuses_hostile_values_with_file_line_and_fix(tmp_path, capsys, text, key):
    path = config(tmp_path, text)
    line = next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if ln.startswith(f"{key} ="))
    rc, out, err = headnode(capsys, "--config", str(path), "hosts")
    assert (rc, out) == (2, "")
    assert_one_sentence(err, f"{path}:{line}: ", key, "; ")
    assert not (tmp_path / "state").exists()  # refused before anything was written


@pytest.mark.parametrize("section, key, lo, hi", SECONDS, ids=lambda v: v if isinstance(v, str) else None)
def test_every_seconds_setting_accepts_both_ends_of_its_range(tmp_path, section, key, lo, hi):
    for value in (lo, hi):
        # Settings bounded by another are given room: a lease longer than any cycle, down_after than
        # any interval, minute_retention than any raw_retention.
        others = {
            "scheduler": {"lease_ttl": 3600, "cycle_interval": 0.05},
            "telemetry": {"down_after": 86400, "interval": 0.05, "minute_retention": 3650 * 86400, "raw_retention": 60},
        }[section]
        others = {k: v for k, v in others.items() if k != key}
        if key == "lease_ttl":
            others["cycle_interval"] = min(lo, hi) / 2 if lo / 2 >= 0.05 else 0.05
        if key == "down_after":
            others["interval"] = 0.05
        if key == "raw_retention":
            others["minute_retention"] = hi
        if key == "minute_retention":
            others["raw_retention"] = lo
        body = "".join(f"{k} = {v!r}\n" for k, v in others.items())
        inv = inventory.load(config(tmp_path, f"\n[{section}]\n{key} = {value!r}\n{body}"))
        field = (inventory.SCHEDULER_KEYS | inventory.TELEMETRY_KEYS)[key]
        assert getattr(inv.settings, field) == value


@pytest.mark.parametrize(
    "text, expected",
    [
        ("\n[scheduler]\ncycle_interval = 20\n", "lease_ttl (15 s) must be longer than cycle_interval (20 s)"),
        ("\n[scheduler]\nlease_ttl = 1\n", "lease_ttl (1 s) must be longer than cycle_interval (1 s)"),
        ("\n[telemetry]\ninterval = 30\n", "down_after (10 s) must be longer than interval (30 s)"),
        ("\n[telemetry]\nminute_retention = 600\n", "minute_retention (600 s) must be at least raw_retention (3600 s)"),
    ],
)
def test_settings_that_only_make_sense_together_are_checked_together(tmp_path, capsys, text, expected):
    path = config(tmp_path, text)
    rc, _, err = headnode(capsys, "--config", str(path), "hosts")
    assert rc == 2
    assert_one_sentence(err, f"{path}:", expected)


# --- the file as a whole ---------------------------------------------------------------------------


def test_an_inventory_without_hosts_is_an_error_but_the_embedded_default_is_not(tmp_path, capsys, monkeypatch):
    for text in ("", '[cluster]\nname = "lab"\n', "[defaults]\nuser = 'x'\n", "hosts = []\n"):
        path = tmp_path / "hosts.toml"
        path.write_text(text)
        rc, out, err = headnode(capsys, "--config", str(path), "hosts")
        assert (rc, out) == (2, "")
        assert_one_sentence(err, f"{path}: [[hosts]]: no host is listed", 'address = "localhost"')
    monkeypatch.chdir(tmp_path / "..")
    monkeypatch.setenv("HEADNODE_STATE_DIR", str(tmp_path / "state"))
    assert not Path("hosts.toml").exists()
    assert [h.name for h in inventory.load(None).hosts] == ["localhost"]


def test_more_hosts_than_headnode_manages_are_refused(tmp_path):
    text = "".join(f'[[hosts]]\nname = "h{i}"\naddress = "10.1.{i // 250}.{i % 250}"\n' for i in range(bounds.MAX_NODES + 1))
    path = tmp_path / "hosts.toml"
    path.write_text(text)
    with pytest.raises(inventory.ConfigError, match="4097 hosts are more than headnode manages"):
        inventory.load(path)


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b'[cluster]\nname = "caf\xe9"\n', ":2: not UTF-8 text (byte 0xe9 at column 12)"),
        (b"\xff\xfe[\x00c\x00]\x00", ":1: not UTF-8 text (byte 0xff at column 1)"),
        (b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n", ":1: arrays or tables are nested too deeply to read"),
        (b"x = " + b"{a = " * 3000 + b"1" + b"}" * 3000 + b"\n", ":1: arrays or tables are nested too deeply to read"),
        (HOST.encode() + b"gpus = " + b"9" * 5000 + b"\n", ":4: a number has too many digits to read"),
        (HOST.encode() + b'user = "a\\u0000b"\n', "user must be at most 4096 characters without NUL"),
        (b'[cluster]\nstate_dir = "' + b"x" * 5000 + b'"\n', "state_dir must be at most 4096 characters"),
        (b"# padding\n" * (inventory.MAX_FILE_BYTES // 10 + 1), "too big for an inventory"),
    ],
)
def test_unreadable_inventory_files_are_one_sentence_with_the_line(tmp_path, capsys, raw, expected):
    path = tmp_path / "hosts.toml"
    path.write_bytes(raw)
    rc, out, err = headnode(capsys, "--config", str(path), "hosts")
    assert (rc, out) == (2, "")
    assert_one_sentence(err, str(path), expected)
    assert len(err) < 400


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "hosts.toml"
    path.write_bytes(b"\xef\xbb\xbf" + HOST.encode())
    assert [h.name for h in inventory.load(path).hosts] == ["a"]


def test_a_state_dir_that_is_a_file_or_under_a_file_is_refused_at_load(tmp_path, capsys):
    (tmp_path / "plain").write_text("x")
    under_a_file = f"cannot be created: '{tmp_path / 'plain'}' is not a directory"
    for state_dir, expected in (("plain", "is not a directory"), ("plain/sub", under_a_file)):
        path = tmp_path / "hosts.toml"
        path.write_text(f'[cluster]\nstate_dir = "{state_dir}"\n{HOST}')
        rc, _, err = headnode(capsys, "--config", str(path), "hosts")
        assert rc == 2
        assert_one_sentence(err, f"{path}:2: [cluster]: state_dir", expected, "a directory this user can create and write")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="no /proc here")
@pytest.mark.parametrize("state_dir", ["/proc/headnode-test", "/proc/self"])
def test_a_state_dir_under_proc_is_one_sentence_naming_it(tmp_path, capsys, state_dir):
    path = tmp_path / "hosts.toml"
    path.write_text(f'[cluster]\nstate_dir = "{state_dir}"\n{HOST}')
    rc, out, err = headnode(capsys, "--config", str(path), "hosts")
    assert (rc, out) == (74, "")
    assert_one_sentence(err, state_dir)


# --- store faults on real files --------------------------------------------------------------------


def _store_with_jobs(state: Path, n: int = 300) -> Path:
    with Store.for_state_dir(state) as store, store.tx():
        for i in range(n):
            store.execute(
                "INSERT INTO jobs (name, state, command, nodes, gpus_per_node, submitted_at) VALUES (?, 'PENDING', '[]', 1, 0, 0)",
                (f"job-{i}-" + "x" * 200,),
            )
    return state / DB_NAME


def test_a_store_file_of_random_bytes_is_one_sentence_and_left_as_it_was(tmp_path, capsys):
    path = config(tmp_path)
    (tmp_path / "state").mkdir()
    db = tmp_path / "state" / DB_NAME
    junk = os.urandom(64 * 1024)
    db.write_bytes(junk)
    rc, out, err = headnode(capsys, "--config", str(path), "queue")
    assert (rc, out) == (74, "")
    assert_one_sentence(err, f"the store {db} is not a SQLite database", f"mv {db} {db}.bad", "headnode store init --force")
    assert db.read_bytes() == junk


def test_a_store_with_damaged_pages_is_one_sentence_saying_how_to_recover(tmp_path, capsys):
    path = config(tmp_path)
    db = _store_with_jobs(tmp_path / "state")
    data = bytearray(db.read_bytes())
    assert len(data) > 4 * 4096
    for offset in range(2 * 4096, len(data), 4096):  # keep page 1 (the header and schema), wreck the rest
        data[offset : offset + 512] = os.urandom(512)
    db.write_bytes(bytes(data))
    rc, out, err = headnode(capsys, "--config", str(path), "queue", "--all")
    assert (rc, out) == (74, "")
    assert_one_sentence(err, f"the store {db} is damaged", ".recover")


def _root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def test_a_read_only_store_file_reads_but_a_write_is_one_sentence_for_a_user_who_may_not_write_it(tmp_path, capsys):
    """A real unprivileged process: root writes a 0444 file regardless, so as root the CLI runs
    without the capabilities that bypass file modes (setpriv), and the kernel refuses the write."""
    path = config(tmp_path)
    db = _store_with_jobs(tmp_path / "state", 1)
    assert headnode(capsys, "--config", str(path), "hosts")[0] == 0  # the inventory synced: reads need no write
    os.chmod(db, 0o444)
    prefix = []
    if _root():
        if not shutil.which("setpriv"):
            pytest.skip("as root, a read-only file needs setpriv to drop CAP_DAC_OVERRIDE")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = lambda *a: subprocess.run([*prefix, sys.executable, "-m", "scheduler", "--config", str(path), *a],  # noqa: E731
                                    capture_output=True, text=True, cwd=tmp_path, env=env)
    r = run("queue", "--all", "--json")
    assert r.returncode == 0 and '"job-0-' in r.stdout, r.stderr
    r = run("submit", "--", "true")
    assert (r.returncode, r.stdout) == (74, ""), r.stderr
    assert_one_sentence(r.stderr, f"cannot write the store {db}: it is read-only for this user", "ls -l")
    with Store(db) as store:
        assert store.one("SELECT count(*) AS n FROM jobs")["n"] == 1


@pytest.mark.skipif(not _root() or not shutil.which("chattr"), reason="chattr +i needs root")
def test_an_immutable_store_file_is_one_sentence_saying_it_is_read_only(tmp_path, capsys):
    path = config(tmp_path)
    db = _store_with_jobs(tmp_path / "state", 1)
    headnode(capsys, "--config", str(path), "hosts")
    if subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode:
        pytest.skip("this filesystem has no immutable attribute")
    try:
        rc, out, err = headnode(capsys, "--config", str(path), "submit", "--", "true")
    finally:
        subprocess.run(["chattr", "-i", str(db)], check=True)
    assert (rc, out) == (74, "")
    assert_one_sentence(err, f"cannot write the store {db}: it is read-only for this user", "lsattr")


@pytest.fixture
def mounts():
    """Mount points made by the test, unmounted (lazily if busy) whatever happens."""
    made: list[Path] = []

    def mount(target: Path, *args: str) -> None:
        if not _root() or not shutil.which("mount"):
            pytest.skip("mounting needs root")
        target.mkdir(exist_ok=True)
        r = subprocess.run(["mount", *args, str(target)], capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount here: {r.stderr.strip()}")
        made.append(target)

    yield mount
    for target in reversed(made):
        if subprocess.run(["umount", str(target)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_a_store_on_a_read_only_mount_is_one_sentence_saying_so(tmp_path, capsys, mounts):
    path = config(tmp_path)
    db = _store_with_jobs(tmp_path / "state", 1)
    assert headnode(capsys, "--config", str(path), "hosts")[0] == 0
    mounts(tmp_path / "state", "--bind", str(tmp_path / "state"))
    subprocess.run(["mount", "-o", "remount,bind,ro", str(tmp_path / "state")], check=True)
    for argv in (["queue", "--all"], ["submit", "--", "true"]):  # SQLite cannot make its -shm file there
        rc, out, err = headnode(capsys, "--config", str(path), *argv)
        assert (rc, out) == (74, "")
        assert_one_sentence(err, f"cannot open the store {db}: {db.parent} is on a read-only filesystem", "remount it read-write")


def test_a_full_filesystem_is_one_sentence_and_the_store_keeps_what_it_had(tmp_path, capsys, mounts):
    mounts(tmp_path / "small", "-t", "tmpfs", "-o", "size=1m", "tmpfs")
    path = tmp_path / "hosts.toml"
    path.write_text(f'[cluster]\nstate_dir = "small/state"\n{HOST}')
    assert headnode(capsys, "--config", str(path), "submit", "--name", "first", "--", "true")[0] == 0
    with open(tmp_path / "small" / "filler", "wb") as f:  # fill what is left
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    rc, out, err = headnode(capsys, "--config", str(path), "submit", "--name", "second", "--", "true")
    db = tmp_path / "small" / "state" / DB_NAME
    assert (rc, out) == (74, "")
    assert_one_sentence(err, f"cannot write the store {db}: the disk is full", "df -h")
    (tmp_path / "small" / "filler").unlink()
    with Store(db) as store:
        assert [r["name"] for r in store.query("SELECT name FROM jobs")] == ["first"]


def test_a_state_dir_on_a_full_filesystem_is_one_sentence(tmp_path, capsys, mounts):
    mounts(tmp_path / "tiny", "-t", "tmpfs", "-o", "size=64k", "tmpfs")
    (tmp_path / "tiny" / "filler").write_bytes(b"\0" * 60 * 1024)
    path = tmp_path / "hosts.toml"
    path.write_text(f'[cluster]\nstate_dir = "tiny/state"\n{HOST}')
    rc, out, err = headnode(capsys, "--config", str(path), "hosts")
    assert (rc, out) == (74, "")
    assert_one_sentence(err, str(tmp_path / "tiny" / "state"))
    assert "full" in err or "No space left" in err


def test_a_store_fault_after_opening_is_one_sentence_naming_the_store(tmp_path, capsys, monkeypatch):
    """A fault in the middle of a command (here: the disk fills during submit) reaches the CLI's
    last resort, which names the store file instead of calling it a bug."""
    path = config(tmp_path)
    headnode(capsys, "--config", str(path), "hosts")

    def full(*a, **k):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(jobs, "submit", full)
    rc, out, err = headnode(capsys, "--config", str(path), "submit", "--", "true")
    assert (rc, out) == (74, "")
    assert_one_sentence(err, f"cannot write the store {tmp_path / 'state' / DB_NAME}: the disk is full")


def test_a_programming_error_in_sqlite_is_still_an_internal_error(tmp_path, capsys, monkeypatch):
    path = config(tmp_path)

    def bug(*a, **k):
        raise sqlite3.OperationalError("no such column: nodez")

    monkeypatch.setattr(jobs, "submit", bug)
    rc, _, err = headnode(capsys, "--config", str(path), "submit", "--", "true")
    assert rc == cli.INTERNAL_ERROR and "internal error" in err
