"""GloVe loading (text, zip, binary cache) and embedding-matrix construction, on tiny dim-4 files."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from sentiment.data import glove as glove_mod
from sentiment.errors import DataMissingError, SentimentError
from sentiment.data.glove import Coverage, GloVe, build_embedding_matrix, glove_file, load_glove

TEXT = (
    "the 0.1 -0.2 0.3 0.4\n"
    "cat 1.5 2 -3.25 0.0\n"
    "dog -0.5 .25 0.125 -1\n"
    "e.g. 0.001 -0.002 0.003 -0.004\n"
)
WORDS = ["the", "cat", "dog", "e.g."]
VECTORS = np.array(
    [[0.1, -0.2, 0.3, 0.4], [1.5, 2, -3.25, 0.0], [-0.5, 0.25, 0.125, -1], [0.001, -0.002, 0.003, -0.004]],
    dtype=np.float32,
)


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def write_zip(path: Path, members: dict[str, str | bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def txt(tmp_path: Path) -> Path:
    return write(tmp_path / "glove.6B.4d.txt", TEXT)


@pytest.fixture
def parse_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts how often the text parser runs (i.e. the source is read instead of the cache)."""
    calls: list[int] = []
    real = glove_mod._parse_stream

    def counting(stream):
        calls.append(1)
        return real(stream)

    monkeypatch.setattr(glove_mod, "_parse_stream", counting)
    return calls


def assert_same(glove: GloVe, words: list[str], vectors: np.ndarray) -> None:
    assert glove.words == words
    assert glove.vectors.dtype == np.float32
    np.testing.assert_array_equal(glove.vectors, vectors)


# --- parsing ----------------------------------------------------------------------------------------


def test_load_txt(txt: Path) -> None:
    glove = load_glove(txt)
    assert_same(glove, WORDS, VECTORS)
    assert glove.dim == 4
    assert glove.skipped_lines == 0
    assert glove.index() == {"the": 0, "cat": 1, "dog": 2, "e.g.": 3}


def test_zip_and_txt_give_identical_result(tmp_path: Path, txt: Path) -> None:
    archive = write_zip(tmp_path / "glove.zip", {"glove.6B.4d.txt": TEXT, "README": "not vectors"})
    from_txt, from_zip = load_glove(txt), load_glove(archive)
    assert from_zip.words == from_txt.words
    np.testing.assert_array_equal(from_zip.vectors, from_txt.vectors)
    assert from_zip.skipped_lines == from_txt.skipped_lines == 0


def test_zip_with_several_members_needs_member(tmp_path: Path) -> None:
    other = "a 1 2\nb 3 4\n"
    archive = write_zip(tmp_path / "glove.zip", {"glove.6B.4d.txt": TEXT, "sub/glove.6B.2d.txt": other})
    with pytest.raises(SentimentError, match="glove.6B.2d.txt"):
        load_glove(archive)
    assert load_glove(archive, member="sub/glove.6B.2d.txt").words == ["a", "b"]
    assert_same(load_glove(archive, member="glove.6B.4d.txt"), WORDS, VECTORS)
    with pytest.raises(SentimentError, match="no member"):
        load_glove(archive, member="glove.6B.300d.txt")


def test_broken_zip_is_a_sentiment_error(tmp_path: Path) -> None:
    with pytest.raises(SentimentError, match="zip"):
        load_glove(write(tmp_path / "glove.zip", b"this is not a zip archive"))


def test_lines_with_wrong_value_count_are_skipped_and_counted(tmp_path: Path) -> None:
    text = (
        "the 0.1 -0.2 0.3 0.4\n"
        "short 1 2 3\n"  # 3 values
        "\n"  # blank lines are not errors
        "cat 1.5 2 -3.25 0.0\r\n"  # Windows line end
        "long 1 2 3 4 5\n"
        "novalues\n"
        "bad 1 2 x 4\n"  # right count, not a number
        "gap 1  2 3\n"  # 4 fields by spaces, one of them empty
        "dog -0.5 .25 0.125 -1 \n"  # trailing space
        "e.g. 0.001 -0.002 0.003 -0.004"  # no final newline
    )
    glove = load_glove(write(tmp_path / "g.txt", text))
    assert_same(glove, WORDS, VECTORS)
    assert glove.skipped_lines == 5


def test_dim_comes_from_the_first_line(tmp_path: Path) -> None:
    glove = load_glove(write(tmp_path / "g.txt", "a 1 2\nb 1 2 3 4\nc 5 6\n"))
    assert glove.words == ["a", "c"] and glove.dim == 2 and glove.skipped_lines == 1


