"""sentiment.data.sources: grouped_split (stratified, seeded, duplicates on one side) and load_source on labeled
files: the label space, the test-then-valid carve, the tokenized cache, empty rows and split membership."""

from __future__ import annotations

import csv
import random
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from sentiment.config import DataConfig
from sentiment.errors import SentimentError
from sentiment.data.readers import read_table
from sentiment.data.sources import grouped_split, load_source

CUES = {
    "quality": ["broken", "cracked", "flimsy", "faulty", "scratched"],
    "billing": ["invoice", "charged", "refund", "overcharged", "payment"],
    "delivery": ["courier", "parcel", "late", "shipping", "arrived"],
}
FILLER = ["the", "my", "order", "was", "and", "it", "this", "again", "really", "very", "item", "today"]


def texts_of(n_per_class: dict[str, int], seed: int = 0) -> list[dict[str, str]]:
    """Rows of plain lowercase words (so spaCy's tokens are the words themselves), shuffled."""
    rng = random.Random(seed)
    rows = []
    for label, n in n_per_class.items():
        for _ in range(n):
            words = [rng.choice(FILLER) for _ in range(rng.randint(3, 8))]
            words.insert(rng.randrange(len(words) + 1), rng.choice(CUES[label]))
            rows.append({"text": " ".join(words), "label": label})
    rng.shuffle(rows)
    return rows


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch):
    monkeypatch.delenv("SENTIMENT_CACHE_DIR", raising=False)  # the cache lives in each test's data_dir


def config(tmp_path: Path, train: Path, **kw) -> DataConfig:
    return DataConfig(dataset="files", train_file=str(train), data_dir=str(tmp_path / "data"), workers=1, **kw)


def split_texts(source, name: str) -> list[str]:
    """The texts of a split's rows, rebuilt from their token ids."""
    out = []
    for row in source.splits[name].tolist():
        ids = source.ids[source.offsets[row] : source.offsets[row + 1]]
        out.append(" ".join(source.tokens[i] for i in ids))
    return out


# ---------------------------------------------------------------- grouped_split
def _grouped_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """900 rows of 3 unbalanced classes (500/300/100) in groups of 1-4 exact duplicates, a few mixing labels."""
    rng = random.Random(seed)
    labels, groups, g = [], [], 0
    for c, n in enumerate((500, 300, 100)):
        left = n
        while left:
            size = min(left, rng.choice([1, 1, 1, 1, 2, 3, 4]))
            labels += [c] * size
            groups += [g] * size
            left -= size
            g += 1
    labels, groups = np.array(labels), np.array(groups, dtype=np.uint64)
    for row in rng.sample(range(len(labels)), 20):  # the same text labeled differently elsewhere
        groups[row] = groups[rng.randrange(len(labels))]
    order = np.random.default_rng(seed).permutation(len(labels))
    return labels[order], groups[order]


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_grouped_split_is_stratified_within_two_rows_per_class(seed):
    labels, groups = _grouped_data(seed)
    kept, carved = grouped_split(labels, groups, 0.2, seed=seed, num_classes=3)
    assert sorted(kept.tolist() + carved.tolist()) == list(range(len(labels)))  # a partition
    counts, carved_counts = np.bincount(labels, minlength=3), np.bincount(labels[carved], minlength=3)
    # a carve drawn at random, unstratified, misses the 100-row class's 20 by ~4 rows (one sd) and more
    assert np.abs(carved_counts - 0.2 * counts).max() <= 2, (carved_counts, counts)


def test_grouped_split_is_seeded():
    labels, groups = _grouped_data()
    a = grouped_split(labels, groups, 0.1, seed=7, num_classes=3)
    b = grouped_split(labels, groups, 0.1, seed=7, num_classes=3)
    c = grouped_split(labels, groups, 0.1, seed=8, num_classes=3)
    assert np.array_equal(a[1], b[1]) and np.array_equal(a[0], b[0])
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("seed", range(6))
def test_duplicates_never_straddle_the_carve(seed):
    labels, groups = _grouped_data(seed)
    kept, carved = grouped_split(labels, groups, 0.3, seed=seed, num_classes=3)
    assert not set(groups[kept].tolist()) & set(groups[carved].tolist())
    # and the carve did take duplicated texts, not only singletons
    sizes = Counter(groups.tolist())
    assert any(sizes[g] > 1 for g in groups[carved].tolist())


