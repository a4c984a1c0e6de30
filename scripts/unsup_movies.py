"""Which movies IMDB's unlabeled reviews (train/unsup) are about, against train's and test's, from the archive's
urls_*.txt files (review id i of a folder is line i of its urls file).

    .venv/bin/python scripts/unsup_movies.py [--data-dir data]

Unlabeled reviews of test movies would let semi-supervised training see the test movies' vocabulary and
style; the printout says whether there are any.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

TITLE = re.compile(r"title/(tt\d+)")


def titles(path: Path) -> list[str]:
    return [m.group(1) if (m := TITLE.search(line)) else "" for line in path.read_text(encoding="utf-8").splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    root = parser.parse_args().data_dir / "aclImdb"
    train = set(titles(root / "train" / "urls_pos.txt")) | set(titles(root / "train" / "urls_neg.txt"))
    test = set(titles(root / "test" / "urls_pos.txt")) | set(titles(root / "test" / "urls_neg.txt"))
    unsup_reviews = titles(root / "train" / "urls_unsup.txt")
    unsup = set(unsup_reviews)
    print(f"movies: train {len(train):,}, test {len(test):,}, unsup {len(unsup):,} ({len(unsup_reviews):,} reviews)")
    print(f"unsup movies also in train: {len(unsup & train):,}; also in test: {len(unsup & test):,}; "
          f"unsup reviews of test movies: {sum(t in test for t in unsup_reviews):,}")


if __name__ == "__main__":
    main()
