"""Training on one's own labeled text, end to end through the command line as a user would: a generated
3-class CSV whose labels are learnable from its words, the same rows as JSONL, Parquet and a saved Hugging
Face dataset, two-class files with the usual label spellings, and every kind of bad input as one clear
`error:` line that leaves no run directory behind."""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sentiment.cli import app
from conftest import TINY_TRAINING, one_line_error, set_args

runner = CliRunner()

# class -> its cue words; the rest of a text is filler every class shares
CUES = {
    "negative": ["awful", "rude", "lost", "delayed", "worst", "dirty", "broken"],
    "neutral": ["flight", "gate", "tuesday", "booked", "seat", "schedule", "boarding"],
    "positive": ["great", "thanks", "friendly", "smooth", "love", "best", "comfy"],
}
FILLER = ["the", "my", "was", "and", "it", "this", "again", "so", "very", "crew", "today", "we", "at", "on"]
FAST = ["data.glove_dim=null", "model.embed_dim=16", "run.threads=1", "data.workers=1", "train.epochs=4",
        *TINY_TRAINING]


def texts(rng: random.Random, label: str, noise: float = 0.15) -> str:
    """A short text with one or two cue words of its class, and now and then one of another class."""
    words = [rng.choice(FILLER) for _ in range(rng.randint(3, 9))]
    for _ in range(rng.randint(1, 2)):
        words.insert(rng.randrange(len(words) + 1), rng.choice(CUES[label]))
    if rng.random() < noise:
        other = rng.choice([c for c in CUES if c != label])
        words.insert(rng.randrange(len(words) + 1), rng.choice(CUES[other]))
    return " ".join(words)


def make_rows(counts: dict[str, int], seed: int = 0, names: dict[str, str] | None = None) -> list[dict[str, str]]:
    """Shuffled rows {text, label}; `names` renames classes as written in the file (negative -> neg, ...)."""
    rng = random.Random(seed)
    rows = [{"text": texts(rng, c), "label": (names or {}).get(c, c)} for c, n in counts.items() for _ in range(n)]
    rng.shuffle(rows)
    return rows


def write_csv(path: Path, rows: list[dict], **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), **kw)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output  # stdout and stderr together


def train(run_dir: Path, data_dir: Path, *settings: str) -> dict:
    """`sentiment train` on files (unless a setting says otherwise); results.json of the run."""
    code, text = run("train", *set_args([f"data.data_dir={data_dir}", "data.dataset=files", *FAST, *settings]),
                     "--run-dir", str(run_dir))
    assert code == 0, text
    return json.loads((run_dir / "results.json").read_text())


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def eval_json(run_dir: Path, *extra: str) -> dict:
    code, text = run("eval", "--run", str(run_dir), "--json", *extra)
    assert code == 0, text
    return json.loads(text.strip().splitlines()[-1])


def predict_rows(run_dir: Path, *texts_: str) -> list[dict]:
    code, text = run("predict", "--run", str(run_dir), "--json", *texts_)
    assert code == 0, text
    return jsonl(text)


def membership(run_dir: Path) -> dict[str, list[int]]:
    with np.load(run_dir / "splits.npz") as z:
        return {name: z[name].tolist() for name in z.files}


FIGURES = ("accuracy", "macro_f1", "loss", "n", "confusion")


@pytest.fixture(scope="module", autouse=True)
def _own_cache():
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SENTIMENT_CACHE_DIR", raising=False)  # caches live in each test's data_dir
        yield


@pytest.fixture(scope="module")
def three(tmp_path_factory) -> dict:
    """A trained 3-class run on a generated CSV (300 rows: 120 negative, 100 neutral, 80 positive)."""
    base = tmp_path_factory.mktemp("three")
    rows = make_rows({"negative": 120, "neutral": 100, "positive": 80})
    train_file = write_csv(base / "tweets.csv", rows)
    run_dir = base / "run"
    results = train(run_dir, base / "data", f"data.train_file={train_file}")
    return {"run": run_dir, "rows": rows, "results": results, "file": train_file, "base": base}


