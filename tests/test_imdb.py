"""sentiment.data.imdb: listing review files, missing-data errors, and the validation split."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from sentiment.errors import DataMissingError, SentimentError
from sentiment.data.imdb import (fingerprint, imdb_dir, list_reviews, movie_ids, 
                           validation_split)


def make_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


# Numeric ids chosen so that string order differs from numeric order (10 < 2 as strings).
TREE = {
    "train/pos/10_9.txt": "p10",
    "train/pos/2_7.txt": "p2",
    "train/pos/0_10.txt": "p0",
    "train/neg/1_1.txt": "n1",
    "train/neg/0_4.txt": "n0",
    "test/pos/0_8.txt": "tp0",
    "test/neg/3_2.txt": "tn3",
    "test/neg/12_3.txt": "tn12",
    "train/unsup/5_0.txt": "u5",
    "train/unsup/1_0.txt": "u1",
    # not reviews: ignored
    "train/pos/urls_pos.txt": "x",
    "train/pos/readme.md": "x",
    "train/pos/3_9.txt.bak": "x",
    "train/labeledBow.feat": "x",
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "aclImdb", TREE)


def rel(root: Path, reviews) -> list[str]:
    return [os.path.relpath(r.path, root) for r in reviews]


def test_list_reviews_order_labels_ratings(tree: Path):
    reviews = list_reviews(tree)
    assert rel(tree, reviews) == [
        "train/pos/0_10.txt", "train/pos/2_7.txt", "train/pos/10_9.txt",
        "train/neg/0_4.txt", "train/neg/1_1.txt",
        "test/pos/0_8.txt",
        "test/neg/3_2.txt", "test/neg/12_3.txt",
    ]
    assert [r.split for r in reviews] == ["train"] * 5 + ["test"] * 3
    assert [r.label for r in reviews] == [1, 1, 1, 0, 0, 1, 0, 0]
    assert [r.rating for r in reviews] == [10, 7, 9, 4, 1, 8, 2, 3]
    # paths are real files with the content written
    assert Path(reviews[2].path).read_text(encoding="utf-8") == "p10"


def test_list_reviews_with_unsup(tree: Path):
    reviews = list_reviews(tree, include_unsup=True)
    assert len(reviews) == 10
    unsup = reviews[8:]
    assert rel(tree, unsup) == ["train/unsup/1_0.txt", "train/unsup/5_0.txt"]
    assert all(r.split == "unsup" and r.label == -1 and r.rating == 0 for r in unsup)
    assert reviews[:8] == list_reviews(tree)


def test_list_reviews_unsup_missing(tmp_path: Path):
    root = make_tree(tmp_path / "other" / "aclImdb", {k: v for k, v in TREE.items() if "unsup" not in k})
    assert len(list_reviews(root)) == 8
    with pytest.raises(DataMissingError, match="unsup"):
        list_reviews(root, include_unsup=True)


def test_list_reviews_empty_folder(tmp_path: Path):
    root = make_tree(tmp_path / "aclImdb", {k: v for k, v in TREE.items() if not k.startswith("test/pos/")})
    (root / "test" / "pos").mkdir()
    with pytest.raises(DataMissingError, match="make download-data") as e:
        list_reviews(root)
    assert "test/pos" in str(e.value)


def test_list_reviews_on_generated_data(tiny_data: Path):
    reviews = list_reviews(imdb_dir(tiny_data))
    assert len(reviews) == 4 * 60
    for r in reviews:
        assert (r.label == 1) == (7 <= r.rating <= 10)
        assert (r.label == 0) == (1 <= r.rating <= 4)
        assert Path(r.path).parent.name == ("pos" if r.label else "neg")
        assert Path(r.path).parent.parent.name == r.split


def test_imdb_dir_ok(tiny_data: Path):
    assert imdb_dir(tiny_data) == tiny_data / "aclImdb"


def test_imdb_dir_missing(tmp_path: Path):
    with pytest.raises(DataMissingError) as e:
        imdb_dir(tmp_path / "nowhere")
    msg = str(e.value)
    assert "make download-data" in msg
    assert "not found" in msg
    assert str(tmp_path / "nowhere") in msg
    assert isinstance(e.value, SentimentError) and e.value.exit_code == 2


def test_imdb_dir_partial(tmp_path: Path):
    make_tree(tmp_path / "aclImdb", {"train/pos/0_9.txt": "a", "train/neg/0_1.txt": "b", "test/pos/0_9.txt": "c"})
    with pytest.raises(DataMissingError) as e:
        imdb_dir(tmp_path)
    msg = str(e.value)
    assert "make download-data" in msg
    assert "incomplete" in msg and "test/neg" in msg
    assert "train/pos" not in msg


def test_review_names_are_relative_to_the_root(tree: Path):
    for r in list_reviews(tree, include_unsup=True):
        assert r.name == os.path.relpath(r.path, tree).replace(os.sep, "/")


def test_fingerprint_changes_with_content(tree: Path):
    reviews = list_reviews(tree)
    before = fingerprint(reviews)
    assert len(before) == len(reviews)
    for (ident, size, mtime), r in zip(before, reviews):
        # each entry identifies its file (by a path relative to the root, so a moved tree keeps its fingerprint)
        assert ident.replace(os.sep, "/").endswith(os.path.relpath(r.path, tree).replace(os.sep, "/"))
        st = os.stat(r.path)
        assert (size, mtime) == (st.st_size, st.st_mtime_ns)
    Path(reviews[0].path).write_text("a longer text than before", encoding="utf-8")
    after = fingerprint(reviews)
    assert after[0] != before[0]
    assert after[0][1] == len("a longer text than before")
    assert after[1:] == before[1:]


def test_fingerprint_does_not_depend_on_where_the_tree_is(tree: Path, tmp_path: Path):
    before = fingerprint(list_reviews(tree))
    moved = tmp_path / "elsewhere" / "aclImdb"
    moved.parent.mkdir()
    tree.rename(moved)  # rename keeps sizes and mtimes
    assert fingerprint(list_reviews(moved)) == before


# --- validation_split -------------------------------------------------------------------------------


LABELS = np.array([1] * 300 + [0] * 200)


def test_validation_split_balanced_disjoint_complete():
    train, valid = validation_split(LABELS, 0.1, seed=42)
    assert len(valid) == 30 + 20  # 10% of each label
    assert (LABELS[valid] == 1).sum() == 30
    assert (LABELS[valid] == 0).sum() == 20
    assert not set(train) & set(valid)
    assert sorted(np.concatenate([train, valid]).tolist()) == list(range(len(LABELS)))
    assert np.all(np.diff(valid) > 0) and np.all(np.diff(train) > 0)  # sorted


def test_validation_split_is_stable_for_a_seed():
    a = validation_split(LABELS, 0.2, seed=1)
    b = validation_split(LABELS.copy(), 0.2, seed=1)
    assert a[0].tolist() == b[0].tolist() and a[1].tolist() == b[1].tolist()


def test_validation_split_differs_for_another_seed():
    _, v1 = validation_split(LABELS, 0.2, seed=1)
    _, v2 = validation_split(LABELS, 0.2, seed=2)
    assert len(v1) == len(v2)
    assert v1.tolist() != v2.tolist()


def test_validation_split_is_random_not_a_prefix():
    _, valid = validation_split(LABELS, 0.1, seed=0)
    pos = valid[LABELS[valid] == 1]
    assert pos.tolist() != list(range(30))


def test_validation_split_zero_fraction():
    train, valid = validation_split(LABELS, 0.0, seed=0)
    assert len(valid) == 0
    assert train.tolist() == list(range(len(LABELS)))


def test_validation_split_rounds_per_label():
    labels = np.array([1] * 7 + [0] * 5)
    train, valid = validation_split(labels, 0.3, seed=0)
    # round(2.1) = 2 positives, round(1.5) = 2 negatives (banker's rounding)
    assert (labels[valid] == 1).sum() == 2
    assert (labels[valid] == 0).sum() == 2
    assert len(train) + len(valid) == 12


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_validation_split_fraction_out_of_range(fraction: float):
    with pytest.raises(SentimentError, match="valid_fraction"):
        validation_split(LABELS, fraction, seed=0)


# --- the movie split: sources.grouped_split with movies as groups -------------------------------------


def movie_validation_split(labels, movies, fraction, seed):
    from sentiment.data.sources import grouped_split

    return grouped_split(labels, np.asarray(movies), fraction, seed, 2)


def frozen_movie_split(labels, movies, fraction, seed):
    """imdb.movie_validation_split as it was before the two group splitters became one (commit 5be685b):
    runs trained with it must find the same validation rows (splits.npz) on eval and resume."""
    labels = np.asarray(labels)
    quota = {int(c): int(round(fraction * int((labels == c).sum()))) for c in np.unique(labels)}
    members = {}
    for i, movie in enumerate(movies):
        members.setdefault(movie, []).append(i)
    titles = sorted(members)
    taken = {c: 0 for c in quota}
    valid = []
    for t in np.random.default_rng(seed).permutation(len(titles)):
        rows = members[titles[t]]
        counts = {c: 0 for c in quota}
        for i in rows:
            counts[int(labels[i])] += 1
        if all(taken[c] + counts[c] <= quota[c] for c in quota):
            valid.extend(rows)
            for c in quota:
                taken[c] += counts[c]
            if taken == quota:
                break
    valid_idx = np.sort(np.asarray(valid, dtype=np.int64))
    return np.setdiff1d(np.arange(len(labels)), valid_idx, assume_unique=True), valid_idx


@pytest.mark.parametrize("seed", [0, 1, 42])
@pytest.mark.parametrize("fraction", [0.1, 0.2])
def test_the_one_grouped_split_gives_the_movie_split_old_runs_were_trained_with(seed, fraction):
    labels, movies = movie_world(seed)
    new = movie_validation_split(labels, movies, fraction, seed)
    old = frozen_movie_split(labels, movies, fraction, seed)
    assert new[0].tolist() == old[0].tolist() and new[1].tolist() == old[1].tolist()


def movie_world(seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """600 reviews of 150 movies with 1-9 reviews each; some movies have one polarity only."""
    rng = np.random.default_rng(seed)
    labels, movies = [], []
    for m in range(150):
        share = rng.choice([0.0, 1.0, 0.5])
        for _ in range(int(rng.integers(1, 10))):
            labels.append(int(rng.random() < share) if share not in (0.0, 1.0) else int(share))
            movies.append(f"tt{m:07d}")
    return np.array(labels), movies


def test_movie_split_keeps_every_movie_on_one_side():
    labels, movies = movie_world()
    train, valid = movie_validation_split(labels, movies, 0.1, seed=3)
    assert len(valid) > 0
    assert not {movies[i] for i in train} & {movies[i] for i in valid}
    assert sorted(np.concatenate([train, valid]).tolist()) == list(range(len(labels)))


def test_movie_split_fills_each_label_quota_without_exceeding_it():
    labels, movies = movie_world()
    _, valid = movie_validation_split(labels, movies, 0.2, seed=3)
    for c in (0, 1):
        quota = round(0.2 * (labels == c).sum())
        taken = (labels[valid] == c).sum()
        assert quota - 3 <= taken <= quota  # whole movies: close to the quota, never over it


def test_movie_split_is_seeded():
    labels, movies = movie_world()
    a = movie_validation_split(labels, movies, 0.1, seed=1)[1]
    assert a.tolist() == movie_validation_split(labels, list(movies), 0.1, seed=1)[1].tolist()
    assert a.tolist() != movie_validation_split(labels, movies, 0.1, seed=2)[1].tolist()


def test_movie_ids_read_urls_by_review_id(tmp_path):
    root = tmp_path / "aclImdb"
    (root / "train").mkdir(parents=True)
    (root / "train" / "urls_pos.txt").write_text("http://www.imdb.com/title/tt0000001/usercomments\n"
                                                 "http://www.imdb.com/title/tt0000002/usercomments\n")
    (root / "train" / "urls_neg.txt").write_text("http://www.imdb.com/title/tt0000003/usercomments\n")
    names = ["train/pos/1_9.txt", "train/pos/0_7.txt", "train/neg/0_2.txt"]
    assert movie_ids(root, names) == ["tt0000002", "tt0000001", "tt0000003"]
    assert movie_ids(root, ["train/neg/5_2.txt"]) is None  # no line for review 5
    (root / "train" / "urls_neg.txt").unlink()
    assert movie_ids(root, names) is None
