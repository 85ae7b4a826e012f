"""The command line as a whole: help everywhere, one-sentence errors, light imports, one-way deps."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from scheduler import cli


def _all_parsers(parser: argparse.ArgumentParser, prefix=("headnode",)):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield prefix + (name,), helps.get(name), sub
                yield from _all_parsers(sub, prefix + (name,))


def test_every_command_has_help_text():
    missing = [" ".join(path) for path, text, _ in _all_parsers(cli.build_parser()) if not text]
    assert missing == []


@pytest.mark.parametrize("argv", [["bogus"], ["hosts", "--bogus"], ["hosts", "drain"]])
def test_usage_mistakes_are_one_sentence_and_exit_2(argv, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("headnode: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_hosts_json_lists_the_default_localhost(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HEADNODE_CONFIG", raising=False)
    monkeypatch.setenv("HEADNODE_STATE_DIR", str(tmp_path / "state"))
    assert cli.main(["hosts", "--json"]) == 0
    (host,) = json.loads(capsys.readouterr().out)
    assert {k: host[k] for k in ("name", "address", "state", "gpus_in_use", "tags")} == {
        "name": "localhost", "address": "localhost", "state": "unknown", "gpus_in_use": 0, "tags": []
    }


def test_drain_survives_a_new_process(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"HEADNODE_STATE_DIR": str(tmp_path / "state"), "PATH": "/usr/bin:/bin"}

    def run(*a):
        return subprocess.run([sys.executable, "-m", "scheduler", *a], capture_output=True, text=True, env=env, cwd=tmp_path)

    assert run("hosts", "drain", "localhost").returncode == 0
    out = run("hosts", "--json")
    assert json.loads(out.stdout)[0]["state"] == "draining"
    assert run("hosts", "undrain", "localhost").returncode == 0
    assert json.loads(run("hosts", "--json").stdout)[0]["state"] == "unknown"


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_the_trainer_imports_neither_scheduler_nor_console():
    mods = _modules_after("import trainer, trainer.shards, trainer.metrics\nimport pkgutil, importlib\n"
                          "[importlib.import_module('trainer.' + m.name) for m in pkgutil.iter_modules(trainer.__path__)"
                          " if m.name not in ('__main__',)]")
    assert not {m for m in mods if m.split(".")[0] in ("scheduler", "console", "textual")}


def test_the_scheduler_never_imports_the_console():
    # At import time, every module; the contracts in pyproject.toml (tests/test_layers.py) also see
    # the imports inside functions.
    mods = _modules_after("import pkgutil, importlib, scheduler\n"
                          "[importlib.import_module(m.name) for m in pkgutil.walk_packages(scheduler.__path__, 'scheduler.')"
                          " if m.name.rsplit('.', 1)[-1] not in ('__main__',)]")
    assert not {m for m in mods if m.split(".")[0] in ("console", "textual")}


def test_read_commands_do_not_import_torch_textual_or_fabric():
    mods = _modules_after("from scheduler import cli\ncli.build_parser()")
    assert not {m for m in mods if m.split(".")[0] in ("torch", "textual", "fabric", "paramiko")}