# ---------------------------------------------------------------- three classes
def test_train_writes_valid_and_test_figures_for_three_classes(three):
    results, run_dir = three["results"], three["run"]
    assert results["labels"] == ["negative", "neutral", "positive"]
    assert json.loads((run_dir / "labels.json").read_text()) == {"labels": results["labels"]}
    splits = membership(run_dir)
    for name in ("valid", "test"):
        m = results[name]
        assert m["n"] == len(splits[name])
        assert np.array(m["confusion"]).shape == (3, 3) and np.array(m["confusion"]).sum() == m["n"]
        assert [c["label"] for c in m["per_class"]] == results["labels"]
        assert "f1" not in m and "tp" not in m  # the positive-class figures are for two classes only
    assert results["test"]["accuracy"] > 0.7 and results["test"]["macro_f1"] > 0.7  # chance is 1/3
    # the split is a partition of the file's rows
    assert sorted(sum(splits.values(), [])) == list(range(len(three["rows"])))


def test_eval_reproduces_the_results_exactly(three):
    results = three["results"]
    test = eval_json(three["run"])
    valid = eval_json(three["run"], "--split", "valid")
    for key in FIGURES:
        assert test[key] == results["test"][key], key
        assert valid[key] == results["valid"][key], key
    code, text = run("eval", "--run", str(three["run"]))
    assert code == 0 and "macro-F1" in text and "predicted neutral" in text and "per class" in text


def test_predict_gives_a_label_and_every_class_probability(three):
    rows, splits, results = three["rows"], membership(three["run"]), three["results"]
    scored = {name: [rows[r] for r in splits[name]] for name in ("valid", "test")}
    predicted = predict_rows(three["run"], *[r["text"] for name in scored for r in scored[name]])
    assert len(predicted) == sum(map(len, scored.values()))
    for row in predicted:
        assert set(row) == {"label", "probs"}  # no `probability`: that is the positive class of two
        assert list(row["probs"]) == ["negative", "neutral", "positive"]
        assert sum(row["probs"].values()) == pytest.approx(1.0, abs=1e-9)
        assert row["label"] == max(row["probs"], key=row["probs"].get)
    # the labels predict gives are the ones eval scored: the same confusion matrix on each split
    names = results["labels"]
    for name, gold in scored.items():
        got, predicted = predicted[: len(gold)], predicted[len(gold) :]
        confusion = np.zeros((3, 3), int)
        for p, r in zip(got, gold):
            confusion[names.index(r["label"]), names.index(p["label"])] += 1
        assert confusion.tolist() == results[name]["confusion"], name
    assert results["valid"]["accuracy"] < 1.0  # some mistakes, so agreeing on them means something


def test_threshold_is_an_error_for_three_classes(three):
    code, text = run("predict", "--run", str(three["run"]), "--threshold", "0.7", "great flight")
    one_line_error(code, text, "--threshold", "3 classes")


