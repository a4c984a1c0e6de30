"""`sentiment predict` and `sentiment eval --data`: every input route gives the same probabilities, in
input order, as `sentiment eval` computes them; bad input is one clear line and a non-zero exit."""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sentiment.inference import predict as predict_mod
from sentiment.cli import app
from sentiment.data.labels import IMDB_LABELS, LabelSpace
from sentiment.data.readers import read_table
from sentiment.inference.predict import UNCAPPED_MAX_LEN, Encoding, encode_texts
from conftest import BATCH_TOL, TINY_TRAINING, one_line_error, set_args

runner = CliRunner()
# a little more data and one more epoch than test_cli's run, so that the model is clearly better than chance
# and the accuracies compared below are not all-one-class coincidences
TRAIN = set_args(["train.epochs=3", *TINY_TRAINING])

# very different lengths, deliberately not sorted, with commas, quotes and a tab for the CSV/TSV writers
SAMPLE = [
    " ".join(["The film was great and the cast was wonderful."] * 12),
    "awful",
    'He said "superb", and I loved it.',
    " ".join(["A boring, dull mess with the worst plot."] * 30),
    "great\tfun",
    "Terrible. Hated it.<br /><br />Really.",
    " ".join(["the movie was quite moving and brilliant"] * 5),
]


def run(*args: str, input: str | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), input=input)
    return result.exit_code, result.output  # stdout and stderr together


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def probabilities(code: int, text: str) -> list[float]:
    assert code == 0, text
    return [row["probability"] for row in jsonl(text)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    from conftest import make_imdb

    base = tmp_path_factory.mktemp("predict")
    data = make_imdb(base / "data", n_per_class=100)
    run_dir = base / "run"
    code, text = run("train", "--set", f"data.data_dir={data}", *TRAIN, "--run-dir", str(run_dir))
    assert code == 0, text
    return run_dir, data


@pytest.fixture(scope="module")
def sample_probs(trained) -> list[float]:
    return probabilities(*run("predict", "--run", str(trained[0]), "--json", *SAMPLE))


# ---------------------------------------------------------------- inputs and outputs
def write_table(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_every_input_route_gives_the_same_probabilities(trained, sample_probs, tmp_path):
    run_dir = str(trained[0])
    assert len(sample_probs) == len(SAMPLE)
    txt = tmp_path / "reviews.txt"
    txt.write_text("\n".join(SAMPLE) + "\n", encoding="utf-8")
    csv_file = write_table(tmp_path / "reviews.csv", [{"id": i, "review": t} for i, t in enumerate(SAMPLE)])
    tsv_file = write_table(tmp_path / "reviews.tsv", [{"text": t, "id": i} for i, t in enumerate(SAMPLE)], "\t")
    jsonl_file = tmp_path / "reviews.jsonl"
    jsonl_file.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(SAMPLE)))
    routes = {
        "txt": ["--file", str(txt)],
        "csv": ["--file", str(csv_file), "--text-column", "review"],
        "tsv": ["--file", str(tsv_file)],
        "jsonl": ["--file", str(jsonl_file)],
    }
    for name, args in routes.items():
        assert probabilities(*run("predict", "--run", run_dir, "--json", *args)) == sample_probs, name
    # no text arguments and no --file: standard input, one review per line (JSON lines since it is not a TTY)
    assert probabilities(*run("predict", "--run", run_dir, input="\n".join(SAMPLE) + "\n")) == sample_probs
    assert probabilities(*run("predict", "--run", run_dir, "--file", "-", input="\n".join(SAMPLE))) == sample_probs


def test_outputs_keep_the_input_order(trained, sample_probs):
    lengths = [len(t.split()) for t in SAMPLE]
    assert lengths != sorted(lengths) and lengths != sorted(lengths, reverse=True)
    assert len({round(p, 3) for p in sample_probs}) > 3  # distinct enough that a shuffle would show
    for text, p in zip(SAMPLE, sample_probs):
        alone = probabilities(*run("predict", "--run", str(trained[0]), "--json", text))
        assert alone == pytest.approx([p], abs=BATCH_TOL)


