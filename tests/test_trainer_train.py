"""The trainer as a process: learning, resuming after a kill or a SIGTERM, bad input, sampling.

Resumed runs must match the uninterrupted one exactly, not within a tolerance: on one CPU thread the
same kernels run on bit-identical restored state (weights, Adam moments, step, loader position, RNG),
so any difference at all is a resume bug, not rounding.
"""

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.trainer_support import TINY, losses, run_trainer, stdlib_dataset, step_lines, trainer_env, unigram_entropy
from trainer import shards
from trainer.checkpoint import complete_checkpoints
from trainer.train import main

SHORT = ["--max-steps", "16", "--batch-size", "8", "--eval-every", "0", "--ckpt-every", "6", "--lr", "3e-3"]


@pytest.fixture(scope="module")
def straight(stdlib_data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight")
    run_trainer(stdlib_data, run_dir, *SHORT)
    return losses(run_dir)


@pytest.fixture(scope="module")
def learned(stdlib_data, tmp_path_factory):
    """200 steps of the tiny model at 64 tokens x 16 sequences (~35 s on 2 idle cores)."""
    run_dir = tmp_path_factory.mktemp("learned")
    run_trainer(stdlib_data, run_dir, "--max-steps", "200", "--batch-size", "16", "--lr", "3e-3",
                "--eval-every", "100", "--eval-windows", "64", "--ckpt-every", "100")
    return run_dir


def start(data, run_dir, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "trainer", "--data", str(data), "--run-dir", str(run_dir),
                             *TINY, *args], env=trainer_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"trainer exited {proc.returncode} early: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "timed out waiting for the trainer"
        time.sleep(0.05)


@pytest.mark.slow
def test_loss_falls_well_below_the_unigram_entropy_within_200_tiny_steps(stdlib_data, learned):
    lines = step_lines(learned)
    entropy = unigram_entropy(stdlib_data)  # 3.14 nats: what a model ignoring context can reach
    assert lines[1]["loss"] > entropy
    assert lines[200]["eval_loss"] < entropy - 0.4
    assert lines[200]["loss"] < entropy - 0.6


def test_metrics_lines_carry_the_fields_the_scheduler_reads(learned):
    line = step_lines(learned)[100]
    assert {"step", "loss", "eval_loss", "lr", "grad_norm", "tokens", "tokens_per_s", "mfu", "peak_mem_bytes",
            "step_time_s", "time"} <= set(line)
    assert line["tokens"] == 100 * 16 * 64 and line["mfu"] is None and line["peak_mem_bytes"] > 0
    assert "eval_loss" not in step_lines(learned)[99]


def test_a_finished_run_leaves_its_final_checkpoint_and_a_rerun_does_nothing(stdlib_data, learned):
    assert [s for s, _ in complete_checkpoints(learned)] == [100, 200]
    before = (learned / "metrics.jsonl").read_text()
    run_trainer(stdlib_data, learned, "--max-steps", "200", "--batch-size", "16")
    new = [json.loads(x) for x in (learned / "metrics.jsonl").read_text()[len(before):].splitlines()]
    assert [(d.get("event"), d["step"]) for d in new] == [("start", 200), ("done", 200)]


def test_sampling_from_the_trained_model_writes_mostly_plain_text(learned):
    out = subprocess.run([sys.executable, "-m", "trainer.sample", "--run-dir", str(learned), "--prompt", "import ",
                          "--tokens", "200"], env=trainer_env(), capture_output=True, text=True, check=True).stdout
    assert out.startswith("import ")
    printable = sum(c.isprintable() or c in "\n\t" for c in out) / len(out)
    assert printable > 0.95  # an untrained model spreads over all 257 tokens: ~40 % printable


def test_a_killed_run_resumes_from_its_checkpoint_onto_the_same_loss_curve(stdlib_data, straight, tmp_path):
    proc = start(stdlib_data, tmp_path, *SHORT)
    wait_for(lambda: (tmp_path / "checkpoints" / "step-00000006").is_dir(), proc)
    proc.kill()
    assert proc.wait() == -signal.SIGKILL  # killed mid-run, not finished
    run_trainer(stdlib_data, tmp_path, *SHORT)
    assert losses(tmp_path) == straight


def test_sigterm_finishes_the_step_checkpoints_exits_143_and_the_rerun_continues_exactly(
        stdlib_data, straight, tmp_path):
    proc = start(stdlib_data, tmp_path, *SHORT[:-4], "--ckpt-every", "100", "--lr", "3e-3")
    wait_for(lambda: (tmp_path / "metrics.jsonl").exists() and len(step_lines(tmp_path)) >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    stopped = max(step_lines(tmp_path))
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [stopped] and stopped < 16
    assert "SIGTERM" in err
    run_trainer(stdlib_data, tmp_path, *SHORT[:-4], "--ckpt-every", "100", "--lr", "3e-3")
    assert losses(tmp_path) == straight


@pytest.mark.parametrize("args, says", [
    (["--data", "/nonexistent"], "data /nonexistent does not exist"),
    (["--model", "gpt5"], "unknown model preset 'gpt5'"),
    (["--max-steps", "0"], "--max-steps must be at least 1"),
])
def test_bad_input_is_one_sentence_on_stderr_and_exit_2(stdlib_data, tmp_path, capsys, args, says):
    code = main(["--data", str(stdlib_data), "--run-dir", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"trainer: {says}") and err.count("\n") == 1


def test_a_missing_run_dir_names_the_flag_and_the_variable(stdlib_data, monkeypatch, capsys):
    monkeypatch.delenv("HEADNODE_RUN_DIR", raising=False)
    assert main(["--data", str(stdlib_data)]) == 2
    assert "pass --run-dir or set $HEADNODE_RUN_DIR" in capsys.readouterr().err


def test_a_global_batch_that_does_not_divide_into_micro_batches_is_refused(stdlib_data, tmp_path):
    proc = run_trainer(stdlib_data, tmp_path, "--batch-size", "4", "--batch-tokens", "1000", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "trainer: --batch-tokens 1000 is not a multiple of batch-size x seq-len x data-parallel ranks "
        "= 4 x 64 x 1 = 256"]


def test_resuming_a_run_on_another_dataset_version_is_refused(stdlib_data, learned, tmp_path):
    other = stdlib_dataset(tmp_path / "other", val=False)
    proc = run_trainer(other, learned, "--max-steps", "300", check=False)
    assert proc.returncode == 2
    assert f"but --data is version {shards.read_manifest(other).version}" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_help_and_unknown_flags_exit_like_any_command_line_tool(tmp_path):
    run = [sys.executable, "-m", "trainer"]
    ok = subprocess.run([*run, "--help"], env=trainer_env(), capture_output=True, text=True)
    assert ok.returncode == 0 and "--max-steps" in ok.stdout and not ok.stderr
    bad = subprocess.run([*run, "--no-such-flag"], env=trainer_env(), capture_output=True, text=True)
    assert bad.returncode == 2 and "unrecognized arguments: --no-such-flag" in bad.stderr
    assert "Traceback" not in bad.stderr