def test_prepare_prints_the_class_table(three):
    code, text = run("prepare", *set_args([f"data.data_dir={three['base'] / 'data'}", "data.dataset=files",
                                           f"data.train_file={three['file']}", *FAST]))
    assert code == 0, text
    assert "classes per split" in text and "300 rows (cache," in text  # the run left the tokenized file cached
    lines = text.splitlines()
    header = next(line for line in lines if "negative" in line and "neutral" in line)
    assert header.index("negative") < header.index("neutral") < header.index("positive")
    for split in ("valid", "test"):  # the same counts (in the same column order) as the run's figures
        support = [c["support"] for c in three["results"][split]["per_class"]]
        assert len(set(support)) == 3  # unbalanced classes: a column mix-up would show
        line = next(line for line in lines if line.startswith("│") and line.strip("│ ").split()[0] == split)
        assert [int(n) for n in re.findall(r"(\d+) \(\d+%\)", line)] == support


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_the_same_rows_in_another_format_train_the_same_model(three, tmp_path, fmt):
    """JSONL, Parquet and a save_to_disk dataset of the very same rows: same split, same figures."""
    rows = three["rows"]
    if fmt == "jsonl":
        settings = [f"data.train_file={write_jsonl(tmp_path / 'tweets.jsonl', rows)}"]
    elif fmt == "parquet":
        pa = pytest.importorskip("pyarrow")
        pq = pytest.importorskip("pyarrow.parquet")
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "tweets.parquet")
        settings = [f"data.train_file={tmp_path / 'tweets.parquet'}"]
    else:
        datasets = pytest.importorskip("datasets")
        datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
        settings = ["data.dataset=hf", f"data.hf_dataset={tmp_path / 'saved'}"]
    results = train(tmp_path / "run", tmp_path / "data", *settings)
    assert membership(tmp_path / "run") == membership(three["run"])
    for split in ("valid", "test"):
        assert {k: results[split][k] for k in FIGURES} == {k: three["results"][split][k] for k in FIGURES}
    assert eval_json(tmp_path / "run")["accuracy"] == results["test"]["accuracy"]


def test_balanced_class_weights_train_with_n_over_k_times_class_count(tmp_path, monkeypatch):
    from sentiment.training import train as train_mod

    seen = []
    real = train_mod.class_weights
    monkeypatch.setattr(train_mod, "class_weights", lambda *a: seen.append(real(*a)) or seen[-1])
    rows = make_rows({"negative": 150, "neutral": 60, "positive": 30}, seed=3)
    f = write_csv(tmp_path / "skewed.csv", rows)
    results = train(tmp_path / "run", tmp_path / "data", f"data.train_file={f}", "train.class_weights=balanced",
                    "train.epochs=2")
    assert results["test"]["n"] > 0
    names = results["labels"]
    counts = np.bincount([names.index(rows[r]["label"]) for r in membership(tmp_path / "run")["train"]], minlength=3)
    assert seen and seen[0].tolist() == pytest.approx((counts.sum() / (3 * counts)).tolist())


# ---------------------------------------------------------------- two classes
POSITIVE_TEXT = "great friendly crew thanks love it"
NEGATIVE_TEXT = "awful rude crew delayed and lost"


SPELLINGS = [({"negative": "neg", "positive": "pos"}, ["neg", "pos"]), ({}, ["negative", "positive"]),
             ({"negative": "0", "positive": "1"}, ["0", "1"])]


def test_two_class_files_put_the_positive_class_second(tmp_path):
    """pos/neg, positive/negative and 0/1: the same rows train the same model, whatever the spelling."""
    first = None
    for names, expected in SPELLINGS:
        # the positive rows come first in the file: the label order is not the order of appearance
        rows = sorted(make_rows({"negative": 80, "positive": 80}, seed=5, names=names),
                      key=lambda r: r["label"] != expected[1])
        f = write_csv(tmp_path / f"{expected[1]}.csv", rows)
        run_dir = tmp_path / f"run-{expected[1]}"
        results = train(run_dir, tmp_path / "data", f"data.train_file={f}", "train.epochs=3")
        assert results["labels"] == expected
        assert results["test"]["tp"] + results["test"]["fn"] == results["test"]["per_class"][1]["support"] > 0
        good, bad = predict_rows(run_dir, POSITIVE_TEXT, NEGATIVE_TEXT)
        for row in (good, bad):
            assert set(row) == {"label", "probs", "probability"}
            assert row["probability"] == row["probs"][expected[1]]
            assert row["label"] == expected[row["probability"] >= 0.5]
        assert (good["label"], bad["label"]) == (expected[1], expected[0]), expected
        probabilities = (good["probability"], bad["probability"])
        first = first or (probabilities, results["test"])
        assert probabilities == first[0], expected
        assert {k: results["test"][k] for k in FIGURES} == {k: first[1][k] for k in FIGURES}, expected
    # the threshold works on two classes: 0 makes everything positive
    code, text = run("predict", "--run", str(run_dir), "--json", "--threshold", "0", NEGATIVE_TEXT)
    assert code == 0 and jsonl(text)[0]["label"] == expected[1]