def test_json_lines_have_label_and_probability(trained, sample_probs):
    code, text = run("predict", "--run", str(trained[0]), *SAMPLE)  # not a TTY: JSON lines by default
    rows = jsonl(text)
    assert code == 0 and len(rows) == len(SAMPLE)
    for row, p in zip(rows, sample_probs):
        assert set(row) == {"label", "probability", "probs"}
        assert 0.0 < row["probability"] < 1.0 and row["probability"] == p
        assert row["probs"] == {"negative": pytest.approx(1 - p, abs=1e-15), "positive": p}
        assert row["label"] == ("positive" if p >= 0.5 else "negative")


def test_table_output(trained):
    code, text = run("predict", "--run", str(trained[0]), "--table", "A great film", "An awful film")
    assert code == 0, text
    assert "P(positive)" in text and "A great film" in text
    assert not jsonl(text)


def test_threshold_moves_the_decision(trained, sample_probs):
    def labels(threshold: float) -> list[str]:
        code, text = run("predict", "--run", str(trained[0]), "--json", "--threshold", str(threshold), *SAMPLE)
        assert code == 0, text
        return [row["label"] for row in jsonl(text)]

    assert labels(0.0) == ["positive"] * len(SAMPLE)
    assert labels(1.0) == ["negative"] * len(SAMPLE)
    middle = float(np.median(sample_probs))
    assert labels(middle) == ["positive" if p >= middle else "negative" for p in sample_probs]
    one_line_error(*run("predict", "--run", str(trained[0]), "--threshold", "1.5", "great"), "--threshold")


def test_empty_rows_are_skipped_and_counted(trained, sample_probs, tmp_path):
    args = ["predict", "--run", str(trained[0])]
    code, text = run(*args, "--json", SAMPLE[0], "   ", "", "<br /><br />", SAMPLE[1])
    assert code == 0, text
    rows = jsonl(text)
    assert len(rows) == 5 and all("error" in r for r in rows[1:4])
    assert [rows[0]["probability"], rows[4]["probability"]] == pytest.approx(sample_probs[:2], abs=BATCH_TOL)
    assert "skipped 3 empty reviews" in text

    txt = tmp_path / "gaps.txt"
    txt.write_text(f"{SAMPLE[0]}\n\n  \t\n{SAMPLE[1]}\n", encoding="utf-8")
    code, text = run(*args, "--table", "--file", str(txt))
    assert code == 0, text
    assert "skipped 2 empty reviews" in text and text.split("P(positive)")[1].split("note:")[0].count("skipped") == 2


def test_a_review_of_100000_tokens_is_truncated_not_fatal(trained, tmp_path):
    huge = " ".join(["great", "boring", "film", "."] * 25_000)
    assert probabilities(*run("predict", "--run", str(trained[0]), "--json", huge))
    big_csv = write_table(tmp_path / "big.csv", [{"text": huge}, {"text": "awful"}])  # > csv's default field limit
    assert len(probabilities(*run("predict", "--run", str(trained[0]), "--file", str(big_csv)))) == 2


def test_encoding_truncates_to_max_len_or_the_safety_cap():
    from sentiment.data.vocab import Vocab

    vocab = Vocab(["<pad>", "<unk>", "great", "film"])
    texts = ["great film " * 50_000, "film", ""]
    split = encode_texts(texts, Encoding(vocab, True, 400, "head+tail"))
    assert split.lengths().tolist() == [400, 1, 0]
    split = encode_texts(texts, Encoding(vocab, True, UNCAPPED_MAX_LEN, "head"))
    assert split.lengths().tolist() == [UNCAPPED_MAX_LEN, 1, 0]
    assert split.ids[:4].tolist() == [2, 3, 2, 3]


def test_predict_tokenizes_exactly_as_the_training_corpus(trained, monkeypatch):
    """Same ids as `prepare` gives the IMDB test split, in one process and with a pool of two."""
    from sentiment.inference.predict import encoding_of
    from sentiment.data.prepare import prepare_data
    from sentiment.inference.runtime import load_trained

    loaded = load_trained(trained[0])
    expected = prepare_data(loaded.cfg.data, loaded.vocab, with_embeddings=False).test
    texts, labels = read_labeled(trained[1] / "aclImdb" / "test")
    enc = encoding_of(loaded)
    assert enc.workers == (os.cpu_count() or 1)  # data.workers: null is every core
    serial = encode_texts(texts, enc, labels)
    monkeypatch.setattr(predict_mod, "_PARALLEL_MIN_TEXTS", 0)
    monkeypatch.setattr(predict_mod, "_TASK_TEXTS", 7)  # many tasks, so order across workers matters
    pooled = encode_texts(texts, enc, labels)
    monkeypatch.setattr(predict_mod, "_MEMO_SIZE", 50)  # the chunk memo fills up and is cleared many times
    forgetful = encode_texts(texts, enc, labels)
    for got in (serial, pooled, forgetful):
        assert np.array_equal(got.ids, expected.ids)
        assert np.array_equal(got.offsets, expected.offsets)
        assert np.array_equal(got.labels, expected.labels)


