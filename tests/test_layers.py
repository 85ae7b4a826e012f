"""The layers hold: console -> scheduler -> trainer, checked statically (import-linter contracts in
pyproject.toml, which see imports inside functions too) and by running `headnode` where the console
or Textual cannot be imported."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """The contracts of root/pyproject.toml against the packages under root (lint-imports puts the
    working directory first on sys.path, ahead of this checkout's editable install)."""
    if importlib.util.find_spec("importlinter") is None:
        pytest.fail("import-linter is not installed in this venv; rerun scripts/setup (it installs the test extras)")
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-c", LINT], cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_the_import_contracts_hold():
    r = lint_imports(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert " 0 broken" in r.stdout


def test_a_console_import_inside_a_scheduler_function_breaks_the_contract(tmp_path):
    for package in ("console", "scheduler", "trainer"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    module = tmp_path / "scheduler" / "lease.py"
    clean = module.read_text()
    module.write_text(clean + "\n\ndef _peek():\n    from console import app\n\n    return app\n")

    broken = lint_imports(tmp_path)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "BROKEN" in broken.stdout and "scheduler.lease -> console.app" in broken.stdout

    module.write_text(clean)
    kept = lint_imports(tmp_path)
    assert kept.returncode == 0, kept.stdout + kept.stderr


# `python -c BLOCKED BLOCKED_PACKAGES ARGV…`: headnode as if those packages were not installed.
BLOCKED = """
import sys

class NotInstalled:
    def __init__(self, names):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled(set(sys.argv[1].split(","))))
from scheduler.cli import main
sys.exit(main(sys.argv[2:]))
"""


def headnode_without(blocked: str, tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HEADNODE_CONFIG"}
    env["HEADNODE_STATE_DIR"] = str(tmp_path / "state")
    return subprocess.run([sys.executable, "-c", BLOCKED, blocked, *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def one_sentence(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("headnode: "), r.stderr
    return lines[0]


def test_without_textual_the_console_says_how_to_install_it_and_the_headless_commands_work(tmp_path):
    for argv in (["console"], [], ["demo"]):
        said = one_sentence(headnode_without("textual", tmp_path, *argv))
        assert said.startswith("headnode: the console needs the textual package: textual is not installed"), said
        assert "-m pip install 'textual>=8.0'" in said
    assert not (tmp_path / "state").exists()  # the demo stopped before preparing anything

    queue = headnode_without("textual", tmp_path, "queue", "--json")
    assert queue.returncode == 0 and json.loads(queue.stdout) == [], queue.stderr
    (tmp_path / "hosts.toml").write_text('[[hosts]]\nname = "gpu01"\naddress = "10.9.9.9"\n')
    refused = headnode_without("textual", tmp_path, "demo", "--no-console")  # the headless demo loads
    assert "headnode demo runs on this machine alone" in one_sentence(refused)


def test_without_the_console_package_its_verbs_say_so_and_the_rest_works(tmp_path):
    said = one_sentence(headnode_without("console", tmp_path, "console", "--job", "3"))
    assert said.startswith("headnode: `headnode console` is not available here: console.cli cannot be imported"), said
    help_ = headnode_without("console", tmp_path, "--help")
    assert help_.returncode == 0 and "not available here" in help_.stdout and "submit" in help_.stdout
    queue = headnode_without("console", tmp_path, "queue", "--json")
    assert queue.returncode == 0 and json.loads(queue.stdout) == [], queue.stderr


def test_the_headless_verbs_do_not_even_load_the_console_plugins():
    code = ("import sys; from scheduler import cli; cli.build_parser('queue'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'console' or m == 'importlib.metadata'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_an_install_without_the_entry_points_says_to_reinstall(monkeypatch, capsys):
    import importlib.metadata

    from scheduler import cli

    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **_: [])
    assert cli.main(["demo"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'demo'" in err and "reinstall headnode" in err and len(err.strip().splitlines()) == 1
