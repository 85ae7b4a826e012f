"""Tokenizers for `data prepare`, all offline.

    byte          bytes 0..255, end-of-text 256 (vocab 257): needs nothing
    bpe[:N]       byte-level BPE with N tokens (default 4096) trained on the sources themselves
    bpe:PATH      a local HuggingFace tokenizer.json
    gpt2:PATH     GPT-2's tokenizer from local files (tokenizer.json, or a directory with vocab.json and
                  merges.txt): there is no network to fetch them

A BPE tokenizer's JSON is stored in the version directory and its SHA-256 is part of the manifest's
tokenizer entry, so a different vocabulary always gives a different version.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable

import numpy as np

from scheduler.errors import UserError

EOT_TEXT = "<|endoftext|>"
TOKENIZER_FILE = "tokenizer.json"
DEFAULT_BPE_VOCAB = 4096
BYTE_EOT = 256


@dataclass(frozen=True)
class TrainBPE:
    """A spec that still needs the documents: the tokenizer is trained from the sources."""

    vocab_size: int


class ByteTokenizer:
    kind = "byte"
    vocab_size = BYTE_EOT + 1
    eot = BYTE_EOT
    spec = {"kind": "byte"}
    file_json: str | None = None

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8).astype(np.uint16) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i for i in ids if i < BYTE_EOT).decode("utf-8", errors="replace")


class HFTokenizer:
    """A HuggingFace `tokenizers` model; `kind` is "bpe" or "gpt2" (recorded in the manifest)."""

    def __init__(self, kind: str, file_json: str):
        from tokenizers import Tokenizer

        self.kind = kind
        tok = Tokenizer.from_str(file_json)
        if tok.token_to_id(EOT_TEXT) is None:
            tok.add_special_tokens([EOT_TEXT])
            file_json = tok.to_str()
        tok.encode_special_tokens = True  # "<|endoftext|>" inside a document is text, not a separator
        self.tok = tok
        self.file_json = file_json
        self.eot = tok.token_to_id(EOT_TEXT)
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        digest = hashlib.sha256(file_json.encode()).hexdigest()
        self.spec = {"kind": kind, "file": TOKENIZER_FILE, "sha256": digest}

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        dtype = np.uint16 if self.vocab_size <= 1 << 16 else np.uint32
        return [np.asarray(e.ids, dtype=dtype) for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode([int(i) for i in ids if i != self.eot], skip_special_tokens=False)


Tokenizer = ByteTokenizer | HFTokenizer


def parse(spec: str) -> Tokenizer | TrainBPE:
    """Turn `--tokenizer` into a tokenizer, or a TrainBPE when it must be trained from the sources."""
    kind, _, arg = spec.partition(":")
    if spec == "byte":
        return ByteTokenizer()
    if kind == "bpe" and (not arg or arg.isdigit()):
        size = int(arg) if arg else DEFAULT_BPE_VOCAB
        if not BYTE_EOT + 1 <= size <= 1 << 20:  # the 256 byte symbols and end-of-text at least
            raise UserError(f"--tokenizer {spec}: a BPE vocabulary must hold 257 to {1 << 20} tokens")
        return TrainBPE(size)
    if kind == "bpe":
        return HFTokenizer("bpe", _read_tokenizer_json(spec, Path(arg)))
    if spec == "gpt2":
        raise UserError(
            "the gpt2 tokenizer needs its vocabulary files",
            "there is no network to download them",
            "pass --tokenizer gpt2:PATH with PATH a tokenizer.json or a directory holding vocab.json and merges.txt",
        )
    if kind == "gpt2":
        return HFTokenizer("gpt2", _gpt2_json(spec, Path(arg)))
    if spec.endswith(".json") and Path(spec).is_file():
        return HFTokenizer("bpe", _read_tokenizer_json(spec, Path(spec)))
    raise UserError(
        f"unknown tokenizer {spec!r}",
        None,
        "use byte, bpe (trained from the sources), bpe:VOCAB_SIZE, bpe:PATH/tokenizer.json or gpt2:PATH",
    )


def train_bpe(vocab_size: int, documents: Iterable[str]) -> HFTokenizer:
    """Byte-level BPE (GPT-2's pre-tokenizer and byte alphabet), so any text round-trips exactly."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(documents, trainer)
    return HFTokenizer("bpe", tok.to_str())


def from_manifest(directory: str | Path, spec: dict) -> Tokenizer:
    """The tokenizer a prepared version was made with (to decode samples, or to check a round trip)."""
    if spec["kind"] == "byte":
        return ByteTokenizer()
    return HFTokenizer(spec["kind"], (Path(directory) / spec["file"]).read_text())


def _read_tokenizer_json(spec: str, path: Path) -> str:
    if path.is_dir():
        path = path / TOKENIZER_FILE
    if not path.is_file():
        raise UserError(f"--tokenizer {spec}: {path} does not exist", None, "give the path of a tokenizer.json")
    text = path.read_text()
    try:
        from tokenizers import Tokenizer

        Tokenizer.from_str(text)
    except Exception as e:  # the tokenizers package says what it disliked; the user needs the file name
        raise UserError(f"--tokenizer {spec}: {path} is not a HuggingFace tokenizer.json", str(e).splitlines()[0]) from e
    return text


def _gpt2_json(spec: str, path: Path) -> str:
    if path.is_file() or (path / TOKENIZER_FILE).is_file():
        return _read_tokenizer_json(spec, path)
    vocab, merges = path / "vocab.json", path / "merges.txt"
    if not (vocab.is_file() and merges.is_file()):
        raise UserError(
            f"--tokenizer {spec}: no GPT-2 vocabulary at {path}",
            "it needs a tokenizer.json, or vocab.json and merges.txt",
            "point gpt2:PATH at a file or directory holding them",
        )
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    try:
        tok = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
    except Exception as e:
        raise UserError(f"--tokenizer {spec}: cannot read {vocab} and {merges}", str(e).splitlines()[0]) from e
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok.to_str()


def worker_state(t: Tokenizer) -> tuple[str, str | None]:
    """What a worker process needs to rebuild the tokenizer (plain strings pickle cheaply)."""
    return (t.kind, t.file_json)


def from_worker_state(state: tuple[str, str | None]) -> Tokenizer:
    kind, file_json = state
    return ByteTokenizer() if kind == "byte" else HFTokenizer(kind, file_json)