# ---------------------------------------------------------------- eval --data
def test_eval_on_a_labeled_file_matches_eval_on_imdb(trained, tmp_path):
    run_dir, data = str(trained[0]), trained[1]
    texts, labels = read_labeled(data / "aclImdb" / "test")
    spellings = [("1", "0"), ("pos", "neg"), ("Positive", "NEGATIVE"), ("true", "False")]
    rows = [{"review": t, "sentiment": spellings[i % 4][0 if y else 1]} for i, (t, y) in enumerate(zip(texts, labels))]
    random.Random(0).shuffle(rows)  # another order than the directory's: batches differ, metrics must not
    csv_file = write_table(tmp_path / "labeled.csv", rows)
    jsonl_file = tmp_path / "labeled.jsonl"
    jsonl_file.write_text("".join(json.dumps({"text": r["review"], "label": r["sentiment"] in ("1", "pos", "Positive",
                                                                                                "true")}) + "\n"
                                  for r in rows))

    def metrics(*extra: str) -> dict:
        code, text = run("eval", "--run", run_dir, "--json", *extra)
        assert code == 0, text
        return json.loads(text.strip().splitlines()[-1])

    imdb = metrics()
    from_dir = metrics("--data", str(data / "aclImdb" / "test"))
    from_csv = metrics("--data", str(csv_file), "--text-column", "review", "--label-column", "sentiment")
    from_jsonl = metrics("--data", str(jsonl_file))
    assert imdb["accuracy"] > 0.6  # better than chance, so agreeing is not a coincidence
    counts = ("accuracy", "tp", "fp", "tn", "fn", "n")
    for other in (from_dir, from_csv, from_jsonl):
        assert {k: other[k] for k in counts} == {k: imdb[k] for k in counts}
        assert other["loss"] == pytest.approx(imdb["loss"], abs=BATCH_TOL)
    assert from_dir["loss"] == imdb["loss"]  # same reviews in the same order: the very same batches

    code, text = run("eval", "--run", run_dir, "--data", str(csv_file), "--text-column", "review",
                     "--label-column", "sentiment")
    assert code == 0 and "confusion matrix" in text and "accuracy" in text


def read_labeled(path) -> tuple[list[str], np.ndarray]:
    """Texts and IMDB class indices (1 positive) of a labeled file or pos/neg directory."""
    table = read_table(path)
    return table.texts, LabelSpace(IMDB_LABELS).index(table.labels)


def test_eval_data_names_labels_a_two_class_run_does_not_know(trained, tmp_path):
    f = write_table(tmp_path / "odd.csv", [{"text": SAMPLE[0], "label": "pos"}, {"text": SAMPLE[1], "label": "meh"}])
    one_line_error(*run("eval", "--run", str(trained[0]), "--data", str(f)), "'meh'")


def test_eval_data_skips_empty_reviews(trained, tmp_path):
    f = write_table(tmp_path / "gaps.csv", [{"text": SAMPLE[0], "label": "pos"}, {"text": " ", "label": "neg"},
                                            {"text": SAMPLE[1], "label": "neg"}])
    code, text = run("eval", "--run", str(trained[0]), "--data", str(f), "--json")
    assert code == 0, text
    assert "skipped 1 empty review" in text and jsonl(text)[-1]["n"] == 2


