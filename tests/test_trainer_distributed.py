"""Every parallelism against one process with the same global batch, under real torchrun on gloo.

Losses match to 2e-5 nats, not exactly: splitting a batch over ranks changes only the order of float32
sums (per-rank means averaged by the all-reduce vs one mean, sharded vs whole matmuls under TP). Measured
here over 6 steps: at most 5e-7 for DDP, TP and FSDP+TP; the bound leaves 40x room for the drift of a
few more AdamW steps. A real bug (a rank reading the wrong windows, a missing gradient reduction, a
wrong TP plan: FIELD-NOTES saw 0.034) is three orders of magnitude larger.
"""

import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.trainer_support import TINY, free_port, losses, run_trainer, step_lines, trainer_env
from trainer.checkpoint import complete_checkpoints

RUN = ["--max-steps", "8", "--eval-every", "4", "--eval-windows", "32", "--ckpt-every", "4"]
TOL = 2e-5


@pytest.fixture(scope="module")
def reference(stdlib_data, tmp_path_factory):
    """One process, 8 sequences per step."""
    run_dir = tmp_path_factory.mktemp("reference")
    run_trainer(stdlib_data, run_dir, *RUN, "--batch-size", "8")
    return step_lines(run_dir)


def assert_same_curve(run_dir, reference):
    lines = step_lines(run_dir)
    assert sorted(lines) == sorted(reference)
    for step, ref in reference.items():
        assert lines[step]["loss"] == pytest.approx(ref["loss"], abs=TOL), step
        if "eval_loss" in ref:
            assert lines[step]["eval_loss"] == pytest.approx(ref["eval_loss"], abs=TOL), step


@pytest.mark.parametrize("parallel, batch", [("ddp", 4), ("fsdp", 4), ("tp", 8)])
def test_two_processes_match_one_process_with_the_same_global_batch(stdlib_data, reference, tmp_path, parallel, batch):
    run_trainer(stdlib_data, tmp_path, *RUN, "--batch-size", str(batch), "--parallel", parallel, nproc=2)
    assert_same_curve(tmp_path, reference)


@pytest.mark.slow
def test_fsdp_with_tensor_parallel_on_a_2x2_mesh_matches_one_process(stdlib_data, reference, tmp_path):
    run_trainer(stdlib_data, tmp_path, *RUN, "--batch-size", "4", "--parallel", "fsdp+tp", "--tp-size", "2", nproc=4)
    assert_same_curve(tmp_path, reference)


def test_gradient_accumulation_matches_one_big_batch(stdlib_data, reference, tmp_path):
    run_trainer(stdlib_data, tmp_path, *RUN, "--batch-size", "2", "--batch-tokens", str(8 * 64))
    assert_same_curve(tmp_path, reference)


def test_an_fsdp_checkpoint_resumes_under_ddp_and_continues_the_curve(stdlib_data, reference, tmp_path):
    run_trainer(stdlib_data, tmp_path, *RUN, "--batch-size", "4", "--parallel", "fsdp", nproc=2)
    shutil.rmtree(tmp_path / "checkpoints" / "step-00000008")  # back to step 4, sharded by FSDP
    run_trainer(stdlib_data, tmp_path, *RUN, "--batch-size", "4", "--parallel", "ddp", nproc=2)
    assert_same_curve(tmp_path, reference)


def two_nodes(data, run_dirs, *args) -> None:
    """Two torchrun agents on 127.0.0.1 as two nodes of one rank each, each with its own run dir
    (as on two hosts), the rendezvous host told it is the host (FIELD-NOTES)."""
    port, rdzv_id = free_port(), f"t{free_port()}"
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
         "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", rdzv_id,
         "--rdzv-conf", f"is_host={int(i == 0)}", "--local-addr", "127.0.0.1", "-m", "trainer",
         "--data", str(data), "--run-dir", str(run_dirs[i]), *TINY, *args],
        env=trainer_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)


@pytest.mark.slow
def test_two_nodes_with_their_own_run_dirs_train_like_one_process_and_resume_from_either_copy(
        stdlib_data, reference, tmp_path):
    hosts = [tmp_path / "host-a", tmp_path / "host-b"]
    two_nodes(stdlib_data, hosts, *RUN, "--batch-size", "4")
    rank0 = next(h for h in hosts if (h / "metrics.jsonl").exists())  # rendezvous order picks rank 0
    assert_same_curve(rank0, reference)
    for h in hosts:  # every host holds complete checkpoints: rank 0 may land on either next time
        assert [s for s, _ in complete_checkpoints(h)] == [4, 8]
        shutil.rmtree(h / "checkpoints" / "step-00000008")
    two_nodes(stdlib_data, hosts, *RUN, "--batch-size", "4")
    rank0 = next(h for h in hosts if (h / "metrics.jsonl").exists() and max(losses(h)) == 8
                 and step_lines(h)[8]["time"] > step_lines(h)[4]["time"])
    assert_same_curve(rank0, reference)


def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step_and_the_rerun_continues_the_curve(
        stdlib_data, reference, tmp_path):
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "trainer",
            "--data", str(stdlib_data), "--run-dir", str(tmp_path), *TINY, *RUN, "--batch-size", "4",
            "--ckpt-every", "100"]
    agent = subprocess.Popen(argv, env=trainer_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while not ((tmp_path / "metrics.jsonl").exists() and step_lines(tmp_path)):
        assert agent.poll() is None and time.monotonic() < deadline, agent.communicate()[0][-3000:]
        time.sleep(0.05)
    workers = psutil.Process(agent.pid).children()
    assert len(workers) == 2
    workers[-1].send_signal(signal.SIGTERM)  # one rank only, as when a host's processes are signalled
    out = agent.communicate(timeout=180)[0]
    assert agent.returncode != 0  # torchrun reports the early stop (exit 143) as a failure, not success
    stopped = max(step_lines(tmp_path))
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [stopped] and stopped < 8, out[-3000:]
    run_trainer(stdlib_data, tmp_path, *RUN, "--batch-size", "4", "--ckpt-every", "100", nproc=2)
    assert_same_curve(tmp_path, reference)