def test_nothing_is_carved_at_fraction_zero():
    labels, groups = _grouped_data()
    kept, carved = grouped_split(labels, groups, 0.0, seed=1, num_classes=3)
    assert len(carved) == 0 and kept.tolist() == list(range(len(labels)))


# ---------------------------------------------------------------- load_source: carving
def test_test_is_carved_first_then_valid_from_what_is_left(tmp_path):
    counts = {"quality": 120, "billing": 80, "delivery": 40}
    train = write_csv(tmp_path / "train.csv", texts_of(counts))
    small = load_source(config(tmp_path, train, test_fraction=0.25, valid_fraction=0.1))
    large = load_source(config(tmp_path, train, test_fraction=0.25, valid_fraction=0.4))
    # the test split does not depend on how much validation takes afterwards
    assert np.array_equal(small.splits["test"], large.splits["test"])
    assert not np.array_equal(small.splits["valid"], large.splits["valid"])
    names = small.label_space.names
    for source, vf in ((small, 0.1), (large, 0.4)):
        test = np.bincount(source.labels[source.splits["test"]], minlength=3)
        valid = np.bincount(source.labels[source.splits["valid"]], minlength=3)
        total = np.array([counts[n] for n in names])
        assert np.abs(test - 0.25 * total).max() <= 1
        assert np.abs(valid - vf * (total - test)).max() <= 1  # a fraction of what test left, not of the file
        every = np.concatenate([source.splits[n] for n in ("train", "valid", "test")])
        assert sorted(every.tolist()) == list(range(sum(counts.values())))  # disjoint, and all rows used


def test_the_split_seed_moves_the_split(tmp_path):
    train = write_csv(tmp_path / "train.csv", texts_of({"quality": 50, "billing": 50}))
    a = load_source(config(tmp_path, train, split_seed=1))
    again = load_source(config(tmp_path, train, split_seed=1))
    b = load_source(config(tmp_path, train, split_seed=2))
    assert all(np.array_equal(a.splits[n], again.splits[n]) for n in a.splits)
    assert not np.array_equal(a.splits["test"], b.splits["test"])


def test_no_test_split_at_fraction_zero(tmp_path):
    train = write_csv(tmp_path / "train.csv", texts_of({"quality": 30, "billing": 30}))
    source = load_source(config(tmp_path, train, test_fraction=0.0))
    assert len(source.splits["test"]) == 0
    assert len(source.splits["train"]) + len(source.splits["valid"]) == 60


# ---------------------------------------------------------------- load_source: labels
def test_label_space_is_the_data_labels_sorted(tmp_path):
    rows = texts_of({"quality": 30, "billing": 30, "delivery": 30})
    assert rows[0]["label"] != "billing"  # first appearance is not the sorted order
    train = write_csv(tmp_path / "train.csv", rows)
    source = load_source(config(tmp_path, train))
    assert source.label_space.names == ("billing", "delivery", "quality")
    file_labels = read_table(train).labels
    for name in ("train", "valid", "test"):
        expected = [file_labels[r] for r in source.membership[name].tolist()]
        assert [source.label_space.names[i] for i in source.labels[source.splits[name]]] == expected


def test_numeric_labels_sort_as_numbers(tmp_path):
    rows = texts_of({"quality": 20, "billing": 20, "delivery": 20})
    for row in rows:
        row["label"] = {"quality": "10", "billing": "2", "delivery": "1"}[row["label"]]
    source = load_source(config(tmp_path, write_csv(tmp_path / "stars.csv", rows)))
    assert source.label_space.names == ("1", "2", "10")


def test_explicit_labels_order_is_honoured(tmp_path):
    train = write_csv(tmp_path / "train.csv", texts_of({"quality": 30, "billing": 30, "delivery": 30}))
    order = ["quality", "delivery", "billing"]
    source = load_source(config(tmp_path, train, labels=order))
    assert source.label_space.names == tuple(order)
    file_labels = read_table(train).labels
    rows = source.membership["train"].tolist()
    assert [order[i] for i in source.labels[source.splits["train"]]] == [file_labels[r] for r in rows]


@pytest.mark.parametrize("labels, needles", [
    (["billing", "quality"], ["lacks 'delivery'"]),
    (["billing", "quality", "delivery", "returns"], ["names 'returns'", "which no training row"]),
])
def test_explicit_labels_that_do_not_match_the_data(tmp_path, labels, needles):
    train = write_csv(tmp_path / "train.csv", texts_of({"quality": 10, "billing": 10, "delivery": 10}))
    with pytest.raises(SentimentError) as info:
        load_source(config(tmp_path, train, labels=labels))
    for needle in needles:
        assert needle in str(info.value)


