"""Check that tokenizing IMDB now gives every review the token ids of the cached corpus (written by whatever
version filled data/cache): same token table, same ids, same offsets. Prints one line per check.

    .venv/bin/python scripts/check_imdb_ids.py [--data-dir data]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import benchlib  # noqa: F401  (puts the checkout on sys.path)
from sentiment.data.corpus import load_corpus, tokenize_files
from sentiment.data.imdb import imdb_dir, list_reviews
from sentiment.paths import cache_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    args = parser.parse_args()
    cached, hit = load_corpus(args.data_dir, workers=2, cache_dir=cache_dir(args.data_dir))
    print(f"cached corpus: {len(cached):,} reviews (from the cache: {hit})")
    reviews = list_reviews(imdb_dir(args.data_dir))
    start = time.perf_counter()
    tokens, ids, offsets, _ = tokenize_files([r.path for r in reviews], True, 2)
    print(f"retokenized in {time.perf_counter() - start:.1f} s")
    print(f"same offsets: {np.array_equal(offsets, cached.offsets)}; same token table: {tokens == cached.tokens}; "
          f"same ids: {np.array_equal(ids, cached.ids)}")


if __name__ == "__main__":
    main()