# ---------------------------------------------------------------- errors
def bad_files(tmp: Path) -> dict[str, Path]:
    files = {
        "missing_column.csv": "id,review\n1,great\n",
        "missing_field.jsonl": '{"review": "great", "id": 1}\n',
        "bad_json.jsonl": '{"text": "great"}\n{"text": "awful"\n',
        "array.jsonl": '["great"]\n',
        "unclosed_quote.csv": 'text\ngreat\n"awful,\nfilm\n',
        "empty.txt": "",
        "blank.csv": "\n  \n",
        "header_only.csv": "text,label\n",
        "unknown_label.csv": "text,label\ngreat,pos\nawful,neg\nmeh,maybe\n",
        "no_label_column.tsv": "text\tstars\ngreat\t9\n",
        "reviews.xlsx": "text\ngreat\n",
    }
    paths = {}
    for name, content in files.items():
        (tmp / name).write_text(content, encoding="utf-8")
        paths[name] = tmp / name
    (tmp / "binary.txt").write_bytes(b"great film\n\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00")
    paths["binary.txt"] = tmp / "binary.txt"
    (tmp / "plain_dir").mkdir()
    paths["plain_dir"] = tmp / "plain_dir"
    return paths


@pytest.mark.parametrize("command, name, extra, needles", [
    ("predict", "nope.txt", [], ["nope.txt", "not found"]),
    ("predict", "plain_dir", [], ["holds no .txt files", "is a directory"]),
    ("predict", "missing_column.csv", [], ["no column 'text'", "'id', 'review'"]),
    ("predict", "missing_field.jsonl", ["--text-column", "body"], ["no line has a field 'body'", "'review', 'id'"]),
    ("predict", "bad_json.jsonl", [], ["line 2", "not valid JSON"]),
    ("predict", "array.jsonl", [], ["line 1", "not an object"]),
    ("predict", "unclosed_quote.csv", [], ["line 3", "never closed"]),
    ("predict", "empty.txt", [], ["empty.txt is empty"]),
    ("predict", "blank.csv", [], ["blank.csv is empty"]),
    ("predict", "header_only.csv", [], ["no rows"]),
    ("predict", "binary.txt", [], ["line 4", "binary"]),
    ("eval", "unknown_label.csv", [], ["unknown_label.csv: line 4", "unknown label 'maybe'", "pos/neg"]),
    ("eval", "no_label_column.tsv", [], ["no column 'label'", "'text', 'stars'"]),
    ("eval", "reviews.xlsx", [], ["unknown format .xlsx"]),
    ("eval", "plain_dir", [], ["pos/ and neg/"]),
    ("eval", "nope.csv", [], ["nope.csv not found"]),
])
def test_bad_input_is_one_clear_line(trained, tmp_path, command, name, extra, needles):
    path = bad_files(tmp_path).get(name, tmp_path / name)
    option = "--file" if command == "predict" else "--data"
    code, text = run(command, "--run", str(trained[0]), option, str(path), *extra)
    one_line_error(code, text, *needles)


def test_other_predict_mistakes(trained, tmp_path):
    args = ["predict", "--run", str(trained[0])]
    txt = tmp_path / "r.txt"
    txt.write_text("great\n")
    one_line_error(*run(*args, "--file", str(txt), "great"), "not both")
    one_line_error(*run(*args, input=" \n\n"), "standard input is empty")
    one_line_error(*run(*args, "--checkpoint", "middle", "great"), "--checkpoint")
    one_line_error(*run(*args, "--batch-size", "0", "great"), "--batch-size")
    one_line_error(*run("predict", "--run", str(tmp_path / "norun"), "great"), "not found")


def test_a_device_that_does_not_exist_is_one_line_listing_the_valid_ones(trained):
    for device in ("tpu", "gpu"):
        for command in (["predict", "--run", str(trained[0]), "great"], ["eval", "--run", str(trained[0])]):
            one_line_error(*run(*command, "--device", device), repr(device), "auto, cpu, cuda, cuda:N or mps")


def test_labels_that_do_not_fit_the_checkpoint_are_one_error_line(trained, tmp_path):
    import shutil

    run_dir = Path(shutil.copytree(trained[0], tmp_path / "run"))
    LabelSpace(("bad", "meh", "good")).save(run_dir / "labels.json")  # 3 names for a 2-class (1-output) model
    for command in ("predict", "eval"):
        args = [command, "--run", str(run_dir)] + (["great"] if command == "predict" else [])
        one_line_error(*run(*args), "labels.json names 3 classes", "best.pt was trained for 2")


