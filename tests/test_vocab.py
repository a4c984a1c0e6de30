"""sentiment.data.vocab: ordering, size limits, specials, encode/decode, and the JSON file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sentiment.errors import SentimentError
from sentiment.data.vocab import PAD, UNK, Vocab, build_vocab, extend_vocab, table_to_vocab_ids

# a token table (as the corpus has it: arbitrary order) and each token's training count
TOKENS = ["the", "zebra", "movie", "apple", "good", "bad", "rare"]
COUNTS = np.array([10, 3, 7, 3, 7, 3, 1])


def test_specials_come_first():
    v = build_vocab(TOKENS, COUNTS)
    assert v.itos[:2] == [PAD, UNK]
    assert v.stoi[PAD] == v.pad_index == 0
    assert v.stoi[UNK] == v.unk_index == 1


def test_order_is_count_descending_then_token():
    v = build_vocab(TOKENS, COUNTS)
    # 10: the; 7: good < movie; 3: apple < bad < zebra; 1: rare
    assert v.itos[2:] == ["the", "good", "movie", "apple", "bad", "zebra", "rare"]
    assert v.counts == [0, 0, 10, 7, 7, 3, 3, 3, 1]


def test_order_does_not_depend_on_table_order():
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(TOKENS))
    shuffled = build_vocab([TOKENS[i] for i in perm], COUNTS[perm])
    assert shuffled == build_vocab(TOKENS, COUNTS)
    assert shuffled.counts == build_vocab(TOKENS, COUNTS).counts


def test_max_size_keeps_the_most_frequent_plus_specials():
    v = build_vocab(TOKENS, COUNTS, max_size=3)
    assert len(v) == 3 + 2
    assert v.itos == [PAD, UNK, "the", "good", "movie"]


def test_max_size_larger_than_table():
    assert len(build_vocab(TOKENS, COUNTS, max_size=1000)) == len(TOKENS) + 2


def test_min_freq_drops_rare_tokens():
    v = build_vocab(TOKENS, COUNTS, min_freq=3)
    assert "rare" not in v.stoi
    assert set(v.itos[2:]) == {"the", "good", "movie", "apple", "bad", "zebra"}
    v = build_vocab(TOKENS, COUNTS, min_freq=7)
    assert v.itos[2:] == ["the", "good", "movie"]


def test_zero_count_tokens_are_never_kept():
    # tokens that occur only outside the training split have count 0
    v = build_vocab(["seen", "unseen"], np.array([2, 0]), min_freq=0)
    assert v.itos == [PAD, UNK, "seen"]


def test_min_freq_and_max_size_together():
    v = build_vocab(TOKENS, COUNTS, max_size=2, min_freq=3)
    assert v.itos[2:] == ["the", "good"]


def test_specials_in_the_table_are_not_duplicated():
    v = build_vocab(["<unk>", "a", "<pad>"], np.array([5, 2, 4]))
    assert v.itos == [PAD, UNK, "a"]


def test_encode_maps_unknown_to_unk():
    v = build_vocab(TOKENS, COUNTS)
    ids = v.encode(["the", "martian", "movie", "", "THE"])
    assert ids == [v.stoi["the"], 1, v.stoi["movie"], 1, 1]


def test_decode_inverts_encode_for_known_tokens():
    v = build_vocab(TOKENS, COUNTS)
    words = ["good", "movie", "the", "rare"]
    assert v.decode(v.encode(words)) == words
    assert v.decode([0, 1]) == [PAD, UNK]
    assert v.decode(np.array(v.encode(words))) == words


def test_vocab_requires_specials_first_and_no_duplicates():
    with pytest.raises(SentimentError):
        Vocab(["a", PAD, UNK])
    with pytest.raises(SentimentError, match="duplicate"):
        Vocab([PAD, UNK, "a", "a"])


def test_equality_is_by_tokens():
    assert Vocab([PAD, UNK, "a"]) == Vocab([PAD, UNK, "a"], [0, 0, 5])
    assert Vocab([PAD, UNK, "a"]) != Vocab([PAD, UNK, "b"])
    assert Vocab([PAD, UNK]) != [PAD, UNK]


def test_save_load_roundtrip(tmp_path: Path):
    v = build_vocab(TOKENS + ["café", "naïve", "😀"], np.concatenate([COUNTS, [4, 2, 2]]))
    path = tmp_path / "sub" / "vocab.json"
    v.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))  # plain JSON a person can read
    assert data["itos"] == v.itos
    assert data["counts"] == v.counts
    assert "café" in path.read_text(encoding="utf-8")  # not \u-escaped
    loaded = Vocab.load(path)
    assert loaded == v
    assert loaded.counts == v.counts
    assert loaded.encode(["café", "nope"]) == v.encode(["café", "nope"])
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temp files left behind


def test_load_without_counts(tmp_path: Path):
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({"itos": [PAD, UNK, "x"]}), encoding="utf-8")
    v = Vocab.load(path)
    assert v.itos == [PAD, UNK, "x"] and v.counts == [0, 0, 0]


def test_load_missing_file(tmp_path: Path):
    path = tmp_path / "missing.json"
    with pytest.raises(SentimentError, match="not found") as e:
        Vocab.load(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize(
    "content",
    [
        b'{"itos": ["<pad>", "<unk>", "a"',  # truncated JSON
        b"",  # empty file
        b'{"counts": [0, 0]}',  # no itos
        b'["<pad>", "<unk>"]',  # a list, not an object
        b'{"itos": 5}',  # itos not a list
        b'{"itos": ["<pad>", "<unk>"], "counts": 3}',  # counts not a list
        b"\xff\xfe\x00garbage",  # not UTF-8
    ],
)
def test_load_corrupt_file(tmp_path: Path, content: bytes):
    path = tmp_path / "vocab.json"
    path.write_bytes(content)
    with pytest.raises(SentimentError) as e:
        Vocab.load(path)
    assert str(path) in str(e.value)


def test_load_file_without_specials(tmp_path: Path):
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({"itos": ["a", "b"]}), encoding="utf-8")
    with pytest.raises(SentimentError):
        Vocab.load(path)


def test_table_to_vocab_ids():
    v = build_vocab(TOKENS, COUNTS, max_size=3)  # the, good, movie
    table = ["movie", "zebra", "the", "good", "never"]
    lookup = table_to_vocab_ids(table, v)
    assert lookup.dtype == np.int32
    assert lookup.tolist() == [v.stoi["movie"], 1, v.stoi["the"], v.stoi["good"], 1]
    # numpy encoding of corpus ids through the lookup equals Vocab.encode of the tokens
    corpus_ids = np.array([0, 2, 1, 4, 3, 3], dtype=np.int32)
    assert lookup[corpus_ids].tolist() == v.encode([table[i] for i in corpus_ids])


def test_table_to_vocab_ids_empty():
    lookup = table_to_vocab_ids([], build_vocab(TOKENS, COUNTS))
    assert lookup.shape == (0,) and lookup.dtype == np.int32


def test_max_size_cuts_through_a_tie_by_token_string():
    tokens = ["a", "d", "b", "c", "e", "f"]
    counts = np.array([5, 3, 3, 3, 1, 3])
    assert build_vocab(tokens, counts, max_size=2).itos[2:] == ["a", "b"]
    assert build_vocab(tokens, counts, max_size=4).itos[2:] == ["a", "b", "c", "d"]
    assert build_vocab(tokens, counts, max_size=6).itos[2:] == ["a", "b", "c", "d", "f", "e"]


# --- the vocab a prepared run gets: training reviews only --------------------------------------------


def test_prepared_vocab_counts_the_training_split_only(tmp_path: Path):
    # A token that occurs only in a review the validation split takes, or only in a test review, is
    # unknown to the run; the same kind of token in a training review is in the vocab; and every count
    # is the token's count over the training reviews alone.
    from conftest import make_imdb
    from sentiment.config import load_config
    from sentiment.data.corpus import load_corpus
    from sentiment.data.prepare import prepare_data
    from sentiment.data.sources import load_source

    data_dir = make_imdb(tmp_path / "data")
    cfg = load_config(None, [f"data.data_dir={data_dir}", "data.workers=1", "data.glove_dim=null",
                             "model.embed_dim=8"]).data
    corpus, _ = load_corpus(data_dir, workers=1)
    idx = load_source(cfg).splits
    planted = {"train": "zztrainonly", "valid": "zzvalidonly", "test": "zztestonly"}
    rows = {name: int(idx[name][3]) for name in planted}  # the 4th review of each split
    for name, row in rows.items():
        path = data_dir / "aclImdb" / corpus.names[row]
        path.write_text(path.read_text(encoding="utf-8") + f" {planted[name]}", encoding="utf-8")

    data = prepare_data(cfg, with_embeddings=False)
    vocab = data.vocab
    assert planted["train"] in vocab.stoi
    assert planted["valid"] not in vocab.stoi and planted["test"] not in vocab.stoi
    for name, split in (("train", data.train), ("valid", data.valid), ("test", data.test)):
        last_token = int(split.ids[split.offsets[4] - 1])  # the planted word ends review 3 of the split
        assert last_token == (vocab.stoi[planted["train"]] if name == "train" else vocab.unk_index), name

    # counts: the corpus ids of the training reviews alone (the planted files are now longer by one token)
    corpus, _ = load_corpus(data_dir, workers=1)
    train_ids = np.concatenate([corpus.ids[corpus.offsets[r]:corpus.offsets[r + 1]] for r in idx["train"]])
    everywhere = np.bincount(corpus.ids, minlength=len(corpus.tokens))
    in_train = np.bincount(train_ids, minlength=len(corpus.tokens))
    for token, count in zip(vocab.itos[2:], vocab.counts[2:]):
        assert count == in_train[corpus.tokens.index(token)], token
    assert any(everywhere[corpus.tokens.index(t)] > c for t, c in zip(vocab.itos[2:], vocab.counts[2:]))
    assert sum(vocab.counts) == len(train_ids)  # no vocab cut here (25k > this corpus): every train token counted


def test_extend_vocab_appends_missing_words_in_order_up_to_the_limit():
    vocab = Vocab([PAD, UNK, "good", "bad"], [0, 0, 5, 3])
    extended = extend_vocab(vocab, ["the", "good", "film", "plot", "bad", "cast"], 3)
    assert extended.itos == [PAD, UNK, "good", "bad", "the", "film", "plot"]  # known words skipped, order kept
    assert extended.counts == [0, 0, 5, 3, 0, 0, 0]  # never seen in training
    assert extend_vocab(vocab, ["the", "film"], 10).itos[4:] == ["the", "film"]  # fewer words than the limit
    assert extend_vocab(vocab, ["the"], 0) is vocab
    assert extend_vocab(vocab, ["the", "the", "film"], 10).itos[4:] == ["the", "film"]  # a repeated word once