# ---------------------------------------------------------------- load_source: the cache
def test_second_load_comes_from_the_cache_and_is_the_same(tmp_path):
    train = write_csv(tmp_path / "train.csv", texts_of({"quality": 40, "billing": 40}))
    first = load_source(config(tmp_path, train))
    second = load_source(config(tmp_path, train))
    assert first.stats["corpus_from_cache"] is False
    assert second.stats["corpus_from_cache"] is True
    assert second.tokens == first.tokens
    for a, b in ((first.ids, second.ids), (first.offsets, second.offsets), (first.labels, second.labels)):
        assert np.array_equal(a, b)
    assert all(np.array_equal(first.splits[n], second.splits[n]) for n in first.splits)
    assert second.label_space == first.label_space


def test_normalize_text_is_applied_and_keyed_in_the_cache(tmp_path):
    rows = [dict(r, text=r["text"] + " don\u2019t &amp;") for r in texts_of({"quality": 30, "billing": 30})]
    train = write_csv(tmp_path / "train.csv", rows)
    as_written = load_source(config(tmp_path, train))
    normalized = load_source(config(tmp_path, train, normalize_text=True))
    assert normalized.stats["corpus_from_cache"] is False  # its own cache entry, not the other's tokens
    assert {"n\u2019t", "amp"} <= set(as_written.tokens) and "n't" not in as_written.tokens
    assert "n't" in normalized.tokens and "&" in normalized.tokens
    assert not {"n\u2019t", "amp"} & set(normalized.tokens)


def test_changed_file_content_invalidates_the_cache(tmp_path):
    train = write_csv(tmp_path / "train.csv", texts_of({"quality": 40, "billing": 40}))
    load_source(config(tmp_path, train))
    rows = texts_of({"quality": 40, "billing": 40, "delivery": 40}, seed=1)
    write_csv(train, rows)  # same path, new bytes
    changed = load_source(config(tmp_path, train))
    assert changed.stats["corpus_from_cache"] is False
    assert changed.label_space.names == ("billing", "delivery", "quality")
    assert len(changed.labels) == 120
    assert load_source(config(tmp_path, train)).stats["corpus_from_cache"] is True


def test_a_cached_copy_is_reported_under_its_own_path(tmp_path):
    """The cache is keyed by content: a copy elsewhere hits it, but messages must name the copy in use."""
    rows = texts_of({"quality": 20, "billing": 20})
    first = write_csv(tmp_path / "a" / "train.csv", rows)
    copy = tmp_path / "b" / "train.csv"
    copy.parent.mkdir()
    shutil.copy(first, copy)
    load_source(config(tmp_path, first))
    source = load_source(config(tmp_path, copy))
    assert source.stats["corpus_from_cache"] is True
    assert source.stats["source"] == str(copy)
    # and an error in a cached copy of a valid file names that copy
    write_csv(tmp_path / "a" / "valid.csv", [{"text": "a broken item", "label": "returns"}])
    shutil.copy(tmp_path / "a" / "valid.csv", tmp_path / "b" / "valid.csv")
    with pytest.raises(SentimentError):
        load_source(config(tmp_path, first, valid_file=str(tmp_path / "a" / "valid.csv")))
    with pytest.raises(SentimentError) as info:
        load_source(config(tmp_path, copy, valid_file=str(tmp_path / "b" / "valid.csv")))
    assert str(info.value).startswith(f"{tmp_path / 'b' / 'valid.csv'}: line 2: label 'returns'")


# ---------------------------------------------------------------- load_source: rows
def test_empty_text_rows_are_skipped_and_counted(tmp_path):
    rows = texts_of({"quality": 30, "billing": 30})
    blank_rows = [3, 10, 11, 40]
    for r in blank_rows:
        rows[r]["text"] = "   " if r % 2 else ""
    rows[21]["text"] = rows[20]["text"]  # one exact duplicate among the texts
    train = write_csv(tmp_path / "train.csv", rows)
    source = load_source(config(tmp_path, train))
    assert source.stats["empty_texts_skipped"] == len(blank_rows)
    # repeats are counted among the texts only: two "" (or "   ") rows are empty rows, not a repeated text
    texts = [r["text"] for i, r in enumerate(rows) if i not in blank_rows]
    assert source.stats["duplicate_texts"] == len(texts) - len(set(texts)) >= 1
    used = np.concatenate([source.membership[n] for n in ("train", "valid", "test")]).tolist()
    assert sorted(used) == [r for r in range(len(rows)) if r not in blank_rows]