def test_a_pos_neg_directory_trains_a_two_class_model(tmp_path):
    root = tmp_path / "reviews"
    rng = random.Random(7)
    for folder, cls in (("pos", "positive"), ("neg", "negative")):
        (root / folder).mkdir(parents=True)
        for i in range(70):
            (root / folder / f"{i}_{rng.randint(1, 10)}.txt").write_text(texts(rng, cls), encoding="utf-8")
    results = train(tmp_path / "run", tmp_path / "data", f"data.train_file={root}", "train.epochs=3")
    assert results["labels"] == ["neg", "pos"]
    assert sum(len(v) for v in membership(tmp_path / "run").values()) == 140
    assert results["test"]["accuracy"] > 0.7
    good, bad = predict_rows(tmp_path / "run", POSITIVE_TEXT, NEGATIVE_TEXT)
    assert (good["label"], bad["label"]) == ("pos", "neg")


def test_quoted_csv_fields_with_commas_and_newlines_just_work(tmp_path):
    rows = make_rows({"negative": 60, "positive": 60}, seed=9)
    for i, row in enumerate(rows):
        words = row["text"].split()
        row["text"] = f"{' '.join(words[:2])}, {' '.join(words[2:4])}\n{' '.join(words[4:])}, \"ok\"" if i % 2 else row["text"]
    f = write_csv(tmp_path / "quoted.csv", [{"id": i, **r} for i, r in enumerate(rows)], quoting=csv.QUOTE_ALL)
    assert f.read_text().count("\n") > len(rows) + 1  # the texts do span lines
    train(tmp_path / "run", tmp_path / "data", f"data.train_file={f}", "train.epochs=1")
    splits = membership(tmp_path / "run")
    assert sorted(sum(splits.values(), [])) == list(range(len(rows)))  # one row per record, not per line
    assert json.loads((tmp_path / "run" / "labels.json").read_text())["labels"] == ["negative", "positive"]


# ---------------------------------------------------------------- bad input
def _bad(tmp: Path) -> dict[str, Path]:
    good = make_rows({"negative": 20, "positive": 20}, seed=11)
    f = {}
    f["ok"] = write_csv(tmp / "ok.csv", good)
    f["columns"] = write_csv(tmp / "columns.csv", [{"tweet": r["text"], "label": r["label"]} for r in good])
    empty_label = [dict(r) for r in good]
    empty_label[6]["label"] = ""
    f["empty_label"] = write_csv(tmp / "empty_label.csv", empty_label)
    f["valid_extra"] = write_csv(tmp / "valid_extra.csv", good[:3] + [{"text": "seat booked", "label": "neutral"}])
    f["one_class"] = write_csv(tmp / "one_class.csv", [r for r in good if r["label"] == "negative"])
    f["latin1"] = tmp / "latin1.csv"
    f["latin1"].write_bytes(("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in good[:4])
                             + "un vol géant,positive\n").encode("latin-1"))
    f["bad_jsonl"] = tmp / "bad.jsonl"
    f["bad_jsonl"].write_text("".join(json.dumps(r) + "\n" for r in good[:4]) + '{"text": "delayed", "label"\n'
                              + json.dumps(good[5]) + "\n")
    f["empty"] = tmp / "empty.csv"
    f["empty"].write_text("")
    return f


