"""`headnode submit`: what it stores, what it refuses, and that hostile input stays inert text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scheduler import jobs
from scheduler.cli import main
from scheduler.errors import UserError
from scheduler.store import Store, dumps


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """Two localhost-style hosts with 2 GPUs each (one tagged), and a dataset version registered."""
    path = tmp_path / "hosts.toml"
    path.write_text(
        '[cluster]\nname = "t"\nstate_dir = "state"\n\n'
        '[[hosts]]\nname = "localhost"\naddress = "localhost"\ngpus = 2\ntags = ["a100"]\n\n'
        '[[hosts]]\nname = "far"\naddress = "10.0.0.9"\ngpus = 2\n'
    )
    with Store.for_state_dir(tmp_path / "state") as store, store.tx():
        store.execute(
            "INSERT INTO datasets (name, version, hash, path, tokenizer, vocab_size, dtype, shards, tokens,"
            " manifest, created_at) VALUES ('wiki', 'abc123def456', ?, '/d', '{}', 256, 'uint16', 1, 10, '{}', 0)",
            ("abc123def456" + "0" * 52,),
        )
    return path


def run(config: Path, *argv: str) -> int:
    return main(["--config", str(config), *argv])


def stored(config: Path) -> tuple[list[dict], list[dict]]:
    with Store.for_state_dir(config.parent / "state") as store:
        return store.query("SELECT * FROM jobs"), store.query("SELECT * FROM events WHERE object LIKE 'job:%'")


def test_submit_stores_a_pending_job_and_its_submitted_event(config, capsys):
    rc = run(
        config, "submit", "--name", "big", "-N", "2", "-G", "2", "--data", "wiki@abc123def456", "--priority", "5",
        "--time-limit", "1h30m", "--retries", "1", "--env", "NCCL_DEBUG=INFO", "--json", "--", "python", "train.py", "--lr", "3e-4",
    )
    assert rc == 0
    assert json.loads(capsys.readouterr().out) == {"id": 1, "name": "big", "state": "PENDING"}
    (job,), (event,) = stored(config)
    assert {k: job[k] for k in ("state", "reason", "command", "nodes", "gpus_per_node", "data", "priority",
                                "time_limit", "retries", "attempt", "env", "tags", "cancel_requested")} == {
        "state": "PENDING",
        "reason": "waiting for resources",
        "command": dumps(["python", "train.py", "--lr", "3e-4"]),
        "nodes": 2,
        "gpus_per_node": 2,
        "data": "wiki@abc123def456",
        "priority": 5,
        "time_limit": 5400.0,
        "retries": 1,
        "attempt": 0,
        "env": dumps({"NCCL_DEBUG": "INFO"}),
        "tags": "[]",
        "cancel_requested": 0,
    }
    assert (event["object"], event["what"]) == ("job:1", "submitted")


def test_submit_without_a_command_runs_the_trainer_under_a_readable_name(config, capsys):
    assert run(config, "submit") == 0
    assert capsys.readouterr().out == "submitted job 1 (trainer-1)\n"
    (job,), _ = stored(config)
    assert json.loads(job["command"]) == ["python", "-m", "trainer"]


@pytest.mark.parametrize("ref", ["wiki@abc123", "wiki"])
def test_the_dataset_version_is_pinned_in_full_at_submit(config, ref):
    assert run(config, "submit", "--data", ref) == 0
    (job,), _ = stored(config)
    assert job["data"] == "wiki@abc123def456"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-N", "3"], "this job could never start: needs 3 hosts; only 2 have them"),
        (["-G", "3"], "this job could never start: needs 1 host with >= 3 GPUs; no host has them"),
        (["-N", "2", "--tag", "a100"], "needs 2 hosts and tags {a100}; only 1 has them"),
        (["-N", "0"], "bad --nodes 0"),
        (["-G", "-1"], "bad --gpus-per-node -1"),
        (["--retries", "-1"], "bad --retries -1"),
        (["--env", "1X=y"], "bad environment variable '1X=y'"),
        (["--env", "NOVALUE"], "bad environment variable 'NOVALUE'"),
        (["--env", "HEADNODE_RUN_DIR=/tmp"], "cannot set HEADNODE_RUN_DIR with --env"),
        (["--env", "CUDA_VISIBLE_DEVICES=0"], "cannot set CUDA_VISIBLE_DEVICES with --env"),
        (["--time-limit", "soon"], "bad time limit 'soon'"),
        (["--time-limit", "0"], "bad time limit '0'"),
        (["--data", "@abc"], "names no dataset"),
        (["--name", "42"], "a name of digits only would read as a job id"),
        (["--name", "red\x1b[31m"], "it contains control characters"),
        (["--name", ""], "bad job name ''"),
        (["--tag", "a b"], "bad tag 'a b'"),
        (["--", ""], "empty command"),
        (["-G", "1", "--procs-per-node", "2"],
         "--procs-per-node is for CPU jobs only: with --gpus-per-node 1 each node runs one process per GPU;"
         " drop --procs-per-node, or use --gpus-per-node 0."),
        (["--procs-per-node", "0"], "bad --procs-per-node 0: a node runs at least one process"),
        (["--env", "PET_NPROC_PER_NODE=4"], "cannot set PET_NPROC_PER_NODE with --env: the scheduler passes torchrun"
                                            " the processes per node itself; use --procs-per-node N for a CPU job"),
        (["--env", "WANDB_API_KEY=sk-123"], "refusing to store WANDB_API_KEY in the job store"),
        (["--env", "hf_token=abc"], "pass its path, e.g. --env hf_token_FILE=/etc/secrets/hf_token"),
    ],
)
def test_an_invalid_submit_is_one_sentence_nonzero_and_stores_nothing(config, capsys, argv, message):
    assert run(config, "submit", *argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("headnode: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert stored(config) == ([], [])


def test_procs_per_node_is_stored_and_shown_by_show_and_queue_json(config, capsys):
    assert run(config, "submit", "--procs-per-node", "4", "--", "true") == 0
    assert run(config, "submit", "-G", "2", "--", "true") == 0  # one process per GPU
    assert run(config, "submit", "--", "true") == 0
    capsys.readouterr()
    (cpu, gpu, plain), _ = stored(config)
    assert [cpu["procs_per_node"], gpu["procs_per_node"], plain["procs_per_node"]] == [4, None, None]
    assert run(config, "queue", "--json") == 0
    assert [j["procs_per_node"] for j in json.loads(capsys.readouterr().out)] == [4, 2, 1]
    assert run(config, "show", "1", "--json") == 0
    assert json.loads(capsys.readouterr().out)["procs_per_node"] == 4
    assert run(config, "show", "1") == 0
    assert "shape:      1 node(s) x 4 CPU process(es)" in capsys.readouterr().out


def test_a_store_made_before_procs_per_node_gains_the_column_and_its_jobs_run_one_process(tmp_path):
    import sqlite3

    from scheduler import store as store_module

    # The store as the first schema made it (what an older headnode left): migration 1 alone.
    old = sqlite3.connect(tmp_path / store_module.DB_NAME, isolation_level=None)
    old.execute("PRAGMA journal_mode = WAL")
    old.executescript(store_module.MIGRATIONS[0])
    old.execute("PRAGMA user_version = 1")
    old.execute("INSERT INTO jobs (name, state, command, nodes, gpus_per_node, submitted_at)"
                " VALUES ('old', 'PENDING', '[\"true\"]', 1, 0, 0)")
    old.close()
    with Store.for_state_dir(tmp_path) as new:
        assert new.schema_version == len(store_module.MIGRATIONS)
        assert jobs.show(new, 1)["procs_per_node"] == 1


@pytest.mark.parametrize("ref", ["wiki@ffffffffffff", "nope@abc123def456", "nope"])
def test_an_unknown_dataset_exits_3_and_stores_nothing(config, capsys, ref):
    assert run(config, "submit", "--data", ref) == 3
    assert f"headnode: dataset {ref} not found: known datasets: wiki;" in capsys.readouterr().err
    assert stored(config) == ([], [])


def test_a_host_with_unknown_gpus_takes_a_gpu_job_and_says_it_waits_for_the_probe(tmp_path, capsys):
    path = tmp_path / "hosts.toml"
    path.write_text('[cluster]\nstate_dir = "s"\n[[hosts]]\nname = "box"\naddress = "10.0.0.2"\n')
    assert run(path, "submit", "-G", "8") == 0
    assert "the GPUs of box are not known yet; GPU jobs start there only after `headnode hosts probe`" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, seconds",
    [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("1d", 86400), ("1:30:00", 5400),
     ("5:00", 300), ("0.5h", 1800), (" 2H ", 7200)],
)
def test_time_limits_read_as_seconds(text, seconds):
    assert jobs.parse_time_limit(text) == seconds


@pytest.mark.parametrize("text", ["", "-5", "0s", "1x", "h", "1:70", "1h-2m", "1.5.2"])
def test_time_limits_that_are_not_durations_are_refused(text):
    with pytest.raises(UserError, match="bad time limit"):
        jobs.parse_time_limit(text)


@pytest.mark.parametrize(
    "command, name",
    [
        (["python", "-m", "trainer"], "trainer"),
        (["python3", "-m", "pkg.train"], "train"),
        (["/opt/venv/bin/python", "scripts/fit.py", "--x"], "fit"),
        (["python", "-u", "x.py"], "python"),
        (["./run.sh"], "run.sh"),
        (["$(reboot)"], "reboot"),
    ],
)
def test_default_names_come_from_the_command(command, name):
    assert jobs.default_name(command) == name


HOSTILE = "$(touch {m}); `touch {m}` ; touch {m} && echo '\"x"


def test_hostile_names_env_and_commands_are_stored_and_shown_verbatim_never_run(config, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a shell spawned by the CLI would create the marker here
    marker = tmp_path / "pwned"
    text = HOSTILE.format(m=marker.name)
    command = ["sh", "-c", text, "--", text]
    assert run(config, "submit", "--name", text, "--env", f"EVIL={text}", "--", *command) == 0
    capsys.readouterr()

    assert run(config, "show", "--json", text) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["name"], doc["command"], doc["env"]) == (text, command, {"EVIL": text})

    assert run(config, "queue") == 0
    assert text in capsys.readouterr().out
    assert run(config, "show", "1") == 0
    assert text in capsys.readouterr().out
    assert not marker.exists()


def test_control_characters_in_a_command_are_shown_escaped_not_sent_to_the_terminal(config, capsys):
    assert run(config, "submit", "--", "echo", "\x1b]0;owned\x07", "a\nb") == 0
    capsys.readouterr()
    assert run(config, "show", "1") == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "command:    echo '\\x1b]0;owned\\x07' 'a\\x0ab'" in out
    assert run(config, "show", "1", "--json") == 0
    assert json.loads(capsys.readouterr().out)["command"] == ["echo", "\x1b]0;owned\x07", "a\nb"]


def test_the_library_refuses_a_nul_byte_that_argv_could_not_carry(config):
    from scheduler import inventory

    inv = inventory.load(config)
    with Store.for_state_dir(inv.state_dir) as store:
        with pytest.raises(UserError, match="NUL"):
            jobs.submit(store, inv, jobs.JobSpec(command=["echo", "a\0b"]))
        with pytest.raises(UserError, match="NUL"):
            jobs.submit(store, inv, jobs.JobSpec(env={"A": "a\0b"}))
        assert store.query("SELECT id FROM jobs") == []


def test_a_secret_never_reaches_the_store_but_a_path_to_one_does(config, capsys):
    assert run(config, "submit", "--env", "AWS_SECRET_ACCESS_KEY=hunter2", "--", "true") == 2
    assert run(config, "submit", "--env", "HF_TOKEN_FILE=/etc/secrets/hf", "--env", "TOKENIZERS_PARALLELISM=false", "--", "true") == 0
    jobs_rows, events = stored(config)
    dump = str(jobs_rows) + str(events)
    assert "hunter2" not in dump and "/etc/secrets/hf" in dump


def test_a_command_too_large_for_the_hosts_kernel_is_refused_at_submit(config, capsys):
    assert run(config, "submit", "--", "python", "-c", "x" * 200_000) == 2
    err = capsys.readouterr().err
    assert err.startswith("headnode: the command and environment are too large to start (200,") and err.count("\n") == 1
    assert stored(config)[0] == []