def test_membership_rows_map_back_to_the_file_rows(tmp_path):
    train = write_csv(tmp_path / "train.csv", texts_of({"quality": 40, "billing": 40, "delivery": 40}))
    source = load_source(config(tmp_path, train))
    table = read_table(train)
    for name in ("train", "valid", "test"):
        assert len(source.membership[name]) == len(source.splits[name]) > 0
        assert split_texts(source, name) == [table.texts[r] for r in source.membership[name].tolist()]


def test_membership_of_given_split_files_numbers_their_own_rows(tmp_path):
    train = write_csv(tmp_path / "train.csv", texts_of({"quality": 30, "billing": 30}, seed=1))
    valid = write_csv(tmp_path / "valid.csv", texts_of({"quality": 5, "billing": 6}, seed=2))
    test = write_csv(tmp_path / "test.csv", texts_of({"quality": 7, "billing": 4}, seed=3))
    source = load_source(config(tmp_path, train, valid_file=str(valid), test_file=str(test)))
    assert source.stats["valid_split"] == "given"
    assert len(source.splits["train"]) == 60  # nothing carved from train when both files are given
    for name, path in (("train", train), ("valid", valid), ("test", test)):
        table = read_table(path)
        assert source.membership[name].tolist() == list(range(len(table)))
        assert split_texts(source, name) == table.texts
        assert [source.label_space.names[i] for i in source.labels[source.splits[name]]] == table.labels


def test_a_label_only_in_a_given_split_file_is_an_error_naming_its_line(tmp_path):
    train = write_csv(tmp_path / "train.csv", texts_of({"quality": 10, "billing": 10}))
    test = write_csv(tmp_path / "test.csv", [{"text": "a late parcel", "label": "billing"},
                                             {"text": "the courier", "label": "delivery"}])
    with pytest.raises(SentimentError) as info:
        load_source(config(tmp_path, train, test_file=str(test)))
    assert str(info.value).startswith(f"{test}: line 3: label 'delivery' in the test split is not a training label")


# ---------------------------------------------------------------- one label normalisation (issue 23 #1)
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_labels_that_mean_one_class_are_one_class_in_every_format(tmp_path, suffix):
    rows = texts_of({"quality": 40, "billing": 40})
    spell = {"quality": ["1", "1.0", " 1 "], "billing": ["0", "0.0", "+0"]}
    for i, row in enumerate(rows):
        row["label"] = spell[row["label"]][i % 3]
    if suffix == ".csv":
        train = write_csv(tmp_path / "train.csv", rows)
    else:
        import json

        train = tmp_path / "train.jsonl"
        train.write_text("".join(json.dumps({"text": r["text"], "label": float(r["label"]) if i % 2 else r["label"]})
                                 + "\n" for i, r in enumerate(rows)), encoding="utf-8")
    source = load_source(config(tmp_path, train))
    assert source.label_space.names == ("0", "1")
    if suffix == ".csv":
        # surrounding space is dropped as the file is read; the rest is merged and reported
        assert source.stats["labels_merged"] == {"1": ["1", "1.0"], "0": ["+0", "0", "0.0"]}


def test_labels_differing_in_case_and_space_are_one_class(tmp_path):
    rows = texts_of({"quality": 40, "billing": 40})
    for i, row in enumerate(rows):
        row["label"] = {"quality": ["Positive", "positive", "POSITIVE "], "billing": ["negative", "Negative", "negative"]}[
            row["label"]][i % 3]
    source = load_source(config(tmp_path, write_csv(tmp_path / "train.csv", rows)))
    assert source.label_space.names == ("negative", "positive")
    assert source.stats["labels_merged"]["positive"] == ["POSITIVE", "Positive", "positive"]


def test_a_run_trained_with_1_and_1_0_as_two_classes_maps_its_data_as_stored(tmp_path):
    from sentiment.data.labels import LabelSpace

    rows = texts_of({"quality": 20, "billing": 20, "delivery": 20})
    names = {"quality": "1", "billing": "1.0", "delivery": "0"}
    for row in rows:
        row["label"] = names[row["label"]]
    old = LabelSpace(("0", "1", "1.0"))  # what such a run stored in labels.json before labels were normalised
    source = load_source(config(tmp_path, write_csv(tmp_path / "train.csv", rows)), old)
    got = [old.names[i] for i in source.labels[source.splits["train"]]]
    file_labels = read_table(tmp_path / "train.csv").labels
    assert got == [file_labels[r] for r in source.membership["train"].tolist()]


