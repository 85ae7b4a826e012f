import numpy as np
import pytest
import torch

from tests.trainer_support import stdlib_dataset
from trainer import shards
from trainer.data import Loader


def rows(batches) -> list[tuple[int, ...]]:
    return [tuple(r) for x, _ in batches for r in x.tolist()]


def step_rows(loader: Loader) -> list[tuple[int, ...]]:
    return rows(loader.next_step())


def test_targets_are_the_inputs_shifted_by_one_token(stdlib_data):
    (x, y), = Loader(stdlib_data, seq_len=64, batch_size=4).next_step()
    assert x.shape == y.shape == (4, 64) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_ranks_read_disjoint_windows_whose_union_is_the_one_process_step(stdlib_data):
    one = Loader(stdlib_data, seq_len=64, batch_size=8, seed=3)
    ranks = [Loader(stdlib_data, seq_len=64, batch_size=2, dp_rank=r, dp_size=2, accum_steps=2, seed=3)
             for r in range(2)]
    for _ in range(3):
        mine = [step_rows(loader) for loader in ranks]
        assert not set(mine[0]) & set(mine[1])
        assert sorted(mine[0] + mine[1]) == sorted(step_rows(one))


def test_the_stream_is_reproducible_from_the_seed(stdlib_data):
    a, b, c = (Loader(stdlib_data, seq_len=64, batch_size=4, seed=s) for s in (1, 1, 2))
    first = [step_rows(a) for _ in range(3)]
    assert first == [step_rows(b) for _ in range(3)]
    assert first != [step_rows(c) for _ in range(3)]


def test_a_loader_restored_from_its_state_continues_the_stream_exactly(stdlib_data):
    straight = Loader(stdlib_data, seq_len=64, batch_size=4, seed=5)
    expected = [step_rows(straight) for _ in range(6)]
    first = Loader(stdlib_data, seq_len=64, batch_size=4, seed=5)
    seen = [step_rows(first) for _ in range(3)]
    resumed = Loader(stdlib_data, seq_len=64, batch_size=4, seed=5)
    resumed.load_state_dict(first.state_dict())
    assert seen + [step_rows(resumed) for _ in range(3)] == expected


def test_an_epoch_visits_every_window_once_then_reshuffles(tmp_path):
    tokens = np.arange(8 * 10 + 1, dtype=np.uint16)  # exactly 10 windows of 8 (+1 target)
    s = shards.write_shard(tmp_path, "train-00000.bin", "train", tokens, "uint16")
    v = shards.write_shard(tmp_path, "val-00000.bin", "val", tokens[:20], "uint16")
    shards.write_manifest(tmp_path, shards.Manifest({"kind": "byte"}, 257, 256, "uint16", [s, v]))
    loader = Loader(tmp_path, seq_len=8, batch_size=5)
    starts = [r[0] for _ in range(4) for r in step_rows(loader)]
    assert sorted(starts[:10]) == sorted(starts[10:]) == list(range(0, 80, 8))
    assert starts[:10] != starts[10:]


def test_windows_never_straddle_two_shards(tmp_path):
    a = shards.write_shard(tmp_path, "train-00000.bin", "train", np.full(20, 1, np.uint16), "uint16")
    b = shards.write_shard(tmp_path, "train-00001.bin", "train", np.full(20, 2, np.uint16), "uint16")
    v = shards.write_shard(tmp_path, "val-00000.bin", "val", np.full(20, 3, np.uint16), "uint16")
    shards.write_manifest(tmp_path, shards.Manifest({"kind": "byte"}, 257, 256, "uint16", [a, b, v]))
    loader = Loader(tmp_path, seq_len=4, batch_size=8)
    for x, y in loader.next_step():
        for row in torch.cat([x, y[:, -1:]], dim=1).tolist():
            assert len(set(row)) == 1


def test_without_a_val_split_the_held_out_tail_is_never_trained_on(tmp_path):
    data = stdlib_dataset(tmp_path / "d", val=False)
    loader = Loader(data, seq_len=64, batch_size=64)
    held = set(rows(loader.eval_batches(10_000)))
    assert len(held) == int(len(loader.train) * 0.01)
    trained = {r for _ in range(loader.n_train // 64 + 1) for r in step_rows(loader)}
    assert not trained & held


def test_eval_windows_are_the_same_whatever_the_number_of_ranks(stdlib_data):
    one = rows(Loader(stdlib_data, seq_len=64, batch_size=4).eval_batches(16))
    two = [rows(Loader(stdlib_data, seq_len=64, batch_size=4, dp_rank=r, dp_size=2).eval_batches(16)) for r in range(2)]
    assert len(one) == 16 and sorted(one) == sorted(two[0] + two[1])


def test_a_dataset_too_small_for_one_window_is_refused(tmp_path):
    s = shards.write_shard(tmp_path, "train-00000.bin", "train", np.arange(10, dtype=np.uint16), "uint16")
    shards.write_manifest(tmp_path, shards.Manifest({"kind": "byte"}, 257, 256, "uint16", [s]))
    with pytest.raises(ValueError, match="not enough for one window"):
        Loader(tmp_path, seq_len=64, batch_size=1)


def test_every_rank_gets_the_same_number_of_eval_batches_even_from_a_short_split(stdlib_data):
    loaders = [Loader(stdlib_data, seq_len=64, batch_size=4, dp_rank=r, dp_size=3) for r in range(3)]
    available = len(loaders[0].val_ids)
    counts = {len(list(loader.eval_batches(available + 100))) for loader in loaders}
    assert counts == {-(-(available // 3) // 4)}