@pytest.mark.parametrize("block_bytes", [1, 7, 64, 1 << 20])
def test_block_size_does_not_change_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block_bytes: int) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(300, 4)).astype(np.float32)
    lines = [f"w{i} " + " ".join(f"{v:.6f}" for v in row) for i, row in enumerate(vectors)]
    path = write(tmp_path / "g.txt", "\n".join(lines) + "\n")
    expected = np.array([[float(x) for x in line.split()[1:]] for line in lines], dtype=np.float32)
    monkeypatch.setattr(glove_mod, "_BLOCK_BYTES", block_bytes)
    assert_same(load_glove(path), [f"w{i}" for i in range(300)], expected)


@pytest.mark.parametrize("block_bytes", [1, 1 << 20])  # 1: every line is its own block
def test_number_formats_match_float_parsing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block_bytes: int
) -> None:
    # The fast parser handles plain decimals itself and hands a block with anything else to numpy;
    # both must give what float() rounded to float32 gives, bit for bit.
    assert glove_mod._parse_values(b"1 -2 0 -0.0\n.5 -.5 5. 007", 2, 4) is not None  # fast path taken
    monkeypatch.setattr(glove_mod, "_BLOCK_BYTES", block_bytes)
    values = [
        ["1", "-2", "0", "-0.0"],
        [".5", "-.5", "5.", "007"],
        ["0.00066023", "-0.0012345678", "123456.78", "-99999999.5"],
        ["0.1234567890123456", "1e-3", "-2.5E+2", "nan"],
        ["inf", "-inf", "+1.5", "3.4028235e38"],
        ["0.30000000000000004", "1.00000005960464477", "16777217", "-1.4e-45"],
    ]
    text = "".join(f"w{i} {' '.join(row)}\n" for i, row in enumerate(values))
    glove = load_glove(write(tmp_path / "g.txt", text))
    expected = np.array([[np.float32(float(v)) for v in row] for row in values], dtype=np.float32)
    assert glove.skipped_lines == 0
    np.testing.assert_array_equal(glove.vectors.view(np.uint32), expected.view(np.uint32))


def test_non_utf8_bytes_do_not_crash(tmp_path: Path) -> None:
    data = b"caf\xe9 1 2\n\xff\xfe 3 4\nok\xc3\xa9 5 6\nbad 1 \xff\n"
    glove = load_glove(write(tmp_path / "g.txt", data))
    assert glove.words == ["caf\ufffd", "\ufffd\ufffd", "ok\u00e9"]
    np.testing.assert_array_equal(glove.vectors, [[1, 2], [3, 4], [5, 6]])
    assert glove.skipped_lines == 1


def test_utf8_bom_is_not_part_of_the_first_word(tmp_path: Path) -> None:
    assert load_glove(write(tmp_path / "g.txt", b"\xef\xbb\xbfthe 1 2\n")).words == ["the"]


@pytest.mark.parametrize("data", ["", "\n\n", "onlyword\n", "x 1 a\n"])
def test_file_without_valid_line_is_a_sentiment_error(tmp_path: Path, data: str) -> None:
    with pytest.raises(SentimentError, match="no valid GloVe line"):
        load_glove(write(tmp_path / "g.txt", data))


def test_missing_file_is_data_missing(tmp_path: Path) -> None:
    with pytest.raises(DataMissingError, match="make download-data"):
        load_glove(tmp_path / "nope.txt")


# --- cache ------------------------------------------------------------------------------------------


def test_cache_is_written_then_used(tmp_path: Path, txt: Path, parse_calls: list[int]) -> None:
    cache = tmp_path / "cache"
    first = load_glove(txt, cache)
    assert len(parse_calls) == 1
    names = sorted(p.name for p in cache.iterdir())
    assert [n.rsplit(".", 1)[-1] for n in names] == ["json", "npy", "txt"]  # no temp files left
    second = load_glove(txt, cache)
    assert len(parse_calls) == 1  # not parsed again
    assert_same(second, first.words, first.vectors)
    assert second.skipped_lines == first.skipped_lines


def test_cache_keeps_skipped_count_and_odd_words(tmp_path: Path, parse_calls: list[int]) -> None:
    path = write(tmp_path / "g.txt", b"a 1 2\nbad 1\n\xff 3 4\nb\xc3\xa9 5 6\n")
    first = load_glove(path, tmp_path / "cache")
    second = load_glove(path, tmp_path / "cache")
    assert len(parse_calls) == 1
    assert second.words == first.words == ["a", "\ufffd", "b\u00e9"]
    assert second.skipped_lines == 1


