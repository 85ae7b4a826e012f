import pytest

from trainer.sample import codec_for, main


def test_byte_runs_decode_bytes_and_drop_end_of_text_and_padding():
    codec = codec_for({"tokenizer": {"kind": "byte"}, "eot": 256, "data": "/nowhere"}, None)
    assert codec.encode("héllo") == list("héllo".encode())
    assert codec.decode([*"hé".encode(), 256, 300, *b"!"]) == "hé!"


def test_bpe_runs_use_the_tokenizer_file_in_the_dataset_dir(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    tok.train_from_iterator(["def main():\n    return 0\n"] * 50, tokenizers.trainers.BpeTrainer(vocab_size=300))
    tok.save(str(tmp_path / "tokenizer.json"))
    state = {"tokenizer": {"kind": "bpe", "file": "tokenizer.json"}, "eot": 0, "data": str(tmp_path)}
    codec = codec_for(state, None)
    ids = codec.encode("def main():")
    assert len(ids) < len("def main():") and codec.decode(ids) == "def main():"


def test_sampling_a_run_without_checkpoints_says_so_and_exits_2(tmp_path, capsys):
    assert main(["--run-dir", str(tmp_path)]) == 2
    assert "holds no complete checkpoint" in capsys.readouterr().err
