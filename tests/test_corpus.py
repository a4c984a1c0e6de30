"""sentiment.data.corpus: the tokenized corpus, its on-disk cache, and parallel tokenization."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from sentiment.data import corpus as corpus_mod
from sentiment.data.corpus import load_corpus, tokenize_files
from sentiment.errors import DataMissingError
from sentiment.data.imdb import SPLIT_CODES, imdb_dir, list_reviews
from _tokenizer import Tokenizer


def doc_tokens(corpus, i: int) -> list[str]:
    return [corpus.tokens[t] for t in corpus.doc(i)]


def cache_files(cache: Path) -> list[Path]:
    return sorted(cache.glob("corpus-*.npz"))


def assert_same_corpus(a, b) -> None:
    assert a.tokens == b.tokens
    for name in ("ids", "offsets", "labels", "ratings", "splits"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        assert np.array_equal(x, y), name
    assert a.names == b.names
    assert a.invalid_utf8 == b.invalid_utf8


@pytest.fixture
def built(tiny_data: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    corpus, cached = load_corpus(tiny_data, cache_dir=cache, workers=1)
    assert cached is False
    return tiny_data, cache, corpus


def test_shape_labels_and_splits(built):
    data, _, corpus = built
    assert len(corpus) == 4 * 60
    reviews = list_reviews(imdb_dir(data))
    root = imdb_dir(data)
    assert corpus.names == [os.path.relpath(r.path, root) for r in reviews]
    assert corpus.labels.tolist() == [r.label for r in reviews]
    assert corpus.ratings.tolist() == [r.rating for r in reviews]
    assert len(corpus.select("train")) == 120 and len(corpus.select("test")) == 120
    assert (corpus.labels[corpus.select("train")] == 1).sum() == 60
    assert (corpus.labels[corpus.select("test")] == 0).sum() == 60
    assert set(corpus.splits.tolist()) == {SPLIT_CODES["train"], SPLIT_CODES["test"]}
    for i in corpus.select("test"):
        assert corpus.names[i].startswith("test" + os.sep)
    assert corpus.ids.dtype == np.int32 and corpus.offsets.dtype == np.int64
    assert corpus.offsets[0] == 0 and corpus.offsets[-1] == len(corpus.ids)
    assert np.array_equal(corpus.lengths(), np.diff(corpus.offsets))
    assert len(set(corpus.tokens)) == len(corpus.tokens)  # a table of distinct tokens
    assert corpus.invalid_utf8 == 0


def test_documents_decode_to_the_tokenizer_output(built):
    data, _, corpus = built
    tok = Tokenizer()
    root = imdb_dir(data)
    for i in range(len(corpus)):
        text = (root / corpus.names[i]).read_text(encoding="utf-8")
        assert doc_tokens(corpus, i) == tok(text), corpus.names[i]
    # the generated reviews carry <br /> breaks and capitals; neither survives
    assert "<br" not in corpus.tokens and "br" not in corpus.tokens
    assert all(t == t.lower() for t in corpus.tokens)


def test_second_load_comes_from_the_cache(built):
    data, cache, corpus = built
    assert len(cache_files(cache)) == 1
    again, cached = load_corpus(data, cache_dir=cache, workers=1)
    assert cached is True
    assert_same_corpus(again, corpus)


def test_cache_survives_moving_the_data_directory(built, tmp_path: Path):
    data, cache, corpus = built
    moved = tmp_path / "moved-data"
    data.rename(moved)
    again, cached = load_corpus(moved, cache_dir=cache, workers=1)
    assert cached is True
    assert_same_corpus(again, corpus)


def test_no_cache_dir_never_caches(tiny_data: Path, tmp_path: Path):
    a, cached_a = load_corpus(tiny_data, workers=1)
    b, cached_b = load_corpus(tiny_data, workers=1)
    assert cached_a is False and cached_b is False
    assert_same_corpus(a, b)
    assert not list(tiny_data.rglob("*.npz"))


def test_changed_review_invalidates_the_cache(built):
    data, cache, corpus = built
    i = 5
    path = imdb_dir(data) / corpus.names[i]
    path.write_text("A completely Different review, with xylophone!<br />Yes.", encoding="utf-8")
    # size changed too; bump the mtime anyway so coarse file-system clocks cannot hide the change
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again, cached = load_corpus(data, cache_dir=cache, workers=1)
    assert cached is False
    assert doc_tokens(again, i) == ["a", "completely", "different", "review", ",", "with", "xylophone", "!",
                                    "yes", "."]
    assert "xylophone" in again.tokens and "xylophone" not in corpus.tokens
    # every other review is unchanged
    for j in (0, 4, 6, len(corpus) - 1):
        assert doc_tokens(again, j) == doc_tokens(corpus, j)
    # and the new corpus is what the cache serves now
    third, cached = load_corpus(data, cache_dir=cache, workers=1)
    assert cached is True
    assert_same_corpus(third, again)


def test_same_size_rewrite_with_new_mtime_invalidates_the_cache(built):
    data, cache, corpus = built
    path = imdb_dir(data) / corpus.names[0]
    text = path.read_text(encoding="utf-8")
    swapped = text.swapcase()  # same length, different content
    assert len(swapped.encode()) == len(text.encode()) and swapped != text
    path.write_text(swapped, encoding="utf-8")
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    _, cached = load_corpus(data, cache_dir=cache, workers=1)
    assert cached is False


def test_lowercase_setting_has_its_own_cache(built):
    data, cache, corpus = built
    cased, cached = load_corpus(data, cache_dir=cache, lowercase=False, workers=1)
    assert cached is False
    assert len(cache_files(cache)) == 2
    assert any(t != t.lower() for t in cased.tokens)
    text = (imdb_dir(data) / cased.names[3]).read_text(encoding="utf-8")
    assert doc_tokens(cased, 3) == Tokenizer(lowercase=False)(text)
    assert [t.lower() for t in doc_tokens(cased, 3)] == doc_tokens(corpus, 3)
    # both are served from the cache afterwards, each with its own tokens
    lower_again, c1 = load_corpus(data, cache_dir=cache, lowercase=True, workers=1)
    cased_again, c2 = load_corpus(data, cache_dir=cache, lowercase=False, workers=1)
    assert c1 and c2
    assert_same_corpus(lower_again, corpus)
    assert_same_corpus(cased_again, cased)


@pytest.mark.parametrize("keep", [0, 100, 0.5])
def test_truncated_cache_is_rebuilt(built, keep):
    data, cache, corpus = built
    (path,) = cache_files(cache)
    raw = path.read_bytes()
    n = int(len(raw) * keep) if isinstance(keep, float) else keep
    path.write_bytes(raw[:n])
    again, cached = load_corpus(data, cache_dir=cache, workers=1)
    assert cached is False
    assert_same_corpus(again, corpus)
    # the rebuilt cache is whole again
    assert cache_files(cache) == [path] and path.read_bytes() == raw
    _, cached = load_corpus(data, cache_dir=cache, workers=1)
    assert cached is True


def test_garbage_cache_is_rebuilt(built):
    data, cache, corpus = built
    (path,) = cache_files(cache)
    path.write_bytes(b"this is not an npz file at all" * 10)
    again, cached = load_corpus(data, cache_dir=cache, workers=1)
    assert cached is False
    assert_same_corpus(again, corpus)


def test_inconsistent_cache_is_rebuilt(built):
    data, cache, corpus = built
    (path,) = cache_files(cache)
    # a well-formed npz whose ids point past the token table
    bad = corpus_mod.TokenizedCorpus(
        tokens=corpus.tokens[:3], ids=corpus.ids, offsets=corpus.offsets, labels=corpus.labels,
        ratings=corpus.ratings, splits=corpus.splits, names=corpus.names,
    )
    corpus_mod._save(bad, path)
    again, cached = load_corpus(data, cache_dir=cache, workers=1)
    assert cached is False
    assert_same_corpus(again, corpus)


def test_invalid_utf8_is_counted_and_replaced(tiny_data: Path, tmp_path: Path):
    root = imdb_dir(tiny_data)
    bad_path = root / "train" / "pos" / "1000_9.txt"
    bad_path.write_bytes(b"Fine caf\xe9 movie \xff\xfe great")  # Latin-1 bytes, not UTF-8
    corpus, _ = load_corpus(tiny_data, cache_dir=tmp_path / "cache", workers=1)
    assert corpus.invalid_utf8 == 1
    i = corpus.names.index(os.path.relpath(bad_path, root))
    assert corpus.labels[i] == 1 and corpus.ratings[i] == 9
    expected = Tokenizer()(b"Fine caf\xe9 movie \xff\xfe great".decode("utf-8", errors="replace"))
    assert doc_tokens(corpus, i) == expected
    assert "fine" in expected and "great" in expected and any("\ufffd" in t for t in expected)
    # the count survives the cache
    again, cached = load_corpus(tiny_data, cache_dir=tmp_path / "cache", workers=1)
    assert cached is True and again.invalid_utf8 == 1


def test_empty_review_file(tiny_data: Path, tmp_path: Path):
    root = imdb_dir(tiny_data)
    # id 1000 sorts last among train/pos, so review i is followed by train/neg/0
    (root / "train" / "pos" / "1000_9.txt").write_text("<br /><br />  \n", encoding="utf-8")
    corpus, _ = load_corpus(tiny_data, workers=1)
    i = corpus.names.index(os.path.join("train", "pos", "1000_9.txt"))
    assert corpus.names[i + 1].startswith(os.path.join("train", "neg", "0_"))
    assert corpus.lengths()[i] == 0
    assert doc_tokens(corpus, i) == []
    assert doc_tokens(corpus, i - 1) == Tokenizer()((root / corpus.names[i - 1]).read_text(encoding="utf-8"))
    assert doc_tokens(corpus, i + 1) == Tokenizer()((root / corpus.names[i + 1]).read_text(encoding="utf-8"))


def test_missing_data(tmp_path: Path):
    with pytest.raises(DataMissingError, match="make download-data"):
        load_corpus(tmp_path / "nothing", cache_dir=tmp_path / "cache")


def test_tokenize_files_parallel_equals_serial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    if (os.cpu_count() or 1) < 2:
        pytest.skip("tokenize_files uses at most os.cpu_count() workers")
    texts = [
        "The U.S. film wasn't great.<br /><br />10/10 :-)",
        "I'm gonna say: DON'T watch it!",
        "café naïve\xa0Zoë résumé",
        "",
        "The U.S. film wasn't great.",  # shares chunks with the first
        "e-mail me@x.org or see https://imdb.com/x",
        "$5.99... really?!",
    ]
    paths = []
    for i in range(40):
        path = tmp_path / f"{i}.txt"
        path.write_text(texts[i % len(texts)] + f" review{i % 9}", encoding="utf-8")
        paths.append(str(path))
    (tmp_path / "bad.txt").write_bytes(b"broken \xff bytes")
    paths.append(str(tmp_path / "bad.txt"))

    monkeypatch.setattr(corpus_mod, "_PARALLEL_MIN_DOCS", 1)
    calls = []
    real_pool = corpus_mod.multiprocessing.get_context

    def spy(method):
        calls.append(method)
        return real_pool(method)

    monkeypatch.setattr(corpus_mod.multiprocessing, "get_context", spy)
    par = tokenize_files(paths, lowercase=True, workers=2)
    assert calls, "workers=2 did not start a pool"
    pools = len(calls)  # one per phase: reading and splitting, then tokenizing distinct chunks
    ser = tokenize_files(paths, lowercase=True, workers=1)
    assert len(calls) == pools, "workers=1 started a pool"

    # the token table's numbering depends on how chunks were dealt to workers; the reviews' tokens don't
    assert sorted(par[0]) == sorted(ser[0]) and len(set(par[0])) == len(par[0])
    assert par[1].dtype == ser[1].dtype == np.int32
    assert [par[0][t] for t in par[1]] == [ser[0][t] for t in ser[1]]
    assert np.array_equal(par[2], ser[2]) and par[2].dtype == ser[2].dtype == np.int64
    assert par[3] == ser[3] == 1

    # and both are right
    tokens, ids, offsets, _ = par
    tok = Tokenizer()
    for k, path in enumerate(paths):
        text = Path(path).read_bytes().decode("utf-8", errors="replace")
        assert [tokens[t] for t in ids[offsets[k]:offsets[k + 1]]] == tok(text)


def test_tokenize_files_single_file(tmp_path: Path):
    path = tmp_path / "one.txt"
    path.write_text("Hello hello, HELLO!", encoding="utf-8")
    tokens, ids, offsets, bad = tokenize_files([str(path)], workers=1)
    assert tokens == ["hello", ",", "!"]
    assert ids.tolist() == [0, 0, 1, 0, 2]
    assert offsets.tolist() == [0, 5] and bad == 0


@pytest.mark.parametrize("texts", [[], ["<br /><br />", "  \n"]], ids=["no-files", "blank-files"])
def test_tokenize_files_without_any_text(tmp_path: Path, texts: list[str]):
    paths = []
    for k, text in enumerate(texts):
        (tmp_path / f"{k}.txt").write_text(text, encoding="utf-8")
        paths.append(str(tmp_path / f"{k}.txt"))
    tokens, ids, offsets, bad = tokenize_files(paths, workers=1)
    assert tokens == [] and len(ids) == 0 and offsets.tolist() == [0] * (len(texts) + 1) and bad == 0