def test_cache_is_per_zip_member(tmp_path: Path, parse_calls: list[int]) -> None:
    archive = write_zip(tmp_path / "g.zip", {"glove.a.txt": "a 1 2\n", "glove.b.txt": "b 3 4\n"})
    assert load_glove(archive, tmp_path / "cache", member="glove.a.txt").words == ["a"]
    assert load_glove(archive, tmp_path / "cache", member="glove.b.txt").words == ["b"]
    assert load_glove(archive, tmp_path / "cache", member="glove.a.txt").words == ["a"]
    assert len(parse_calls) == 2


def test_cache_is_invalidated_when_source_changes(tmp_path: Path, txt: Path, parse_calls: list[int]) -> None:
    cache = tmp_path / "cache"
    load_glove(txt, cache)
    old_files = set(cache.iterdir())
    before = txt.stat()
    write(txt, TEXT.replace("the 0.1", "the 9.5"))  # same size, new content
    os.utime(txt, ns=(before.st_atime_ns, before.st_mtime_ns + 2_000_000_000))
    glove = load_glove(txt, cache)
    assert len(parse_calls) == 2
    assert glove.vectors[0, 0] == np.float32(9.5)
    assert not old_files & set(cache.iterdir())  # the stale version was removed
    load_glove(txt, cache)
    assert len(parse_calls) == 2


def cache_file(cache: Path, suffix: str) -> Path:
    (path,) = cache.glob(f"*{suffix}")
    return path


def truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda c: truncate(cache_file(c, ".npy"), 100), id="truncated-npy"),
        pytest.param(lambda c: cache_file(c, ".npy").write_bytes(b"garbage"), id="garbage-npy"),
        pytest.param(lambda c: cache_file(c, ".npy").unlink(), id="missing-npy"),
        pytest.param(lambda c: np.save(cache_file(c, ".npy"), VECTORS.astype(np.float64)), id="wrong-dtype-npy"),
        pytest.param(lambda c: np.save(cache_file(c, ".npy"), VECTORS[:, :3]), id="wrong-shape-npy"),
        pytest.param(lambda c: cache_file(c, ".words.txt").write_text("the\ncat\ndog"), id="word-count-mismatch"),
        pytest.param(lambda c: cache_file(c, ".words.txt").write_bytes(b"\xff\xfe"), id="words-not-utf8"),
        pytest.param(lambda c: cache_file(c, ".json").write_text("{not json"), id="garbage-meta"),
    ],
)
def test_corrupt_cache_is_rebuilt(tmp_path: Path, txt: Path, parse_calls: list[int], damage) -> None:
    cache = tmp_path / "cache"
    load_glove(txt, cache)
    damage(cache)
    assert_same(load_glove(txt, cache), WORDS, VECTORS)
    assert len(parse_calls) == 2
    assert_same(load_glove(txt, cache), WORDS, VECTORS)  # and the rebuilt cache is used again
    assert len(parse_calls) == 2


class Killed(BaseException):
    """Stands in for the process being killed mid-write (not an Exception, like KeyboardInterrupt)."""