def test_invalid_utf8_in_an_argument_is_replaced_and_counted(trained):
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "sentiment", "predict", "--run", str(trained[0]), "--json",
                           b"great \xff\xfe film", "awful"], capture_output=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    rows = jsonl(done.stdout.decode())
    assert len(rows) == 2 and all("label" in r for r in rows)
    assert b"1 argument had invalid UTF-8" in done.stderr and b"Traceback" not in done.stderr


def test_predict_streams_standard_input(trained):
    """The first rows come out while standard input is still open: predict reads, scores and prints a chunk
    at a time instead of reading everything first (1,000,000 lines once took 24 s to a first row, 1.25 GB)."""
    import subprocess
    import sys
    import threading

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sentiment", "predict", "--run", str(trained[0]), "--json"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        lines = [SAMPLE[i % len(SAMPLE)] for i in range(1000)]  # the first chunk
        proc.stdin.write(("\n".join(lines) + "\n").encode())
        proc.stdin.flush()  # and the input stays open
        first: list[bytes] = []
        reader = threading.Thread(target=lambda: first.append(proc.stdout.readline()))
        reader.start()
        reader.join(120)
        assert first and first[0].startswith(b'{"label"'), (first, proc.stderr.read1() if proc.poll() else b"")
        assert proc.poll() is None  # still reading
        proc.stdin.write(b"awful\n")
        proc.stdin.close()
        rest = proc.stdout.read().splitlines()
        assert proc.wait(60) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    rows = [json.loads(first[0])] + [json.loads(r) for r in rest]
    assert len(rows) == 1001
    assert [r["probability"] for r in rows[:7]] == pytest.approx(probabilities(*run("predict", "--run", str(trained[0]), "--json", *SAMPLE)), abs=BATCH_TOL)


def test_invalid_utf8_in_a_predict_file_is_an_error_naming_file_and_line(trained, tmp_path):
    # the rule training and eval --data follow: the user's own files are strict UTF-8
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("awful\nUn film génial, great\n".encode("latin-1"))
    one_line_error(*run("predict", "--run", str(trained[0]), "--file", str(latin1)), "latin1.txt: line 2",
                   "not valid UTF-8")
    as_csv = tmp_path / "latin1.csv"
    as_csv.write_bytes("text\nawful\nUn film génial\n".encode("latin-1"))
    one_line_error(*run("predict", "--run", str(trained[0]), "--file", str(as_csv)), "latin1.csv: line 3",
                   "not valid UTF-8")


def test_predict_on_parquet_and_a_pos_neg_directory_gives_eval_datas_probabilities(trained, sample_probs, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    run_dir, data = str(trained[0]), trained[1]
    parquet = tmp_path / "reviews.parquet"
    pq.write_table(pa.table({"id": list(range(len(SAMPLE))), "review": SAMPLE}), parquet)
    assert probabilities(*run("predict", "--run", run_dir, "--json", "--file", str(parquet),
                              "--text-column", "review")) == sample_probs
    # a pos/neg directory: predict reads pos/ then neg/ as eval --data does; its probabilities give eval's figures
    test_dir = data / "aclImdb" / "test"
    probs = np.array(probabilities(*run("predict", "--run", run_dir, "--json", "--file", str(test_dir))))
    texts, labels = read_labeled(test_dir)
    assert len(probs) == len(texts)
    code, text = run("eval", "--run", run_dir, "--json", "--data", str(test_dir))
    assert code == 0, text
    metrics = json.loads(text.strip().splitlines()[-1])
    assert metrics["accuracy"] == pytest.approx(float(np.mean((probs >= 0.5) == (labels == 1))), abs=1e-12)
    eps = 1e-12
    loss = float(np.mean(-(labels * np.log(np.maximum(probs, eps)) + (1 - labels) * np.log(np.maximum(1 - probs, eps)))))
    assert metrics["loss"] == pytest.approx(loss, abs=BATCH_TOL)
    # and the Parquet file of the same labeled texts, through eval --data, gives the same figures
    labeled = tmp_path / "labeled.parquet"
    pq.write_table(pa.table({"text": texts, "label": ["pos" if y else "neg" for y in labels]}), labeled)
    code, text = run("eval", "--run", run_dir, "--json", "--data", str(labeled))
    assert code == 0, text
    assert json.loads(text.strip().splitlines()[-1])["accuracy"] == metrics["accuracy"]


def test_help_lists_predict():
    code, text = run("--help")
    assert code == 0 and "predict" in text
