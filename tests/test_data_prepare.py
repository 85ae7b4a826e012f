"""`data prepare` as a library: versions, determinism, dedupe, splits, lineage, and clear errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path

import numpy as np
import pytest

from scheduler.data import prepare as prep
from scheduler.data import tokenizer as tokenizers
from scheduler.data.versions import register, resolve, summary
from scheduler.errors import UserError
from scheduler.store import Store
from trainer import shards

STDLIB = Path(sysconfig.get_paths()["stdlib"])


@pytest.fixture
def store(tmp_path) -> Store:
    with Store.for_state_dir(tmp_path / "state") as s:
        yield s


@pytest.fixture
def corpus(tmp_path) -> Path:
    d = tmp_path / "corpus"
    (d / "sub").mkdir(parents=True)
    for i in range(12):
        (d / f"doc{i:02d}.txt").write_text(f"document {i}: " + "the quick brown fox jumps over the lazy dog. " * (i + 1))
    (d / "sub" / "notes.md").write_text("# notes\n\nnested files count too, with ünïcödé.\n")
    return d


def test_preparing_the_same_sources_twice_gives_the_same_version(store, corpus):
    first = prep.prepare(store, [str(corpus)], "c", shard_tokens=256)
    second = prep.prepare(store, [str(corpus)], "c", shard_tokens=256)
    assert (second.version, second.new) == (first.version, False)
    assert store.query("SELECT name, version FROM datasets") == [{"name": "c", "version": first.version}]


def test_output_does_not_depend_on_the_number_of_workers(store, tmp_path):
    one = prep.prepare(store, [str(STDLIB / "json")], "j", workers=1, shard_tokens=4096)
    two = prep.prepare(store, [str(STDLIB / "json")], "j", workers=2, shard_tokens=4096)
    assert (two.version, two.workers, one.workers) == (one.version, 2, 1)


def test_changing_one_source_gives_a_new_version_and_keeps_the_old(store, corpus):
    old = prep.prepare(store, [str(corpus)], "c")
    (corpus / "doc03.txt").write_text("a different third document")
    new = prep.prepare(store, [str(corpus)], "c")
    assert new.version != old.version and new.new
    assert {r["version"] for r in store.query("SELECT version FROM datasets")} == {old.version, new.version}
    assert Path(old.path).is_dir() and shards.verify(old.path) == {}


def test_shards_hold_every_document_after_an_end_of_text_token(store, tmp_path):
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["alpha", "beta", "gamma"]))
    r = prep.prepare(store, [str(src)], "tiny", val_fraction=0)
    m = shards.read_manifest(r.path)
    tokens = np.concatenate([shards.open_shard(r.path, s, m.dtype) for s in m.shards])
    assert tokens.tolist() == [256, *b"alpha", 256, *b"beta", 256, *b"gamma"]
    assert (m.tokenizer, m.vocab_size, m.eot, m.dtype) == ({"kind": "byte"}, 257, 256, "uint16")


def test_exact_duplicate_documents_are_dropped_and_counted(store, tmp_path):
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["same", "other", "same", "same"]))
    r = prep.prepare(store, [str(src)], "dups", val_fraction=0)
    assert (r.documents, r.duplicates, r.tokens) == (2, 2, len("same") + len("other") + 2)


def test_shards_are_cut_at_the_requested_size(store, corpus):
    r = prep.prepare(store, [str(corpus)], "c", shard_tokens=100, val_fraction=0)
    m = shards.read_manifest(r.path)
    assert [s.tokens for s in m.shards[:-1]] == [100] * (len(m.shards) - 1)
    assert 0 < m.shards[-1].tokens <= 100 and m.tokens() == r.tokens


def test_a_single_document_still_gets_a_validation_split(store, tmp_path):
    src = tmp_path / "one.txt"
    src.write_text("x" * 999)
    r = prep.prepare(store, [str(src)], "one", val_fraction=0.1)
    assert (r.train_tokens, r.val_tokens) == (900, 100)


def test_validation_documents_are_chosen_by_content_not_position(store, tmp_path):
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": f"document number {i}"}) + "\n" for i in range(400)))
    r = prep.prepare(store, [str(src)], "many", val_fraction=0.25)
    assert 0.15 < r.val_tokens / r.tokens < 0.35
    m = shards.read_manifest(r.path)
    val = np.concatenate([shards.open_shard(r.path, s, m.dtype) for s in m.split("val")])
    assert val[0] == m.eot and bytes(val[val != m.eot][:8].astype(np.uint8)) == b"document"


def test_lineage_records_each_source_with_its_size_and_hash(store, corpus, tmp_path):
    single = tmp_path / "single.txt"
    single.write_text("one more document")
    r = prep.prepare(store, [str(corpus), str(single)], "c")
    row = resolve(store, f"c@{r.version}")
    srcs = json.loads(row["sources"])
    assert [(s["path"], s["files"]) for s in srcs] == [(str(corpus), 13), (str(single), 1)]
    assert srcs[1] == {"path": str(single), "files": 1, "bytes": 17, "sha256": shards.hash_file(single)}
    assert srcs[0]["bytes"] == sum(p.stat().st_size for p in corpus.rglob("*") if p.is_file())


def test_include_globs_select_files_inside_directories(store, corpus):
    r = prep.prepare(store, [str(corpus)], "md", include=["*.md"], val_fraction=0)
    assert r.documents == 1


def test_exclude_globs_skip_files_and_whole_directories(store, corpus):
    r = prep.prepare(store, [str(corpus)], "c", exclude=["sub", "doc0*"], val_fraction=0)
    assert r.documents == 2  # doc10.txt and doc11.txt


def test_binary_files_inside_directories_are_skipped_and_reported(store, corpus):
    (corpus / "blob.bin").write_bytes(b"\x00\x01\x02" * 100)
    r = prep.prepare(store, [str(corpus)], "c")
    assert r.skipped_binary == [str(corpus / "blob.bin")] and r.documents == 13


def test_a_bpe_tokenizer_trained_from_the_sources_is_stored_with_the_version(store, corpus):
    r = prep.prepare(store, [str(corpus)], "bpe", tokenizer="bpe:300", val_fraction=0)
    m = shards.read_manifest(r.path)
    assert m.tokenizer["kind"] == "bpe" and m.vocab_size == 300
    tok = tokenizers.from_manifest(r.path, m.tokenizer)
    tokens = np.concatenate([shards.open_shard(r.path, s, m.dtype) for s in m.shards])
    docs = tok.decode(tokens.tolist())
    assert "the quick brown fox" in docs and r.tokens < r.bytes  # merges compress
    again = prep.prepare(store, [str(corpus)], "bpe", tokenizer="bpe:300", val_fraction=0)
    assert again.version == r.version


def test_register_adopts_a_shard_directory_and_refuses_a_damaged_one(store, corpus, tmp_path):
    made = prep.prepare(store, [str(corpus)], "c")
    with Store.for_state_dir(tmp_path / "other") as other:
        row, new = register(other, made.path, "adopted")
        assert (row["version"], new) == (made.version, True)
        assert Path(row["path"]) == tmp_path / "other" / "data" / "adopted" / made.version
        assert shards.verify(row["path"]) == {} and shards.read_manifest(row["path"]).version == made.version
        shard = Path(made.path) / shards.read_manifest(made.path).shards[0].file
        data = bytearray(shard.read_bytes())
        data[0] ^= 1
        shard.chmod(0o644)
        shard.write_bytes(bytes(data))
        with pytest.raises(UserError, match=f"does not match its manifest: {shard.name} \\(hash mismatch\\)"):
            register(other, made.path, "broken")


def test_register_recomputes_the_version_instead_of_trusting_the_manifest(store, corpus, tmp_path):
    made = prep.prepare(store, [str(corpus)], "c")
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(made.path, elsewhere)
    manifest = json.loads((elsewhere / "manifest.json").read_text())
    manifest["version"], manifest["hash"] = "000000000000", "0" * 64
    (elsewhere / "manifest.json").write_text(json.dumps(manifest))
    with Store.for_state_dir(tmp_path / "other") as other:
        row, _ = register(other, str(elsewhere), "adopted")
    assert (row["version"], row["hash"]) == (made.version, made.hash)


def test_show_lists_the_runs_that_trained_on_a_version(store, corpus):
    r = prep.prepare(store, [str(corpus)], "c")
    with store.tx():
        store.execute(
            "INSERT INTO jobs (name, state, command, nodes, gpus_per_node, data, submitted_at) VALUES (?, ?, '[]', 1, 0, ?, 0)",
            ("train-a", "SUCCEEDED", f"c@{r.version}"),
        )
    d = summary(resolve(store, "c"), ["gpu01"], store)
    assert [(j["name"], j["state"]) for j in d["runs"]] == [("train-a", "SUCCEEDED")]
    assert d["placements"] == [{"host": "gpu01", "state": "absent", "detail": None, "updated_at": None}]


@pytest.mark.parametrize(
    "srcs, kw, message",
    [
        (["missing.txt"], {}, "source missing.txt does not exist"),
        (["blob.bin"], {}, "source .*blob.bin is a binary file: only UTF-8 text"),
        (["empty.txt"], {}, "the sources hold no text"),
        (["bad.jsonl"], {}, "bad.jsonl: line 2 .* is not JSON"),
        (["nofield.jsonl"], {}, "has no string field 'text'; pass --text-field NAME"),
        (["surrogate.jsonl"], {}, "cannot tokenize .*surrogate.jsonl \\(bytes 0-21\\): 'utf-8' codec can't encode"),
        (["ok.txt"], {"tokenizer": "sentencepiece"}, "unknown tokenizer 'sentencepiece'"),
        (["ok.txt"], {"tokenizer": "gpt2"}, "the gpt2 tokenizer needs its vocabulary files: there is no network"),
        (["ok.txt"], {"tokenizer": "bpe:nowhere.json"}, "nowhere.json does not exist"),
        (["ok.txt"], {"shard_tokens": 0}, "--shard-tokens 0 is too small"),
        (["ok.txt"], {"val_fraction": 1.5}, "--val-fraction 1.5 is out of range"),
    ],
)
def test_bad_input_gets_one_clear_sentence(store, tmp_path, monkeypatch, srcs, kw, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "blob.bin").write_bytes(b"\x89PNG\x00\x00")
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\nnot json\n')
    (tmp_path / "nofield.jsonl").write_text('{"body": "x"}\n')
    (tmp_path / "ok.txt").write_text("some text")
    (tmp_path / "surrogate.jsonl").write_text('{"text": "a \\ud800"}\n')
    with pytest.raises(UserError, match=message) as e:
        prep.prepare(store, srcs, "d", **kw)
    assert str(e.value).endswith(".") and "\n" not in str(e.value)


def test_a_dataset_name_that_is_not_a_plain_word_is_refused(store, corpus):
    with pytest.raises(UserError, match="dataset name '../x' is not allowed"):
        prep.prepare(store, [str(corpus)], "../x")


def test_parallel_prepare_works_from_a_script_without_a_main_guard(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from scheduler.store import Store\nfrom scheduler.data.prepare import prepare\n"
        f"r = prepare(Store.for_state_dir({str(tmp_path / 's')!r}), [{str(STDLIB / 'json')!r}], 'j', workers=2)\n"
        "print(r.workers, r.version)\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "2"


def test_parallel_prepare_works_beside_other_threads(store):
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        beside = prep.prepare(store, [str(STDLIB / "json")], "j", workers=2)
    finally:
        stop.set()
        other.join()
    assert beside.version == prep.prepare(store, [str(STDLIB / "json")], "j", workers=1).version


def test_a_version_prefix_resolves_when_unique_and_is_refused_when_ambiguous(store, corpus):
    made = prep.prepare(store, [str(corpus)], "c")
    assert resolve(store, f"c@{made.version[:4]}")["version"] == made.version
    row = dict(resolve(store, "c"), version=made.version[:4] + "_" * 8)
    store.db["datasets"].insert(row)
    with pytest.raises(UserError, match=f"dataset c@{made.version[:4]} is ambiguous"):
        resolve(store, f"c@{made.version[:4]}")
    assert resolve(store, f"c@{made.version[:5]}")["version"] == made.version  # "_" is no wildcard