def test_killed_cache_write_leaves_nothing_loadable(
    tmp_path: Path, txt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"

    def dies_halfway(file, array, **kwargs):
        file.write(b"\x93NUMPY partial")
        raise Killed

    monkeypatch.setattr(glove_mod.np, "save", dies_halfway)
    with pytest.raises(Killed):
        load_glove(txt, cache)
    monkeypatch.undo()
    assert list(cache.iterdir()) == []  # the partial temp file is gone, nothing under a final name
    assert_same(load_glove(txt, cache), WORDS, VECTORS)
    assert len(list(cache.glob("*.json"))) == 1


def test_unwritable_cache_dir_still_loads(tmp_path: Path, txt: Path) -> None:
    not_a_dir = write(tmp_path / "cache", "a file where the cache dir should be")
    assert_same(load_glove(txt, not_a_dir), WORDS, VECTORS)


# --- glove_file -------------------------------------------------------------------------------------


def test_glove_file_found(tmp_path: Path) -> None:
    (tmp_path / "glove").mkdir()
    path = write(tmp_path / "glove" / "glove.6B.100d.txt", "a 1\n")
    assert glove_file(tmp_path, 100) == path


def test_glove_file_missing_lists_available_dims(tmp_path: Path) -> None:
    (tmp_path / "glove").mkdir()
    for dim in (100, 50):
        write(tmp_path / "glove" / f"glove.6B.{dim}d.txt", "a 1\n")
    with pytest.raises(DataMissingError) as err:
        glove_file(tmp_path, 300)
    message = str(err.value)
    assert "on disk: 50d, 100d" in message
    assert "make download-data" in message and "sentiment download --glove-dim 300" in message
    assert "\n" not in message


def test_glove_file_missing_with_nothing_downloaded(tmp_path: Path) -> None:
    with pytest.raises(DataMissingError, match="on disk: none"):
        glove_file(tmp_path, 50)


# --- embedding matrix -------------------------------------------------------------------------------


@pytest.fixture
def small() -> GloVe:
    return GloVe(words=list(WORDS), vectors=VECTORS.copy())


def test_matrix_copies_known_rows_and_zeroes_pad(small: GloVe) -> None:
    tokens = ["the", "<unk>", "dog", "zzz", "cat"]  # pad_index 0 is "the": pad wins, the row is zeros
    matrix, _ = build_embedding_matrix(tokens, small, pad_index=0, unk_init="zeros")
    assert matrix.shape == (5, 4) and matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix[0], 0)
    np.testing.assert_array_equal(matrix[2], VECTORS[2])
    np.testing.assert_array_equal(matrix[4], VECTORS[1])
    np.testing.assert_array_equal(matrix[[1, 3]], 0)


def test_random_init_is_seeded_and_only_for_unknown_rows(small: GloVe) -> None:
    tokens = ["<pad>", "the", "zzz", "yyy"]
    a, _ = build_embedding_matrix(tokens, small, unk_init="random", seed=3)
    b, _ = build_embedding_matrix(tokens, small, unk_init="random", seed=3)
    c, _ = build_embedding_matrix(tokens, small, unk_init="random", seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[2:], c[2:])
    np.testing.assert_array_equal(a[0], 0)  # pad
    np.testing.assert_array_equal(a[1], VECTORS[0])  # known row copied, not random
    assert np.all(a[2:] != 0)
    no_pad, _ = build_embedding_matrix(tokens, small, pad_index=None, seed=3)
    assert np.all(no_pad[0] != 0)


def test_random_init_std(small: GloVe) -> None:
    tokens = [f"unknown{i}" for i in range(5000)]
    default, _ = build_embedding_matrix(tokens, small, pad_index=None)
    assert default.std() == pytest.approx(VECTORS.std(), rel=0.05)
    chosen, _ = build_embedding_matrix(tokens, small, pad_index=None, init_std=0.01)
    assert chosen.std() == pytest.approx(0.01, rel=0.05)


def test_coverage_by_hand(small: GloVe) -> None:
    tokens = ["<pad>", "<unk>", "the", "cat", "zzz", "dog"]
    counts = [0, 7, 12, 3, 4, 1]  # specials' counts must not count
    _, cov = build_embedding_matrix(tokens, small, token_counts=counts, specials={0, 1})
    assert cov == Coverage(vocab_found=3, vocab_total=4, tokens_found=16, tokens_total=20)
    assert cov.vocab_share == pytest.approx(0.75)
    assert cov.token_share == pytest.approx(0.8)
    _, unweighted = build_embedding_matrix(tokens, small, specials=[0, 1])
    assert (unweighted.tokens_found, unweighted.tokens_total) == (3, 4)
    _, with_specials = build_embedding_matrix(tokens, small, token_counts=counts)
    assert (with_specials.vocab_found, with_specials.vocab_total) == (3, 6)
    assert with_specials.token_share == pytest.approx(16 / 27)


def test_empty_coverage_shares_are_zero() -> None:
    assert Coverage(0, 0, 0, 0).vocab_share == 0.0 and Coverage(0, 0, 0, 0).token_share == 0.0


def test_bad_unk_init_is_a_sentiment_error(small: GloVe) -> None:
    with pytest.raises(SentimentError, match="unk_init"):
        build_embedding_matrix(["the"], small, unk_init="uniform")


def test_index_is_cached_and_first_duplicate_wins() -> None:
    glove = GloVe(words=["a", "b", "a"], vectors=np.zeros((3, 2), np.float32))
    assert glove.index() is glove.index()
    assert glove.index() == {"a": 0, "b": 1}
