"""`headnode data …` in-process on a localhost-only inventory: output, --json fields, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from scheduler import humanize
from scheduler.cli import main
from tests.support import existing_store

JSON_PKG = str(Path(sysconfig.get_paths()["stdlib"]) / "json")


@pytest.fixture
def run(local_config, capsys):
    existing_store(local_config)

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([*argv, "--config", str(local_config)])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def version(run) -> str:
    code, out, _ = run("data", "prepare", JSON_PKG, "--name", "py", "--shard-tokens", "20000", "--json")
    assert code == 0
    return json.loads(out)["version"]


def test_prepare_prints_what_it_made_and_says_when_nothing_changed(run, version):
    code, out, _ = run("data", "prepare", JSON_PKG, "--name", "py", "--shard-tokens", "20000")
    assert code == 0 and out.startswith(f"unchanged: already registered as py@{version}: ")
    assert "0 exact duplicates dropped" in out and "binary files skipped" in out  # __pycache__


def test_show_json_has_the_fields_scripts_rely_on(run, version, local_config):
    code, out, _ = run("data", "show", "py", "--json")
    d = json.loads(out)
    assert code == 0 and d["version"] == version and d["hash"].startswith(version)
    assert Path(d["path"]) == local_config.parent / "state" / "data" / "py" / version
    assert d["shards"] == len(d["files"]) and d["tokens"] == d["train_tokens"] + d["val_tokens"] > 0
    assert d["placements"] == [{"host": "localhost", "state": "absent", "detail": None, "updated_at": None}]
    assert d["runs"] == [] and d["sources"][0]["path"] == JSON_PKG


def test_list_shows_each_version_and_where_it_is_verified(run, version):
    shown = json.loads(run("data", "show", "py", "--json")[1])
    assert run("data", "sync", "py")[0] == 0
    code, out, _ = run("data", "list")
    assert code == 0
    assert out.splitlines()[1].split()[:5] == [f"py@{version}", humanize.count(shown["tokens"]), str(shown["shards"]), "byte", "1/1"]


def test_sync_verify_and_prune_work_on_a_local_host(run, version, local_config):
    code, out, _ = run("data", "sync", f"py@{version[:6]}", "--json")
    [r] = json.loads(out)
    assert code == 0 and (r["host"], r["state"], r["transport"]) == ("localhost", "verified", "copy")
    copy = local_config.parent / "work" / "data" / "py" / version
    (copy / "val-00000.bin").write_bytes(b"\0\0")
    code, out, _ = run("data", "verify", "py")
    assert code == 1 and "localhost  corrupt" in out and "val-00000.bin: size 2, expected" in out
    assert run("data", "prune", f"py@{version}", "--dry-run")[1] == f"would remove py@{version} on localhost\n"
    assert run("data", "prune", f"py@{version}")[0] == 0 and not copy.exists()


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["data", "show", "nope"], 3, "headnode: dataset nope not found: no dataset is registered yet; see `headnode data list`"),
        (["data", "prepare", "/no/such/dir", "--name", "x"], 2, "headnode: source /no/such/dir does not exist; check the path."),
        (["data", "prepare", JSON_PKG, "--name", "x", "--tokenizer", "wordpiece"], 2, "headnode: unknown tokenizer 'wordpiece'; use byte"),
        (["data", "sync", "nope"], 3, "headnode: dataset nope not found"),
        (["data", "prepare", JSON_PKG], 2, "headnode: data prepare: the following arguments are required: --name"),
    ],
)
def test_mistakes_end_as_one_sentence_with_an_exit_code(run, argv, code, message):
    got, out, err = run(*argv)
    assert got == code and err.startswith(message) and len(err.strip().splitlines()) == 1


def test_showing_a_dataset_imports_no_numpy_tokenizer_ssh_or_torch(local_config, version):
    code = (
        "import sys; from scheduler.cli import main; "
        f"main(['data', 'show', 'py', '--json', '--config', {str(local_config)!r}]); "
        "print(sorted(m for m in ('numpy', 'fabric', 'torch', 'tokenizers', 'tqdm', 'trainer.shards') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