BAD = [
    ("missing train file", lambda f: [f"data.train_file={f['ok'].parent / 'nope.csv'}"], ["nope.csv not found"]),
    ("train file not set", lambda f: [], ["data.train_file"]),
    ("missing column", lambda f: [f"data.train_file={f['columns']}"], ["columns.csv", "no column 'text'",
                                                                        "'tweet', 'label'"]),
    ("empty label", lambda f: [f"data.train_file={f['empty_label']}"], ["empty_label.csv: line 8", "empty label"]),
    ("label only in valid", lambda f: [f"data.train_file={f['ok']}", f"data.valid_file={f['valid_extra']}"],
     ["valid_extra.csv: line 5", "'neutral'", "not a training label"]),
    ("label only in test", lambda f: [f"data.train_file={f['ok']}", f"data.test_file={f['valid_extra']}"],
     ["valid_extra.csv: line 5", "'neutral'", "test split"]),
    ("single class", lambda f: [f"data.train_file={f['one_class']}"], ["one_class.csv", "'negative'",
                                                                       "at least two classes"]),
    ("not utf-8", lambda f: [f"data.train_file={f['latin1']}"], ["latin1.csv: line 6", "not valid UTF-8"]),
    ("malformed jsonl", lambda f: [f"data.train_file={f['bad_jsonl']}"], ["bad.jsonl: line 5", "not valid JSON"]),
    ("labels lack one", lambda f: [f"data.train_file={f['ok']}", "data.labels=[negative, neutral]"],
     ["data.labels", "lacks 'positive'"]),
    ("labels name an absent one", lambda f: [f"data.train_file={f['ok']}",
                                             "data.labels=[negative, neutral, positive]"],
     ["data.labels", "'neutral'", "no training row"]),
    ("empty file", lambda f: [f"data.train_file={f['empty']}"], ["empty.csv is empty"]),
]


