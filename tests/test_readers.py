"""read_table: every supported file gives texts, labels as strings and the line each row starts on; every
problem a user can cause is one SentimentError line that names the file (and the line, where there is one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from sentiment.data import readers
from sentiment.errors import SentimentError
from sentiment.data.readers import read_table, read_texts

AIRLINE = Path(__file__).resolve().parents[2] / "shared" / "data" / "airline_tweets.csv"


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def error(path: Path, *needles: str, **kwargs) -> str:
    """The message read_table raises for path: one line, naming the file and each needle."""
    with pytest.raises(SentimentError) as info:
        read_table(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    for needle in needles:
        assert needle in message, message
    return message


def write_jsonl(path: Path, rows: list) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


def write_parquet(path: Path, columns: dict) -> Path:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table(columns), path)
    return path


# ---------------------------------------------------------------- what is read
def test_quoted_csv_fields_with_commas_and_newlines_and_the_line_each_row_starts_on(tmp_path):
    path = write(tmp_path / "data.csv", 'id,text,label\n'
                                        '1,"good, really good",pos\n'
                                        '2,"first line\nsecond ""quoted"" line\nthird",neg\n'
                                        '3,plain,pos\n')
    table = read_table(path)
    assert table.texts == ["good, really good", 'first line\nsecond "quoted" line\nthird', "plain"]
    assert table.labels == ["pos", "neg", "pos"]
    assert table.lines == [2, 3, 6]  # the header is line 1; row 2 takes lines 3-5
    assert table.source == str(path) and len(table) == 3
    assert table.where(2) == f"{path}: line 6"


def test_tsv_and_crlf_line_ends(tmp_path):
    path = write(tmp_path / "data.tsv", 'label\ttext\r\npos\t"a, b"\r\n\r\nneg\tc\r\n')
    table = read_table(path)
    assert (table.texts, table.labels, table.lines) == (["a, b", "c"], ["pos", "neg"], [2, 4])


@pytest.mark.skipif(not AIRLINE.exists(), reason=f"{AIRLINE} is not here")
def test_the_airline_tweets_with_their_multi_line_quoted_tweets():
    table = read_table(AIRLINE, text_column="text", label_column="airline_sentiment")
    assert len(table) == 14_640 == len(table.labels) == len(table.lines)
    assert Counter(table.labels) == {"negative": 9_178, "neutral": 3_099, "positive": 2_363}
    assert table.lines[0] == 2 and table.lines[-1] > 14_641  # some tweets span lines
    assert any("\n" in t for t in table.texts)


def test_unlabeled_needs_no_label_column(tmp_path):
    path = write(tmp_path / "data.csv", "text\nfirst\nsecond\n")
    table = read_table(path, label_column=None)
    assert table.texts == ["first", "second"] and table.labels is None and table.lines == [2, 3]
    jsonl = write_jsonl(tmp_path / "data.jsonl", [{"text": "a"}, {"text": "b", "label": None}])
    assert read_table(jsonl, label_column=None).labels is None


def test_blank_lines_are_not_rows(tmp_path):
    csv_path = write(tmp_path / "data.csv", "\ntext,label\n\na,pos\n   \n\nb,neg\n\n")
    table = read_table(csv_path)
    assert (table.texts, table.labels, table.lines) == (["a", "b"], ["pos", "neg"], [4, 7])
    jsonl = write(tmp_path / "data.jsonl", '\n{"text": "a", "label": 1}\n  \n\r\n{"text": "b", "label": 0}\n\n')
    table = read_table(jsonl)
    assert (table.texts, table.labels, table.lines) == (["a", "b"], ["1", "0"], [2, 5])


def test_a_bom_at_the_start_is_dropped(tmp_path):
    table = read_table(write(tmp_path / "data.csv", b"\xef\xbb\xbftext,label\nhi,pos\n"))
    assert table.texts == ["hi"] and table.labels == ["pos"]
    table = read_table(write(tmp_path / "data.jsonl", b'\xef\xbb\xbf{"text": "hi", "label": "neg"}\n'))
    assert table.texts == ["hi"] and table.labels == ["neg"]


def test_rows_without_text_are_kept_as_empty_strings(tmp_path):
    path = write(tmp_path / "data.csv", 'text,label\n"",pos\nhi,neg\n,pos\n')
    assert read_table(path).texts == ["", "hi", ""]
    path = write(tmp_path / "data.csv", "label,text\npos,a\nneg\n")  # a short row
    assert read_table(path).texts == ["a", ""]
    path = write_jsonl(tmp_path / "data.jsonl", [{"text": None, "label": 1}, {"label": 0}, {"text": "x", "label": 1}])
    table = read_table(path)
    assert table.texts == ["", "", "x"] and table.labels == ["1", "0", "1"] and table.lines == [1, 2, 3]


def test_rows_without_text_still_need_a_label(tmp_path):
    error(write(tmp_path / "data.csv", "text,label\nhi,pos\n,\n"), "line 3: empty label in column 'label'")
    error(write_jsonl(tmp_path / "data.jsonl", [{"text": "a", "label": 1}, {"text": "", "label": ""}]),
          "line 2: empty label in column 'label'")


def test_labels_are_strings_as_they_read(tmp_path):
    rows = [{"text": "a", "label": 1}, {"text": "b", "label": 0}, {"text": "c", "label": True},
            {"text": "d", "label": False}, {"text": "e", "label": 1.0}, {"text": "f", "label": 0.5},
            {"text": 7, "label": "pos"}]
    table = read_table(write_jsonl(tmp_path / "data.jsonl", rows))
    assert table.labels == ["1", "0", "true", "false", "1", "0.5", "pos"]
    assert table.texts == ["a", "b", "c", "d", "e", "f", "7"]


def test_parquet_labels_are_strings_too(tmp_path):
    texts = ["a", None, "c"]
    for values, expected in (([1, 0, 1], ["1", "0", "1"]), ([True, False, True], ["true", "false", "true"]),
                             ([1.0, 0.0, 1.0], ["1", "0", "1"]), (["pos", "neg", "pos"], ["pos", "neg", "pos"])):
        table = read_table(write_parquet(tmp_path / "data.parquet", {"text": texts, "label": values}))
        assert (table.texts, table.labels, table.lines) == (["a", "", "c"], expected, [1, 2, 3])
        assert table.source == str(tmp_path / "data.parquet")


def test_parquet_reads_only_the_columns_it_needs(tmp_path, monkeypatch):
    pq = pytest.importorskip("pyarrow.parquet")
    path = write_parquet(tmp_path / "data.parquet", {"id": [1, 2], "text": ["a", "b"], "y": [1, 0], "extra": [0, 0]})
    asked = []
    real = pq.read_table
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: asked.append(k.get("columns")) or real(*a, **k))
    table = read_table(path, label_column="y")
    assert asked == [["text", "y"]] and table.labels == ["1", "0"]
    assert read_table(path, label_column=None).labels is None and asked[-1] == ["text"]


def test_parquet_without_pyarrow_says_how_to_get_it(tmp_path, monkeypatch):
    path = write(tmp_path / "data.parquet", b"PAR1 whatever")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` fail
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    error(path, "pip install pyarrow")


def test_a_pos_neg_directory_in_natural_order(tmp_path):
    for folder, names in (("pos", ["10_7.txt", "9_8.txt", "2_9.txt"]), ("neg", ["1_1.txt", "0_2.txt"])):
        (tmp_path / folder).mkdir()
        for name in names:
            write(tmp_path / folder / name, f"{folder} {name}")
    write(tmp_path / "pos" / "notes.md", "not a review")
    write(tmp_path / "neg" / "1_1.txt", b"bad \xff byte")  # replaced, as IMDB training does
    table = read_table(tmp_path)
    assert table.texts == ["pos 2_9.txt", "pos 9_8.txt", "pos 10_7.txt", "neg 0_2.txt", "bad \ufffd byte"]
    assert table.labels == ["pos"] * 3 + ["neg"] * 2
    assert table.lines == [1, 2, 3, 4, 5] and table.source == str(tmp_path)
    assert read_table(tmp_path, label_column=None).labels is None


# ---------------------------------------------------------------- errors
def test_a_directory_without_pos_and_neg(tmp_path):
    error(tmp_path, "without pos/ and neg/")
    (tmp_path / "pos").mkdir()
    (tmp_path / "neg").mkdir()
    error(tmp_path, "no .txt reviews")


def test_missing_file_and_unknown_suffix(tmp_path):
    error(tmp_path / "nope.csv", "not found")
    error(write(tmp_path / "data.txt", "text,label\na,pos\n"), "unknown format .txt", ".parquet")
    error(write(tmp_path / "data", "text,label\na,pos\n"), "unknown format (no suffix)")


@pytest.mark.parametrize("name", ["data.csv", "data.tsv", "data.jsonl", "data.parquet"])
@pytest.mark.parametrize("content", [b"", b"  \n\n \r\n\t", b"\xef\xbb\xbf"])
def test_empty_files(tmp_path, name, content):
    if name.endswith(".parquet") and content:
        pytest.skip("a Parquet file of whitespace is simply not Parquet (tested below)")
    error(write(tmp_path / name, content), "is empty")


def test_a_header_but_no_rows(tmp_path):
    error(write(tmp_path / "data.csv", "text,label\n\n\n"), "has a header but no rows")
    error(write_parquet(tmp_path / "data.parquet", {"text": [], "label": []}), "has no rows")


def test_a_missing_column_names_the_columns_there_are(tmp_path):
    error(write(tmp_path / "data.csv", "review,label\na,pos\n"), "no column 'text'", "'review', 'label'")
    error(write(tmp_path / "data.csv", "text,stars\na,5\n"), "no column 'label'", "'text', 'stars'")
    error(write_jsonl(tmp_path / "data.jsonl", [{"text": "a", "label": 1}, {"text": "b", "stars": 5}]),
          "line 2 has no field 'label'", "'text', 'stars'")
    error(write_jsonl(tmp_path / "data.jsonl", [{"review": "a", "label": 1}]),
          "no line has a field 'text'", "'review', 'label'")
    path = write_parquet(tmp_path / "data.parquet", {"review": ["a"], "label": [1]})
    error(path, "no column 'text'", "'review', 'label'")


def test_an_empty_or_missing_label_names_the_line(tmp_path):
    # line 7, after a row spread over lines 3-5, and a blank line 6
    path = write(tmp_path / "data.csv", 'text,label\na,pos\n"b\n\nb",neg\n\nc,\nd,pos\n')
    assert error(path) == f"{path}: line 7: empty label in column 'label'"
    error(write(tmp_path / "data.csv", "text,label\na,pos\nb,  \n"), "line 3: empty label")
    error(write(tmp_path / "data.csv", "text,label,id\na,pos,1\nb\n"), "line 3: empty label")  # a short row
    error(write(tmp_path / "data.csv", "text,label\na,pos\nb\n"), "line 3: empty label")
    error(write_jsonl(tmp_path / "data.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": None}]),
          "line 2: empty label in column 'label'")
    error(write_jsonl(tmp_path / "data.jsonl", [{"text": "a", "label": float("nan")}]), "line 1: empty label")
    error(write_parquet(tmp_path / "data.parquet", {"text": ["a", "b", "c"], "label": ["pos", "neg", None]}),
          "row 3: empty label in column 'label'")


def test_bytes_that_are_not_utf8_name_their_line(tmp_path):
    path = write(tmp_path / "data.csv", b"text,label\na,pos\nb,neg\ncaf\xe9,pos\n")
    assert error(path, "line 4", "not valid UTF-8", "0xe9")
    error(write(tmp_path / "data.jsonl", b'{"text": "a", "label": 1}\n{"text": "\xc3(", "label": 1}\n'),
          "line 2", "not valid UTF-8")
    # far past the first chunk the streaming decoder reads, and after a BOM
    path = write(tmp_path / "big.csv", b"\xef\xbb\xbftext,label\n" + b"a,pos\n" * 100_000 + b"\xff,neg\n")
    error(path, "line 100002", "0xff")


def test_reading_texts_to_predict_is_as_strict_as_training(tmp_path):
    # one decoding rule for files in every command: predict's reader names the file and line too
    for name, content in (("data.csv", b"text\nfine\ncaf\xe9\n"), ("data.txt", b"fine\ncaf\xe9\n"),
                          ("data.jsonl", b'{"text": "fine"}\n{"text": "caf\xe9"}\n')):
        with pytest.raises(SentimentError, match=rf"{name}: line (3|2) is not valid UTF-8"):
            read_texts(write(tmp_path / name, content))
    with pytest.raises(SentimentError, match="standard input: line 2 is not valid UTF-8"):
        readers.read_stream(b"fine\ncaf\xe9\n")


def test_predicts_reader_reads_every_format_training_reads(tmp_path):
    texts = ["good one", "bad one", "so-so"]
    labels = ["pos", "neg", "pos"]
    csv_path = write(tmp_path / "a.csv", "text,label\n" + "".join(f"{t},{l}\n" for t, l in zip(texts, labels)))
    jsonl_path = write_jsonl(tmp_path / "a.jsonl", [{"text": t, "label": l} for t, l in zip(texts, labels)])
    parquet_path = write_parquet(tmp_path / "a.parquet", {"text": texts, "label": labels})
    for path in (csv_path, jsonl_path, parquet_path):
        assert read_texts(path).texts == texts
    root = tmp_path / "dir"
    for folder, names in (("pos", ["2_9.txt", "10_8.txt"]), ("neg", ["1_1.txt"])):
        (root / folder).mkdir(parents=True)
        for i, name in enumerate(names):
            (root / folder / name).write_text(f"{folder} {i}", encoding="utf-8")
    assert read_texts(root).texts == read_table(root).texts == ["pos 0", "pos 1", "neg 0"]
    assert read_texts(write(tmp_path / "plain.txt", "one\ntwo\n")).texts == ["one", "two"]


def test_directories_replace_bad_bytes_as_imdb_and_count_the_files(tmp_path):
    root = tmp_path / "dir"
    (root / "pos").mkdir(parents=True)
    (root / "neg").mkdir()
    (root / "pos" / "1_9.txt").write_bytes(b"caf\xe9 fine")
    (root / "neg" / "1_1.txt").write_bytes(b"bad")
    table = read_table(root)
    assert table.texts == ["caf\ufffd fine", "bad"] and table.replaced == 1


def test_malformed_jsonl(tmp_path):
    error(write(tmp_path / "data.jsonl", '{"text": "a", "label": 1}\n\n{"text": "b", label: 1}\n'),
          "line 3 is not valid JSON")
    error(write(tmp_path / "data.jsonl", '{"text": "a", "label": 1}\n["b", 1]\n'), "line 2 is a JSON list, not an object")


def test_an_unclosed_quote(tmp_path):
    path = write(tmp_path / "data.csv", 'text,label\na,pos\n"never closed,neg\nc,pos\nd,neg\n')
    error(path, "line 3", "never closed")


def test_nul_bytes_mean_a_binary_file(tmp_path):
    error(write(tmp_path / "data.csv", b"text,label\na,pos\nb\0,neg\n"), "line 3 has a NUL byte")
    error(write(tmp_path / "data.jsonl", "\ufeff{\"text\": \"a\"}\n".encode("utf-16")), "NUL byte")


def test_not_a_parquet_file(tmp_path):
    pytest.importorskip("pyarrow")
    error(write(tmp_path / "data.parquet", "text,label\na,pos\n"), "not a readable Parquet file")


# ---------------------------------------------------------------- faults
def test_a_lone_surrogate_in_jsonl_is_an_error_naming_the_line(tmp_path):
    # a tweet cut in the middle of an emoji: valid JSON, not text
    path = write(tmp_path / "data.jsonl", '{"text": "fine", "label": 1}\n{"text": "cut \\ud83d", "label": 0}\n')
    error(path, "line 2", "lone surrogate")
    error(write(tmp_path / "l.jsonl", '{"text": "a", "label": "\\udc00"}\n'), "line 1", "lone surrogate")
    with pytest.raises(SentimentError, match="line 2 holds a lone surrogate"):
        read_texts(path)
    # a pair that makes one character is fine
    assert read_table(write(tmp_path / "ok.jsonl", '{"text": "\\ud83d\\ude00", "label": 1}\n')).texts == ["\U0001f600"]


def test_json_objects_or_lists_as_text_or_label_are_refused(tmp_path):
    error(write_jsonl(tmp_path / "a.jsonl", [{"text": "a", "label": 1}, {"text": {"body": "b"}, "label": 0}]),
          "line 2", "'text' is a JSON object")
    error(write_jsonl(tmp_path / "b.jsonl", [{"text": "a", "label": [1]}]), "line 1", "'label' is a JSON array")


def test_duplicate_column_names_are_refused(tmp_path):
    error(write(tmp_path / "data.csv", "text,text,label\na,b,pos\n"), "'text' appears twice")
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "data.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array(["a"]), pa.array(["b"]), pa.array(["pos"])],
                                        names=["text", "text", "label"]), path)
    error(path, "'text' appears twice")


def test_the_same_column_for_text_and_label_says_so(tmp_path):
    path = write(tmp_path / "data.csv", "text,label\na,pos\n")
    with pytest.raises(SentimentError, match="text column and the label column are both 'text'"):
        read_table(path, "text", "text")


def test_a_named_pipe_is_refused_not_read_for_ever(tmp_path):
    fifo = tmp_path / "data.csv"
    os.mkfifo(fifo)
    error(fifo, "not a regular file")
    with pytest.raises(SentimentError, match="not a regular file"):
        read_texts(fifo)


def test_a_dangling_symlink_in_a_pos_neg_directory(tmp_path):
    root = tmp_path / "dir"
    (root / "pos").mkdir(parents=True)
    (root / "neg").mkdir()
    (root / "pos" / "1_9.txt").write_text("good", encoding="utf-8")
    (root / "neg" / "1_1.txt").symlink_to(tmp_path / "gone.txt")
    error(root, "1_1.txt", "symbolic link", "does not exist")


def test_reading_leaves_csvs_field_size_limit_as_it_was(tmp_path):
    import csv

    before = csv.field_size_limit()
    long = "x" * 200_000  # over csv's default 128 KiB limit
    assert read_table(write(tmp_path / "data.csv", f"text,label\n{long},pos\n")).texts == [long]
    assert csv.field_size_limit() == before


def test_importing_the_readers_changes_no_global_state():
    code = ("import csv; before = csv.field_size_limit(); import sentiment.data.readers; "
            "assert csv.field_size_limit() == before, csv.field_size_limit()")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


# ---------------------------------------------------------------- speed
def test_a_large_csv_is_read_in_one_pass(tmp_path):
    """A million-row file is the use case: 100,000 rows come back whole and in order."""
    rows = 100_000
    path = write(tmp_path / "data.csv", "text,label\n" + "".join(f"review {i},{'pos' if i % 2 else 'neg'}\n"
                                                                   for i in range(rows)))
    table = read_table(path)
    assert len(table) == rows and table.texts[-1] == f"review {rows - 1}" and table.lines[-1] == rows + 1
    assert Counter(table.labels) == {"pos": rows // 2, "neg": rows // 2}


# ---------------------------------------------------------------- rows wider than the header; Parquet types
def test_a_row_with_more_fields_than_the_header_names_the_line_and_says_quote(tmp_path):
    # label first, texts with unquoted commas: reading two fields would cut each text at its first comma
    path = write(tmp_path / "data.csv", 'label,text\npos,"quoted, fine"\nneg,plain\npos,great film, really\n')
    assert error(path) == (f"{path}: line 4 has 3 fields, the header 2: a text holding a comma must be quoted "
                           '("like, this"); write the file with a CSV writer (or as JSONL)')
    error(write(tmp_path / "data.tsv", "text\tlabel\na\tpos\nb\tneg\textra\n"), "line 3 has 3 fields", "a tab")
    error(write(tmp_path / "texts.csv", "text\nfine\nnot, fine\n"), "line 3 has 2 fields", label_column=None)


def test_a_binary_parquet_text_column_is_decoded_as_utf8(tmp_path):
    pa = pytest.importorskip("pyarrow")
    path = write_parquet(tmp_path / "data.parquet", {"text": pa.array([b"scene \xc3\xa9", None, b"b"], pa.binary()),
                                                     "label": pa.array([b"pos", b"neg", b"pos"], pa.large_binary())})
    table = read_table(path)
    assert (table.texts, table.labels) == (["scene é", "", "b"], ["pos", "neg", "pos"])
    bad = write_parquet(tmp_path / "bad.parquet", {"text": pa.array([b"a", b"caf\xe9"], pa.binary()), "label": [1, 0]})
    error(bad, "row 2: column 'text' holds bytes that are not UTF-8", "0xe9")


def test_a_list_or_struct_parquet_column_is_refused(tmp_path):
    path = write_parquet(tmp_path / "data.parquet", {"text": [["scene", "one"], ["two"]], "label": [1, 0]})
    error(path, "column 'text' holds lists (list<element: string>), not text")
    path = write_parquet(tmp_path / "data.parquet", {"text": ["a", "b"], "label": [{"y": 1}, {"y": 0}]})
    error(path, "column 'label' holds structs (struct<y: int64>)")
