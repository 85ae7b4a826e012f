"""`:` command mode's language, the CLI entry, and the console staying out of the CLI's read paths."""

from __future__ import annotations

import subprocess
import sys

import pytest

from console import commands
from scheduler.cli import main
from scheduler.errors import UserError


def test_a_command_parses_to_its_name_and_arguments():
    assert commands.parse(":cancel 12") == commands.Command("cancel", ("12",))
    assert commands.parse("show 7") == commands.Command("job", ("7",))
    assert commands.parse("2") == commands.Command("queue", ())


def test_filter_keeps_the_rest_of_the_line_with_its_spaces():
    assert commands.parse("filter node 1 exited") == commands.Command("filter", ("node 1 exited",))


@pytest.mark.parametrize(("text", "says"), [
    ("frobnicate", "unknown command 'frobnicate'"),
    ("cancel", "`cancel` takes 1 argument(s): usage: cancel JOB"),
    ("queue 3", "`queue` takes no argument(s)"),
    ("", "empty command"),
    ("job 'x", "cannot read"),
])
def test_a_wrong_command_says_what_is_wrong(text, says):
    with pytest.raises(UserError) as e:
        commands.parse(text)
    assert says in e.value.sentence()


def test_every_command_has_a_handler_on_the_app():
    from console.app import HeadnodeApp

    assert all(callable(getattr(HeadnodeApp, f"cmd_{s.name}", None)) for s in commands.SPECS)


def test_console_and_demo_have_help(capsys):
    for cmd in ("console", "demo"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
    assert "--no-console" in capsys.readouterr().out


def test_console_for_an_unknown_job_is_one_clear_sentence(tmp_path, capsys):
    config = tmp_path / "hosts.toml"
    config.write_text(f'[cluster]\nstate_dir = "{tmp_path / "state"}"\n[[hosts]]\nname = "localhost"\naddress = "localhost"\n')
    assert main(["console", "--config", str(config), "--job", "nosuch"]) == 3
    assert "job 'nosuch' not found" in capsys.readouterr().err


def test_the_cli_read_paths_do_not_import_textual():
    code = "import sys, scheduler.cli as c; c.build_parser(); print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_every_console_binding_has_an_id_and_a_description_so_keys_can_be_remapped():
    import importlib
    import pkgutil

    import console
    import console.screens
    import console.widgets

    seen = []
    for pkg in (console, console.screens, console.widgets):
        for info in pkgutil.iter_modules(pkg.__path__):
            mod = importlib.import_module(f"{pkg.__name__}.{info.name}")
            for obj in vars(mod).values():
                if isinstance(obj, type) and obj.__module__ == mod.__name__:
                    seen += obj.__dict__.get("BINDINGS", [])
    assert len(seen) > 30
    assert [b for b in seen if not (b.id and b.description)] == []
