import json

import pytest
import torch

from trainer.checkpoint import Checkpointer, complete_checkpoints, latest_checkpoint, read_trainer_state
from trainer.loop import lr_at
from trainer.model import GPT, preset


def make(seed: int):
    torch.manual_seed(seed)
    model = GPT(preset("tiny", vocab_size=257, seq_len=16, n_layer=2))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3)


def train_steps(model, opt, n: int) -> list[float]:
    out = []
    for _ in range(n):
        x = torch.randint(0, 257, (2, 17))
        loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad()
        out.append(loss.item())
    return out


def test_resume_restores_model_optimizer_and_rng_so_training_continues_identically(tmp_path):
    model, opt = make(0)
    train_steps(model, opt, 2)
    Checkpointer(tmp_path).save(2, model, opt, {"step": 2})
    expected = train_steps(model, opt, 3)  # uses the RNG for its batches: restored too

    fresh, fresh_opt = make(1)
    state = Checkpointer(tmp_path).resume(fresh, fresh_opt)
    assert state == {"step": 2}
    assert train_steps(fresh, fresh_opt, 3) == expected


def test_a_run_dir_without_checkpoints_resumes_nothing(tmp_path):
    model, opt = make(0)
    assert Checkpointer(tmp_path).resume(model, opt) is None


def test_a_save_interrupted_before_its_rename_is_ignored_and_cleaned_up(tmp_path):
    model, opt = make(0)
    ck = Checkpointer(tmp_path)
    ck.save(1, model, opt, {"step": 1})
    torn = tmp_path / "checkpoints" / "step-00000002.tmp-0"
    torn.mkdir()
    (torn / "trainer.json").write_text("{")
    assert latest_checkpoint(tmp_path).name == "step-00000001"
    assert Checkpointer(tmp_path).resume(model, opt) == {"step": 1}
    assert not torn.exists()


def test_only_the_newest_k_checkpoints_are_kept(tmp_path):
    model, opt = make(0)
    ck = Checkpointer(tmp_path, keep=2)
    for step in (10, 20, 30):
        ck.save(step, model, opt, {"step": step})
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [20, 30]
    assert read_trainer_state(latest_checkpoint(tmp_path)) == {"step": 30}
    assert json.loads((latest_checkpoint(tmp_path) / "trainer.json").read_text())["step"] == 30


def test_lr_warms_up_linearly_then_follows_a_cosine_down_to_the_floor():
    lr = [lr_at(s, peak=1.0, warmup=10, decay=110, min_ratio=0.1) for s in range(120)]
    assert lr[0] == pytest.approx(0.1) and lr[9] == pytest.approx(1.0)
    assert lr[10] == pytest.approx(1.0) and lr[60] == pytest.approx(0.55)
    assert lr[110] == lr[119] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lr[10:], lr[11:], strict=False))
