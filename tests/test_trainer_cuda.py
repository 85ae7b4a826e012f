"""The CUDA paths (NCCL, bf16, compile, tensor parallel over GPUs): run where a GPU is, skipped elsewhere."""

import pytest
import torch

from tests.trainer_support import run_trainer, step_lines, unigram_entropy

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_one_gpu_in_bf16_with_compile_learns_and_reports_its_mfu(stdlib_data, tmp_path):
    run_trainer(stdlib_data, tmp_path, "--max-steps", "150", "--batch-size", "32", "--lr", "3e-3", "--compile",
                "--eval-every", "150", "--eval-windows", "64", "--peak-flops", "1e14", gpu=True)
    last = step_lines(tmp_path)[150]
    assert last["eval_loss"] < unigram_entropy(stdlib_data) - 0.4
    assert 0 < last["mfu"] < 1 and last["peak_mem_bytes"] > 0


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("parallel", ["tp", "fsdp"])
def test_two_gpus_match_ddp_within_bf16_rounding(stdlib_data, tmp_path, parallel):
    common = ["--max-steps", "10", "--eval-every", "0", "--batch-size", "8"]
    run_trainer(stdlib_data, tmp_path / "ddp", *common, "--parallel", "ddp", nproc=2, gpu=True)
    batch = ["--batch-size", "16"] if parallel == "tp" else []  # TP ranks read the same batch
    run_trainer(stdlib_data, tmp_path / parallel, *common, *batch, "--parallel", parallel, nproc=2, gpu=True)
    ddp, other = step_lines(tmp_path / "ddp"), step_lines(tmp_path / parallel)
    for step in ddp:  # bf16 matmuls round to ~3 significant digits; different splits round differently
        assert other[step]["loss"] == pytest.approx(ddp[step]["loss"], abs=0.02), step
