"""Evaluating a run on labeled texts of one's own: a CSV/TSV/JSONL/Parquet file with text and label
columns, or a directory in the aclImdb layout (pos/ and neg/ folders of .txt reviews)."""

from __future__ import annotations

from pathlib import Path

from sentiment.errors import SentimentError
from sentiment.inference.evaluate import Metrics


def evaluate_labeled(run_dir: Path, data: Path, *, text_column: str | None = None, label_column: str | None = None,
                     checkpoint: str = "best", device: str | None = None,
                     batch_size: int | None = None) -> tuple[Metrics, int, int]:
    """The run's metrics on labeled texts (the same ones `sentiment eval` prints for its own splits), how many rows
    were skipped for having no text, and how many files of a directory had invalid UTF-8 (read with replacement,
    as IMDB is). Labels are the run's label names; a two-class run also takes
    1/0, pos/neg, positive/negative and true/false. Columns default to the run's data.text_column and
    data.label_column."""
    from sentiment.inference.evaluate import evaluate
    from sentiment.inference.predict import drop_empty, encode_texts, encoding_of
    from sentiment.data.readers import read_table
    from sentiment.inference.runtime import load_trained

    run = load_trained(run_dir, checkpoint, device)
    table = read_table(Path(data), text_column or run.cfg.data.text_column, label_column or run.cfg.data.label_column)
    labels = run.label_space.index(table.labels, _Where(table))
    enc = encoding_of(run)
    split, keep = drop_empty(encode_texts(table.texts, enc, labels))
    if not len(split):
        raise SentimentError(f"{data}: every review is empty (no text)")
    metrics = evaluate(run.model, split, run.label_space, batch_size=batch_size or run.cfg.train.eval_batch_size,
                       device=run.device, max_len=enc.max_len, truncate=enc.truncate, parts=True)
    return metrics, int((~keep).sum()), table.replaced


class _Where:
    """table.where(i) on demand: only the first unknown label's position is ever spelled out."""

    def __init__(self, table) -> None:
        self.table = table

    def __getitem__(self, i: int) -> str:
        return self.table.where(i)
