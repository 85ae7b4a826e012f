"""Tokenizers round-trip text: bytes, BPE trained here, and GPT-2-style files loaded from disk."""

from __future__ import annotations

import json

import pytest

from scheduler.data import tokenizer as tokenizers
from scheduler.errors import UserError

TEXTS = ["plain ascii", "ünïcödé and emoji 🚀", "  leading spaces\n\ttabs\r\nand CRLF", "<|endoftext|> looks special", ""]


def test_the_byte_tokenizer_round_trips_any_text():
    tok = tokenizers.parse("byte")
    assert (tok.vocab_size, tok.eot) == (257, 256)
    for text, ids in zip(TEXTS, tok.encode(TEXTS)):
        assert ids.max(initial=0) < 256 and tok.decode(ids.tolist()) == text


@pytest.fixture(scope="module")
def trained():
    corpus = ["the quick brown fox jumps over the lazy dog"] * 20 + ["def main():\n    return 0\n"] * 20
    return tokenizers.train_bpe(320, corpus)


def test_a_trained_bpe_tokenizer_round_trips_text_it_never_saw(trained):
    assert 257 < trained.vocab_size <= 320 and trained.spec["kind"] == "bpe"
    for text, ids in zip(TEXTS, trained.encode(TEXTS)):
        assert trained.decode(ids.tolist()) == text
    assert len(trained.encode(["the quick brown fox"])[0]) < len("the quick brown fox")


def test_a_local_tokenizer_json_loads_and_its_hash_names_it(trained, tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(trained.file_json)
    loaded = tokenizers.parse(f"bpe:{path}")
    assert loaded.spec == trained.spec and loaded.eot == trained.eot
    assert tokenizers.parse(str(path)).spec == trained.spec


def test_gpt2_loads_from_vocab_and_merges_files(trained, tmp_path):
    trained.tok.model.save(str(tmp_path))  # writes vocab.json and merges.txt, as GPT-2 ships them
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    gpt2 = tokenizers.parse(f"gpt2:{tmp_path}")
    assert gpt2.spec["kind"] == "gpt2" and gpt2.eot == vocab["<|endoftext|>"]
    for text, ids in zip(TEXTS, gpt2.encode(TEXTS)):
        assert gpt2.decode(ids.tolist()) == text


def test_gpt2_without_files_says_where_to_point_it(tmp_path):
    with pytest.raises(UserError, match=f"no GPT-2 vocabulary at {tmp_path}"):
        tokenizers.parse(f"gpt2:{tmp_path}")


def test_a_file_that_is_not_a_tokenizer_is_named(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"not": "a tokenizer"}')
    with pytest.raises(UserError, match=f"{bad} is not a HuggingFace tokenizer.json"):
        tokenizers.parse(f"bpe:{bad}")


def test_a_bpe_vocabulary_smaller_than_the_bytes_is_refused():
    with pytest.raises(UserError, match="must hold 257 to"):
        tokenizers.parse("bpe:100")