# ---------------------------------------------------------------- faults (issue 23 #7, #9, #10; smaller)
def write_pos_neg(root: Path, n: int = 30) -> Path:
    for folder, cue in (("pos", "great"), ("neg", "awful")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / folder / f"{i}_5.txt").write_text(f"a {cue} film number {i}", encoding="utf-8")
    return root


def test_a_pos_neg_directory_is_cached_by_content_not_name_size_mtime(tmp_path):
    import os

    root = write_pos_neg(tmp_path / "reviews")
    first = load_source(config(tmp_path, root))
    assert "great" in first.tokens and "super" not in first.tokens
    f = root / "pos" / "3_5.txt"
    st = f.stat()
    f.write_text("a super film number 3", encoding="utf-8")  # the same size
    assert f.stat().st_size == st.st_size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # the mtime kept
    second = load_source(config(tmp_path, root))
    assert second.stats["corpus_from_cache"] is False
    assert "super" in second.tokens


def test_a_splits_cache_entry_with_rows_out_of_range_is_carved_again(tmp_path):
    train = write_csv(tmp_path / "train.csv", texts_of({"quality": 30, "billing": 30}))
    first = load_source(config(tmp_path, train))
    [entry] = (tmp_path / "data" / "cache").glob("splits-*.npz")
    np.savez(entry, counts=np.array([0, 0]), train=np.array([0, 10_000]), valid=np.array([1]), test=np.array([2]))
    again = load_source(config(tmp_path, train))
    assert all(np.array_equal(first.splits[n], again.splits[n]) for n in first.splits)


def test_a_cache_dir_that_is_a_file_is_one_error(tmp_path, monkeypatch):
    blocker = tmp_path / "cachefile"
    blocker.write_text("not a directory")
    monkeypatch.setenv("SENTIMENT_CACHE_DIR", str(blocker))
    train = write_csv(tmp_path / "train.csv", texts_of({"quality": 30, "billing": 30}))
    with pytest.raises(SentimentError, match="SENTIMENT_CACHE_DIR .* is a file, not a directory"):
        load_source(config(tmp_path, train))


def test_a_named_pipe_as_train_file_is_refused_at_once(tmp_path):
    import os

    fifo = tmp_path / "train.csv"
    os.mkfifo(fifo)
    with pytest.raises(SentimentError, match="not a regular file"):
        load_source(config(tmp_path, fifo))


def test_every_text_empty_says_so(tmp_path):
    rows = [{"text": "", "label": "pos" if i % 2 else "neg"} for i in range(20)]
    with pytest.raises(SentimentError, match="every row's text \\(column 'text'\\) is empty"):
        load_source(config(tmp_path, write_csv(tmp_path / "train.csv", rows)))


# ---------------------------------------------------------------- load_source: missing-value labels
@pytest.mark.parametrize("missing", ["NaN", "NA", "N/A", "null", "None", " nan "])
def test_a_missing_value_label_is_an_error_naming_the_row_not_a_class(tmp_path, missing):
    rows = texts_of({"quality": 15, "billing": 15})
    rows[7]["label"] = missing
    train = write_csv(tmp_path / "train.csv", rows)
    with pytest.raises(SentimentError) as info:
        load_source(config(tmp_path, train))
    assert str(info.value).startswith(f"{train}: line 9: label {missing.strip()!r} in column 'label' is a missing value")


def test_a_missing_value_label_in_a_given_valid_file_names_its_row(tmp_path):
    train = write_csv(tmp_path / "train.csv", texts_of({"quality": 15, "billing": 15}))
    valid_rows = texts_of({"quality": 5, "billing": 5}, seed=1)
    valid_rows[3]["label"] = "NaN"
    valid = write_csv(tmp_path / "valid.csv", valid_rows)
    with pytest.raises(SentimentError, match=rf"^{valid}: line 5: label 'NaN' in column 'label' is a missing value"):
        load_source(config(tmp_path, train, valid_file=str(valid)))


def test_a_missing_value_spelling_listed_in_data_labels_is_a_class(tmp_path):
    rows = texts_of({"quality": 15, "billing": 15, "delivery": 15})
    for row in rows:
        row["label"] = "None" if row["label"] == "delivery" else row["label"]
    source = load_source(config(tmp_path, write_csv(tmp_path / "train.csv", rows),
                                labels=["billing", "quality", "None"]))
    assert source.label_space.names == ("billing", "quality", "None")
    assert sorted(np.unique(source.labels).tolist()) == [0, 1, 2]