@pytest.mark.parametrize("what, settings, needles", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_clear_line_and_writes_no_run(tmp_path, what, settings, needles):
    files = _bad(tmp_path)
    run_dir = tmp_path / "run"
    code, text = run("train", *set_args([f"data.data_dir={tmp_path / 'data'}", "data.dataset=files", *FAST,
                                         *settings(files)]), "--run-dir", str(run_dir))
    one_line_error(code, text, *needles)
    assert not run_dir.exists()


# ---------------------------------------------------------------- the data a run was trained with
def test_eval_and_resume_refuse_data_whose_split_changed(tmp_path):
    rows = make_rows({"negative": 60, "neutral": 50, "positive": 40}, seed=3)
    train_file = write_csv(tmp_path / "t.csv", rows)
    run_dir = tmp_path / "run"
    train(run_dir, tmp_path / "data", f"data.train_file={train_file}", "train.epochs=1")
    assert eval_json(run_dir)["n"] > 0  # unchanged data: fine
    write_csv(train_file, rows[5:])  # rows removed: every carve moves
    one_line_error(*run("eval", "--run", str(run_dir)), str(train_file), "trained with")
    one_line_error(*run("train", "--resume", str(run_dir), "--set", "train.epochs=2"), str(train_file), "trained with")


def test_eval_and_resume_refuse_flipped_labels_naming_the_file(tmp_path):
    # issue 23 #5: same rows, same split membership, every test label flipped: refused, not scored as before
    rows = make_rows({"negative": 60, "positive": 60}, seed=5)
    train_file = write_csv(tmp_path / "train.csv", rows[:90])
    test_file = write_csv(tmp_path / "test.csv", rows[90:])
    run_dir = tmp_path / "run"
    train(run_dir, tmp_path / "data", f"data.train_file={train_file}", f"data.test_file={test_file}",
          "train.epochs=1")
    stored = json.loads((run_dir / "data_fingerprint.json").read_text())["splits"]
    assert set(stored) == {"train", "valid", "test"} and stored["test"]["rows"] == 30
    before = eval_json(run_dir)
    flip = {"negative": "positive", "positive": "negative"}
    write_csv(test_file, [dict(r, label=flip[r["label"]]) for r in rows[90:]])
    one_line_error(*run("eval", "--run", str(run_dir)), "test split", str(test_file), "--allow-changed-data")
    code, text = run("eval", "--run", str(run_dir), "--json", "--allow-changed-data")
    assert code == 0, text
    assert json.loads(text.strip().splitlines()[-1])["accuracy"] == pytest.approx(1 - before["accuracy"])
    assert eval_json(run_dir, "--split", "valid")["n"] > 0  # the valid split did not change: still fine
    one_line_error(*run("train", "--resume", str(run_dir), "--set", "train.epochs=2"), str(test_file))


def test_labels_with_stray_spaces_are_one_class(tmp_path):
    rows = make_rows({"negative": 60, "positive": 60}, seed=4)
    for i, r in enumerate(rows):
        r["label"] = r["label"] + (" " if i % 3 == 0 else "")
    results = train(tmp_path / "run", tmp_path / "data", f"data.train_file={write_csv(tmp_path / 's.csv', rows)}",
                    "train.epochs=1")
    assert results["labels"] == ["negative", "positive"]


# ---------------------------------------------------------------- train --data (issue 22 point 6)
def test_train_data_file_uses_the_own_data_recipe_and_chooses_max_len(tmp_path):
    import yaml

    rows = [{"tweet": r["text"], "sentiment": r["label"]} for r in make_rows({"negative": 50, "positive": 50}, seed=6)]
    data_file = write_csv(tmp_path / "mine.csv", rows)
    run_dir = tmp_path / "run"
    code, text = run("train", "--data", str(data_file), "--text-column", "tweet", "--label-column", "sentiment",
                     "--set", f"data.data_dir={tmp_path / 'data'}", "--set", "data.glove_dim=null",
                     "--set", "train.epochs=1", "--set", "model.hidden_size=8", "--set", "data.workers=1", "--set", "model.embed_dim=8",
                     "--run-dir", str(run_dir))
    assert code == 0, text
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    lengths = sorted(len(r["tweet"].split()) for r in rows)  # the words are the tokens here
    chosen = saved["data"]["max_len"]
    assert chosen == saved["data"]["eval_max_len"]
    assert lengths[len(lengths) // 2] <= chosen <= lengths[-1] < 400  # from the texts, not IMDB's 400
    assert f"data.max_len and data.eval_max_len = {chosen}" in text
    assert saved["data"]["train_file"] == str(data_file) and saved["data"]["text_column"] == "tweet"
    assert saved["model"]["rnn"] == "gru" and saved["data"]["placeholders"] is True  # the short-text recipe
    assert "classes per split" in text  # the data summary prepare prints
    # --set names it: kept as set
    code, text = run("train", "--data", str(data_file), "--text-column", "tweet", "--label-column", "sentiment",
                     "--set", f"data.data_dir={tmp_path / 'data'}", "--set", "data.glove_dim=null",
                     "--set", "train.epochs=1", "--set", "model.embed_dim=8", "--set", "data.max_len=5",
                     "--run-dir", str(tmp_path / "run2"), "--print-config")
    assert code == 0 and "max_len: 5" in text


def test_train_data_companions_need_data(tmp_path):
    one_line_error(*run("train", "--text-column", "x"), "--text-column goes with --data")


# ---------------------------------------------------------------- one label normalisation (issue 23 #1, #2)
def test_1_and_1_0_are_one_class_in_training_eval_data_and_prepare(tmp_path):
    rows = make_rows({"negative": 60, "positive": 60}, seed=7, names={"negative": "0", "positive": "1"})
    for i, r in enumerate(rows):
        r["label"] = r["label"] + (".0" if i % 2 else "")
    train_file = write_csv(tmp_path / "floats.csv", rows)
    settings = [f"data.data_dir={tmp_path / 'data'}", "data.dataset=files", f"data.train_file={train_file}", *FAST]
    code, text = run("prepare", *set_args(settings))
    assert code == 0, text
    assert "labels merged" in text and "'0', '0.0' -> '0'" in text and "'1', '1.0' -> '1'" in text
    results = train(tmp_path / "run", tmp_path / "data", f"data.train_file={train_file}", "train.epochs=1")
    assert results["labels"] == ["0", "1"]
    assert json.loads((tmp_path / "run" / "labels.json").read_text())["labels"] == ["0", "1"]
    # eval --data of a two-class run takes 1.0/0.0 from a CSV, and the same rows as 1/0 give the same figures
    as_ints = write_csv(tmp_path / "ints.csv", [dict(r, label=r["label"].removesuffix(".0")) for r in rows])
    a = eval_json(tmp_path / "run", "--data", str(train_file))
    b = eval_json(tmp_path / "run", "--data", str(as_ints))
    assert (a["accuracy"], a["n"], a["confusion"]) == (b["accuracy"], b["n"], b["confusion"])


def test_eval_data_does_not_read_0_1_as_the_classes_of_a_1_2_run(tmp_path):
    rows = make_rows({"negative": 60, "positive": 60}, seed=8, names={"negative": "1", "positive": "2"})
    train(tmp_path / "run", tmp_path / "data", f"data.train_file={write_csv(tmp_path / 'stars.csv', rows)}",
          "train.epochs=1")
    shifted = write_csv(tmp_path / "shifted.csv", [dict(r, label=str(int(r["label"]) - 1)) for r in rows[:20]])
    one_line_error(*run("eval", "--run", str(tmp_path / "run"), "--data", str(shifted)), "unknown label '0'",
                   "'1', '2'")


# ---------------------------------------------------------------- faults as one line (issue 23 #8, #9, #10)
def test_data_faults_are_one_line_and_write_no_run(tmp_path, monkeypatch):
    import os

    good = make_rows({"negative": 30, "positive": 30}, seed=9)
    pos_neg = tmp_path / "reviews"
    for folder in ("pos", "neg"):
        (pos_neg / folder).mkdir(parents=True)
        for i, r in enumerate(good[:20]):
            (pos_neg / folder / f"{i}_5.txt").write_text(r["text"], encoding="utf-8")
    (pos_neg / "neg" / "99_1.txt").symlink_to(tmp_path / "gone.txt")
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    surrogate = tmp_path / "cut.jsonl"
    surrogate.write_text("".join(json.dumps(r) + "\n" for r in good[:5]) + '{"text": "so good \\ud83d", "label": '
                         '"positive"}\n', encoding="utf-8")
    nested = write_jsonl(tmp_path / "nested.jsonl", good[:3] + [{"text": {"body": "hi"}, "label": "positive"}])
    dup = tmp_path / "dup.csv"
    dup.write_text("text,text,label\n" + "".join(f"{r['text']},x,{r['label']}\n" for r in good), encoding="utf-8")
    empty = write_csv(tmp_path / "blank_texts.csv", [dict(r, text="") for r in good])
    cases = [(pos_neg, ["99_1.txt", "symbolic link"]), (fifo, ["pipe.csv", "not a regular file"]),
             (surrogate, ["cut.jsonl: line 6", "lone surrogate"]), (nested, ["nested.jsonl: line 4", "JSON object"]),
             (dup, ["dup.csv", "'text' appears twice"]), (empty, ["blank_texts.csv", "every row's text"])]
    for path, needles in cases:
        code, text = run("train", *set_args([f"data.data_dir={tmp_path / 'data'}", "data.dataset=files",
                                             f"data.train_file={path}", *FAST]), "--run-dir", str(tmp_path / "run"))
        one_line_error(code, text, *needles)
        assert not (tmp_path / "run").exists()
    blocker = tmp_path / "cache_file"
    blocker.write_text("")
    monkeypatch.setenv("SENTIMENT_CACHE_DIR", str(blocker))
    code, text = run("train", *set_args([f"data.data_dir={tmp_path / 'data'}", "data.dataset=files",
                                         f"data.train_file={dup}", *FAST]), "--run-dir", str(tmp_path / "run"))
    one_line_error(code, text, "SENTIMENT_CACHE_DIR", "is a file")
