"""The tokenizer of single texts the tests compare the package's batch tokenizers with (the package itself
tokenizes in batches: corpus.tokenize_texts, predict.encode_texts)."""

from __future__ import annotations

from collections.abc import Iterable

from sentiment.data.tokenize import IMDB_CLEANING, ChunkMemo, Cleaning, split_chunks


class Tokenizer:
    """Tokenize single texts (prediction time) with a memo of chunks already seen."""

    def __init__(self, lowercase: bool = True, memo_size: int = 200_000, cleaning: Cleaning = IMDB_CLEANING):
        self.lowercase = lowercase
        self.cleaning = cleaning
        self._memo = ChunkMemo(lowercase, memo_size)

    def __call__(self, text: str) -> list[str]:
        chunks = split_chunks(text, self.cleaning)
        memo = self._memo.fill(chunks)
        return [tok for c in chunks for tok in memo[c]]

    def pipe(self, texts: Iterable[str]) -> Iterable[list[str]]:
        for text in texts:
            yield self(text)
