"""sentiment.data.hf: Hugging Face datasets (save_to_disk directories, and the Hub with the network faked or off)
read into Tables, with one-line errors for everything a user can get wrong."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value  # noqa: E402

from sentiment.config import DataConfig  # noqa: E402
from sentiment.errors import SentimentError  # noqa: E402
from sentiment.data.hf import load_hf_tables  # noqa: E402

CLASSES = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})


def _cfg(dataset: str | Path, **kw) -> DataConfig:
    return DataConfig(dataset="hf", hf_dataset=str(dataset), **kw)


def _classlabel_dict(root: Path, texts: list[str | None] | None = None) -> Path:
    """A DatasetDict like stanfordnlp/imdb: ClassLabel 0/1 = neg/pos, splits train, test and unsupervised."""
    texts = texts or ["a dull film", "a great film", None]
    splits = DatasetDict({
        "train": Dataset.from_dict({"text": texts, "label": [0, 1, 1][:len(texts)]}, features=CLASSES),
        "test": Dataset.from_dict({"text": ["bad", "good"], "label": [0, 1]}, features=CLASSES),
        "unsupervised": Dataset.from_dict({"text": ["who knows"], "label": [-1]}, features=CLASSES),
    })
    splits.save_to_disk(str(root))
    return root


def _error(cfg: DataConfig) -> str:
    with pytest.raises(SentimentError) as info:
        load_hf_tables(cfg)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_classlabel_dict_from_disk(tmp_path):
    path = _classlabel_dict(tmp_path / "imdb")
    tables, prints = load_hf_tables(_cfg(path, hf_test_split="test"))
    assert set(tables) == set(prints) == {"train", "test"}
    train = tables["train"]
    assert train.texts == ["a dull film", "a great film", ""]  # None text -> "", for the caller to count
    assert train.labels == ["neg", "pos", "pos"]
    assert train.lines == [1, 2, 3]
    assert train.source == f"{path}[train]"
    assert tables["test"].labels == ["neg", "pos"]
    assert tables["test"].source == f"{path}[test]"
    assert prints["train"] != prints["test"]


def test_valid_split_only_when_asked(tmp_path):
    path = _classlabel_dict(tmp_path / "d")
    tables, _ = load_hf_tables(_cfg(path, hf_train_split="test", hf_valid_split="train"))
    assert set(tables) == {"train", "valid"}
    assert tables["train"].texts == ["bad", "good"]
    assert tables["valid"].labels == ["neg", "pos", "pos"]


def test_string_int_bool_float_labels(tmp_path):
    path = tmp_path / "d"
    DatasetDict({
        "train": Dataset.from_dict({"text": ["x", "y"], "label": ["positive", "negative"]}),
        "ints": Dataset.from_dict({"text": ["x", "y"], "label": [1, 0]}),
        "bools": Dataset.from_dict({"text": ["x", "y"], "label": [True, False]}),
        "floats": Dataset.from_dict({"text": ["x", "y"], "label": [1.0, 2.5]}),
    }).save_to_disk(str(path))
    assert load_hf_tables(_cfg(path))[0]["train"].labels == ["positive", "negative"]
    got = {split: load_hf_tables(_cfg(path, hf_train_split=split))[0]["train"].labels
           for split in ("ints", "bools", "floats")}
    # as the file readers spell them: JSON true -> "true", 1.0 -> "1"
    assert got == {"ints": ["1", "0"], "bools": ["true", "false"], "floats": ["1", "2.5"]}


def test_other_column_names(tmp_path):
    path = tmp_path / "d"
    DatasetDict({"train": Dataset.from_dict({"sentence": ["so good"], "idx": [7], "y": ["pos"]})}).save_to_disk(str(path))
    table = load_hf_tables(_cfg(path, text_column="sentence", label_column="y"))[0]["train"]
    assert (table.texts, table.labels) == (["so good"], ["pos"])


def test_indices_mapping_is_applied():
    """A shuffled or selected split keeps its rows in an indices mapping: the Table must follow it (a real
    `datasets` Dataset, read by the function that turns every split into a Table)."""
    from sentiment.data.hf import _table

    ds = Dataset.from_dict({"text": [f"t{i}" for i in range(20)], "label": [str(i) for i in range(20)]})
    picked = ds.shuffle(seed=3).select(range(5))
    assert picked._indices is not None
    expected = [picked[i]["text"] for i in range(5)]
    assert expected != ["t0", "t1", "t2", "t3", "t4"]
    table = _table(datasets, picked, "text", "label", "shuffled[train]")
    assert table.texts == expected
    assert table.labels == [t[1:] for t in expected]


def test_a_dataset_repository_with_configs_is_read_as_the_hub_would(tmp_path, capfd):
    """A name and a config go through the real `datasets.load_dataset`, here on a local copy of a Hub dataset
    repository (configs declared in README.md), offline and without progress bars."""
    repo = tmp_path / "glue"
    (repo / "sst2").mkdir(parents=True)
    (repo / "sst2" / "train.csv").write_text("sentence,label\nfine,1\nnice,1\n", encoding="utf-8")
    (repo / "sst2" / "validation.csv").write_text("sentence,label\nmeh,0\n", encoding="utf-8")
    (repo / "README.md").write_text("---\nconfigs:\n- config_name: sst2\n  data_files:\n  - split: train\n"
                                    "    path: sst2/train.csv\n  - split: validation\n    path: sst2/validation.csv\n"
                                    "---\n", encoding="utf-8")
    capfd.readouterr()
    tables, _ = load_hf_tables(_cfg(repo, hf_config="sst2", hf_valid_split="validation", text_column="sentence"))
    assert tables["train"].source == f"{repo}:sst2[train]"
    assert tables["valid"].source == f"{repo}:sst2[validation]"
    assert (tables["train"].texts, tables["valid"].texts) == (["fine", "nice"], ["meh"])
    assert (tables["train"].labels, tables["valid"].labels) == (["1", "1"], ["0"])
    assert capfd.readouterr().err == ""
    assert "config 'nope'" in _error(_cfg(repo, hf_config="nope"))


def test_single_dataset_is_the_train_split(tmp_path):
    path = tmp_path / "single"
    Dataset.from_dict({"text": ["one", "two"], "label": ["a", "b"]}).save_to_disk(str(path))
    tables, _ = load_hf_tables(_cfg(path))
    assert list(tables) == ["train"] and tables["train"].labels == ["a", "b"]
    assert tables["train"].source == str(path)
    message = _error(_cfg(path, hf_valid_split="validation"))
    assert "data.hf_valid_split" in message and "single Dataset" in message and "null" in message


def test_fingerprints_differ_between_datasets_and_are_stable(tmp_path):
    one = _classlabel_dict(tmp_path / "one")
    two = _classlabel_dict(tmp_path / "two", texts=["a dull film", "a great film", "another one"])
    first = load_hf_tables(_cfg(one))[1]["train"]
    again = load_hf_tables(_cfg(one))[1]["train"]
    other = load_hf_tables(_cfg(two))[1]["train"]
    assert first == again
    assert first != other
    # a split is part of it: the same rows under another split name are another cache entry
    assert load_hf_tables(_cfg(one, hf_train_split="test"))[1]["train"] != first


def test_fingerprint_follows_class_names_edited_in_place(tmp_path):
    """Class names renamed in dataset_info.json by hand: `datasets` keeps its fingerprint (state.json is
    untouched) and the Arrow file is the same, but the labels differ, so the fingerprint must too."""
    path = _classlabel_dict(tmp_path / "d")
    before_table, before = (x["train"] for x in load_hf_tables(_cfg(path)))
    info = path / "train" / "dataset_info.json"
    info.write_text(info.read_text().replace('"neg"', '"bad"').replace('"pos"', '"good"'))
    after_table, after = (x["train"] for x in load_hf_tables(_cfg(path)))
    assert (before_table.labels, after_table.labels) == (["neg", "pos", "pos"], ["bad", "good", "good"])
    assert before != after


def test_fingerprint_follows_arrow_data_replaced_in_place(tmp_path):
    """Another save's Arrow file copied over this one's: state.json (and its fingerprint) unchanged, rows not."""
    path = _classlabel_dict(tmp_path / "d")
    other = _classlabel_dict(tmp_path / "other", texts=["a much longer review than before", "and more", "x"])
    before = load_hf_tables(_cfg(path))[1]["train"]
    for arrow in (path / "train").glob("*.arrow"):  # a new inode: the first load may still map the old one
        shutil.copyfile(other / "train" / arrow.name, arrow.with_suffix(".new"))
        os.replace(arrow.with_suffix(".new"), arrow)
    tables, prints = load_hf_tables(_cfg(path))
    assert tables["train"].texts[0] == "a much longer review than before"
    assert prints["train"] != before


# ---------------------------------------------------------------- errors
def test_missing_datasets_library(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` now raises ImportError
    message = _error(_cfg(tmp_path))
    assert "needs the Hugging Face datasets library" in message and "pip install" in message


def test_no_dataset_named():
    with pytest.raises(SentimentError, match="data.hf_dataset is not set"):
        load_hf_tables(DataConfig(dataset="hf"))


def test_missing_split_lists_the_splits(tmp_path):
    path = _classlabel_dict(tmp_path / "d")
    message = _error(_cfg(path, hf_test_split="validation"))
    assert message.startswith("data.hf_test_split:")
    assert "no split 'validation'" in message and "'train', 'test', 'unsupervised'" in message


def test_same_split_twice(tmp_path):
    path = _classlabel_dict(tmp_path / "d")
    message = _error(_cfg(path, hf_valid_split="test", hf_test_split="test"))
    assert "data.hf_valid_split and data.hf_test_split both name the split 'test'" in message


@pytest.mark.parametrize("setting, field", [({"text_column": "review"}, "text_column"),
                                            ({"label_column": "sentiment"}, "label_column")])
def test_missing_column_lists_the_columns(tmp_path, setting, field):
    path = _classlabel_dict(tmp_path / "d")
    message = _error(_cfg(path, **setting))
    missing = next(iter(setting.values()))
    assert f"[train]: no column {missing!r} (columns: 'text', 'label')" in message
    assert f"data.{field}" in message


def test_unlabeled_classlabel_row(tmp_path):
    path = _classlabel_dict(tmp_path / "d")
    message = _error(_cfg(path, hf_train_split="unsupervised"))
    assert f"{path}[unsupervised]: row 1: label -1 marks an unlabeled row" in message
    assert "(neg, pos)" in message


def test_out_of_range_classlabel(tmp_path):
    # ClassLabel refuses 2 when it encodes data, so give plain codes a two-class ClassLabel afterwards, and
    # save it: the directory then reads back through load_from_disk as any saved dataset does
    codes = Dataset.from_dict({"text": ["a", "b", "c"], "label": [0, 1, 2]})
    narrowed = Dataset(codes.data, info=datasets.DatasetInfo(features=CLASSES))
    assert isinstance(narrowed.features["label"], ClassLabel)
    path = tmp_path / "broken"
    DatasetDict({"train": narrowed}).save_to_disk(str(path))
    message = _error(_cfg(path))
    assert f"{path}[train]: row 3: label 2 is out of range" in message and "2 classes" in message


@pytest.mark.parametrize("value", [None, "", "  "])
def test_empty_string_label(tmp_path, value):
    path = tmp_path / "d"
    DatasetDict({"train": Dataset.from_dict({"text": ["x", "y", "z"], "label": ["pos", "neg", value]},
                                            features=Features({"text": Value("string"), "label": Value("string")}))
                 }).save_to_disk(str(path))
    assert _error(_cfg(path)) == f"{path}[train]: row 3: empty label in column 'label'"


def test_missing_int_label(tmp_path):
    path = tmp_path / "d"
    DatasetDict({"train": Dataset.from_dict({"text": ["x", "y"], "label": [None, 1]},
                                            features=Features({"text": Value("string"), "label": Value("int64")}))
                 }).save_to_disk(str(path))
    assert _error(_cfg(path)) == f"{path}[train]: row 1: empty label in column 'label'"


def test_text_column_that_is_not_text(tmp_path):
    path = _classlabel_dict(tmp_path / "d")
    message = _error(_cfg(path, text_column="label"))
    assert "column 'label' holds int64 values, not text" in message


def test_label_column_with_lists(tmp_path):
    path = tmp_path / "d"
    DatasetDict({"train": Dataset.from_dict({"text": ["x"], "label": [[0, 1]]})}).save_to_disk(str(path))
    message = _error(_cfg(path))
    assert "column 'label' holds list<" in message and "one class per row" in message


def test_hub_unreachable_offline(monkeypatch):
    """The real `datasets` code path with the Hub switched off, as HF_HUB_OFFLINE=1 does (and as an
    unreachable Hub ends, after retries): a ConnectionError, turned into one line that points at save_to_disk."""
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    message = _error(_cfg("nobody-sentiment-test/no-such-dataset"))
    assert message.startswith("data.hf_dataset: could not load 'nobody-sentiment-test/no-such-dataset'")
    assert "offline mode is on" in message and "save_to_disk works offline" in message


def test_hub_unreachable_online_fails_fast_and_quietly(monkeypatch, capfd):
    """Not offline, but no network (a Hub host name that cannot resolve, whatever this machine's network):
    the real `datasets` path, which used to retry for ~28 s printing 11 lines, now fails in seconds, silently,
    with one line."""
    import time

    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "https://hub.sentiment-test.invalid")
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", "https://hub.sentiment-test.invalid", raising=False)
    capfd.readouterr()
    t0 = time.monotonic()
    message = _error(_cfg("nobody-sentiment-test/no-such-dataset"))
    assert time.monotonic() - t0 < 10
    assert "hub.sentiment-test.invalid" in message and "cannot be reached" in message and "save_to_disk" in message
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert datasets.config.HF_HUB_OFFLINE is False  # offline for that load only


def test_unknown_hub_dataset(monkeypatch):
    """What an online Hub answers for a name it lacks (raised by the real exception class). A fake: this
    answer needs the Hub, which tests must not."""
    def not_found(name, config=None, *, trust_remote_code):
        assert trust_remote_code is False  # a dataset's own loading script never runs
        raise datasets.exceptions.DatasetNotFoundError(f"Dataset '{name}' doesn't exist on the Hub or cannot be "
                                                       "accessed.")

    monkeypatch.setattr(datasets, "load_dataset", not_found)
    message = _error(_cfg("nobody/nothing", hf_config="x"))
    assert "could not load 'nobody/nothing' (config 'x'): no such dataset on the Hub" in message
    assert "save_to_disk" in message


def test_unknown_config(monkeypatch):
    """The Hub's answer for a config a dataset lacks. A fake: this answer needs the Hub, which tests must not."""
    def bad_config(name, config=None, *, trust_remote_code):
        assert trust_remote_code is False
        raise ValueError(f"BuilderConfig '{config}' not found.\nAvailable: ['plain_text']")

    monkeypatch.setattr(datasets, "load_dataset", bad_config)
    message = _error(_cfg("stanfordnlp/imdb", hf_config="nope"))
    assert "BuilderConfig 'nope' not found. Available: ['plain_text']" in message


def test_directory_that_is_not_a_saved_dataset(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    message = _error(_cfg(tmp_path))
    assert f"{tmp_path} is not a saved dataset" in message and "save_to_disk" in message


def test_file_instead_of_directory(tmp_path):
    path = tmp_path / "train.parquet"
    path.write_bytes(b"PAR1")
    assert "is a file, not a directory written by save_to_disk" in _error(_cfg(path))


def test_path_that_does_not_exist(tmp_path):
    message = _error(_cfg(tmp_path / "nowhere"))
    assert message.startswith(f"data.hf_dataset: directory {tmp_path / 'nowhere'} not found")


def test_config_with_a_saved_directory(tmp_path):
    path = _classlabel_dict(tmp_path / "d")
    assert "unset data.hf_config" in _error(_cfg(path, hf_config="plain_text"))


def test_damaged_saved_dataset(tmp_path):
    path = _classlabel_dict(tmp_path / "d")
    for arrow in (path / "train").glob("*.arrow"):
        arrow.write_bytes(b"not arrow at all")
    message = _error(_cfg(path))
    assert message.startswith(f"data.hf_dataset: cannot read the saved dataset {path}")
