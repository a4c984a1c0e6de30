"""`sentiment eval` and `sentiment predict`: reading a finished run."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from sentiment.errors import SentimentError

from sentiment.cli.app import app, console, err_console, user_errors, _check_checkpoint, _note_skipped

# ---------------------------------------------------------------- eval
@app.command("eval", short_help='Score a run on its test or valid split, or on labeled texts (--data).')
def eval_(
    run: Path = typer.Option(..., "--run", help="A run directory written by `sentiment train`."),
    split: str = typer.Option("test", help="Split of the run's own data to evaluate: test or valid."),
    checkpoint: str = typer.Option("best", help="Which checkpoint: best or last."),
    batch_size: Optional[int] = typer.Option(None, help="Evaluation batch size (default: the run's eval_batch_size)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, mps (default: the run's)."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
    data: Optional[Path] = typer.Option(None, "--data", help="Evaluate on other labeled texts instead: a .csv, "
                                        ".tsv, .jsonl or .parquet file, or a directory with pos/ and neg/ folders "
                                        "of .txt reviews (the aclImdb layout)."),
    text_column: Optional[str] = typer.Option(None, help="Column (CSV/TSV/Parquet) or field (JSONL) of --data "
                                              "holding the text (default: the run's data.text_column)."),
    label_column: Optional[str] = typer.Option(None, help="Column or field of --data holding the label (default: "
                                               "the run's data.label_column): the run's label names; two-class "
                                               "runs also take 1/0, pos/neg, positive/negative, true/false."),
    allow_changed_data: bool = typer.Option(False, "--allow-changed-data", help="Evaluate the run's own split even "
                                            "if its texts or labels changed since training (refused by default)."),
    errors: Optional[int] = typer.Option(None, "--errors", help="Instead of the metrics: the N most confident wrong "
                                         "predictions, each explained (as `sentiment explain`)."),
    html: Optional[Path] = typer.Option(None, "--html", help="With --errors: also write them to this "
                                        "self-contained HTML page."),
    top_words: bool = typer.Option(False, "--top-words", help="Instead of the metrics: the words and n-grams that "
                                   "push each class most (mean contribution per occurrence, seen >= 5 times) over "
                                   "--sample texts of the split."),
    sample: int = typer.Option(500, "--sample", help="With --top-words: how many texts, drawn at random (seed 0)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="With --errors or --top-words: Integrated Gradients "
                                        "steps (default: explain's)."),
) -> None:
    """Evaluate a run's checkpoint on its test (or valid) split, or on labeled texts (--data): accuracy,
    macro-F1, per-class precision/recall/F1 and the confusion matrix."""
    from sentiment.inference.labeled import evaluate_labeled
    from sentiment.inference.runtime import evaluate_run

    with user_errors():
        if split not in ("test", "valid"):
            raise SentimentError(f"--split must be test or valid, got {split!r}")
        _check_checkpoint(checkpoint)
        if batch_size is not None and batch_size < 1:
            raise SentimentError(f"--batch-size must be >= 1, got {batch_size}")
        if errors is not None or top_words or html is not None or steps is not None:
            _explained_eval(run, errors, top_words, html, sample, steps, as_json, split=split, data=data,
                            text_column=text_column, label_column=label_column, checkpoint=checkpoint, device=device,
                            allow_changed_data=allow_changed_data, batch_size=batch_size)
            return
        if data is not None:
            metrics, skipped, replaced = evaluate_labeled(run, data, text_column=text_column,
                                                          label_column=label_column, checkpoint=checkpoint,
                                                          device=device, batch_size=batch_size)
            title = f"{data} · {checkpoint}.pt"
            if replaced:  # as predict --file says it
                err_console.print(f"[yellow]note:[/] {replaced:,} files of {escape(str(data))} had invalid UTF-8 "
                                  "(decoded with replacement, as IMDB is)")
        else:
            metrics = evaluate_run(run, split=split, checkpoint=checkpoint, batch_size=batch_size, device=device,
                                   allow_changed_data=allow_changed_data)
            skipped, title = 0, f"{split} split · {checkpoint}.pt"
    _note_skipped(skipped)
    _print_metrics(metrics.to_dict(), title, as_json)


def _explained_eval(run: Path, errors: Optional[int], top_words: bool, html: Optional[Path], sample: int,
                    steps: Optional[int], as_json: bool, **where: Any) -> None:
    """eval --errors N [--html FILE] or eval --top-words [--sample N] (sentiment.inference.mistakes)."""
    from sentiment.cli.explain import _progress, print_mistakes, print_top_words
    from sentiment.inference.explain import DEFAULT_STEPS
    from sentiment.inference.mistakes import top_words as rank_words, worst_mistakes

    if (errors is not None) == top_words:
        raise SentimentError("--html and --steps go with --errors N or --top-words (one of them)")
    if html is not None and errors is None:
        raise SentimentError("--html goes with --errors N")
    if top_words:
        where.pop("batch_size")
        with _progress(2, "explaining the sample") as advance:
            ranked = rank_words(run, sample=sample, steps=DEFAULT_STEPS if steps is None else steps, progress=advance, **where)
        print_top_words(ranked, as_json)
        return
    with _progress(2, "explaining the mistakes") as advance:
        mistakes = worst_mistakes(run, errors, steps=DEFAULT_STEPS if steps is None else steps, progress=advance, **where)
    print_mistakes(mistakes, html, as_json)


PART_NAMES = {"rnn": "recurrent part", "branch": "n-gram branch"}


def _print_metrics(m: dict[str, Any], title: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps(m))
        return
    table = Table(title=title, show_header=False)
    rows = [("accuracy", "{:.2%}"), ("macro-F1", "{:.4f}"), ("loss", "{:.4f}")]
    if "f1" in m:  # two classes: the positive class's figures, as before
        rows += [("precision", "{:.4f}"), ("recall", "{:.4f}"), ("f1", "{:.4f}")]
    for key, fmt in rows + [("n", "{:,}")]:
        table.add_row(key, fmt.format(m["macro_f1" if key == "macro-F1" else key]))
    for name, part in (m.get("parts") or {}).items():  # each part of a two-part model, as the whole holds it
        table.add_row(f"{PART_NAMES.get(name, name)} alone", f"accuracy {part['accuracy']:.2%} · macro-F1 "
                      f"{part['macro_f1']:.4f}")
    console.print(table)
    per_class = Table(title="per class")
    for column in ("label", "precision", "recall", "F1", "support"):
        per_class.add_column(column, justify="left" if column == "label" else "right")
    for c in m["per_class"]:
        per_class.add_row(escape(c["label"]), f"{c['precision']:.4f}", f"{c['recall']:.4f}", f"{c['f1']:.4f}",
                          f"{c['support']:,}")
    console.print(per_class)
    cm = Table(title="confusion matrix (rows: true, columns: predicted)")
    cm.add_column("")
    for name in m["labels"]:
        cm.add_column(f"predicted {escape(name)}", justify="right")
    for name, row in zip(m["labels"], m["confusion"]):
        cm.add_row(escape(name), *(f"{v:,}" for v in row))
    console.print(cm)


# ---------------------------------------------------------------- predict
@app.command(short_help="Label texts with a trained run (or an exported model), with every class's probability.")
def predict(
    texts: Optional[list[str]] = typer.Argument(None, help="Reviews to classify (default: --file, else standard "
                                                "input, one review per line)."),
    run: Optional[Path] = typer.Option(None, "--run", help="A run directory written by `sentiment train`."),
    model: Optional[Path] = typer.Option(None, "--model", help="Instead of --run: a model written by `sentiment "
                                         "export` (ONNX or torch.export, with its OUT.json beside it), scored with "
                                         "onnxruntime or torch.export.load. The text side still needs spaCy's "
                                         "tokenizer, the run's cleaning and head+tail truncation (from OUT.json)."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Reviews from a file: .csv/.tsv with a header, "
                                        ".jsonl or .parquet (see --text-column), a directory with pos/ and neg/ "
                                        "folders (or of .txt files), else plain text one per line; - for stdin. "
                                        "Read as training and `eval --data` read it: files must be UTF-8."),
    text_column: str = typer.Option("text", help="Column (CSV/TSV/Parquet) or field (JSONL) of --file holding "
                                    "the text."),
    threshold: Optional[float] = typer.Option(None, help="Two-class runs only: the probability of the positive "
                                              "class from which a text gets it (default 0.5). Runs with more "
                                              "classes predict the most probable one."),
    checkpoint: str = typer.Option("best", help="Which checkpoint: best or last."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size (default: the run's eval_batch_size)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, mps (default: the run's)."),
    as_json: Optional[bool] = typer.Option(None, "--json/--table", help="JSON lines or a table (default: a table "
                                           "on a terminal, JSON lines when piped)."),
) -> None:
    """Label texts with a trained run, with every class's probability (JSON: label, probs, and for two
    classes probability, of the positive one).

    Reviews are tokenized as the run's training did and cut to data.eval_max_len tokens (5,000 tokens if the
    run kept whole reviews); empty reviews are skipped and counted.
    """
    import numpy as np

    from sentiment.inference.exported import load_exported_predictor
    from sentiment.inference.predict import chunked, load_predictor, prediction_rows

    with user_errors():
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise SentimentError(f"--threshold must be between 0 and 1, got {threshold}")
        _check_checkpoint(checkpoint)
        if (run is None) == (model is None):
            raise SentimentError("give --run (a run directory) or --model (an exported model), one of them")
        if batch_size is not None and batch_size < 1:
            raise SentimentError(f"--batch-size must be >= 1, got {batch_size}")
        if texts and file is not None:
            raise SentimentError("give reviews as arguments or with --file, not both")
        inputs, name = _predict_inputs(texts, file, text_column)
        predictor = (load_exported_predictor(model, batch_size) if model is not None
                     else load_predictor(run, checkpoint=checkpoint, device=device, batch_size=batch_size))
        space = predictor.space
        prediction_rows(np.zeros((0, space.num_classes)), space, threshold)  # a threshold it cannot take: now
        as_table = not (as_json if as_json is not None else not sys.stdout.isatty())
        out = _StreamedOutput(space, as_table)
        for chunk in chunked(inputs):  # read, score and print a chunk at a time: memory stays bounded
            out.add(chunk, prediction_rows(predictor.probabilities(chunk), space, threshold))
        out.finish(name)
    _note_skipped(out.skipped)


def _predict_inputs(texts: Optional[list[str]], file: Optional[Path], text_column: str) -> tuple[Any, str]:
    """The reviews to predict (an iterator: plain-text files and standard input are read as they are
    consumed) and what to call their source in an error."""
    from sentiment.data.readers import TABLE_SUFFIXES, check_regular_file, read_texts
    from sentiment.inference.predict import check_text_file, iter_lines

    if texts:
        fixed, replaced = _decoded_arguments(texts)
        if replaced:
            err_console.print(f"[yellow]note:[/] {replaced:,} argument{'s' if replaced != 1 else ''} had invalid "
                              "UTF-8 (decoded with replacement)", soft_wrap=True)
        return iter(fixed), "the arguments"
    if file is not None and str(file) != "-":
        if file.is_dir() or file.suffix.lower() in TABLE_SUFFIXES:
            table = read_texts(file, text_column)
            if table.replaced:
                err_console.print(f"[yellow]note:[/] {table.replaced:,} files of {escape(str(file))} had invalid "
                                  "UTF-8 (decoded with replacement, as IMDB is)")
            return iter(table.texts), str(file)
        check_regular_file(file)
        try:
            check_text_file(file)
            stream = open(file, "rb")
        except OSError as e:
            raise SentimentError(f"cannot read {file}: {e.strerror or e}") from None
        return _closing(iter_lines(stream, str(file)), stream), str(file)
    if sys.stdin.isatty():
        err_console.print("reading reviews from standard input, one per line (Ctrl-D to finish)…")
    return iter_lines(sys.stdin.buffer, "standard input"), "standard input"


def _closing(lines: Any, stream: Any) -> Any:
    try:
        yield from lines
    finally:
        stream.close()


def _decoded_arguments(texts: list[str]) -> tuple[list[str], int]:
    """Arguments as text: bytes that are not UTF-8 reach sys.argv as lone surrogates (Python's
    surrogateescape), which no tokenizer takes; they become U+FFFD, as in a directory of .txt files."""
    fixed, replaced = [], 0
    for text in texts:
        try:
            text.encode("utf-8")
            fixed.append(text)
        except UnicodeEncodeError:
            try:
                raw = text.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                raw = text.encode("utf-8", "replace")
            fixed.append(raw.decode("utf-8", "replace"))
            replaced += 1
    return fixed, replaced


class _StreamedOutput:
    """predict's rows as they are scored: JSON lines (or a table per chunk on a terminal). Rows of empty
    reviews are held back until one review is scored, so that input with nothing to score is one error line
    and no output, as before streaming."""

    def __init__(self, space: Any, as_table: bool) -> None:
        self.space, self.as_table = space, as_table
        self.count = self.skipped = 0
        self.held: list[str] = []  # texts of the empty reviews not yet written
        self.scored = self.nonblank = False

    def add(self, texts: list[str], rows: list[dict[str, Any]]) -> None:
        self.nonblank = self.nonblank or any(t.strip() for t in texts)
        self.skipped += sum("error" in r for r in rows)
        if not self.scored and all("error" in r for r in rows):
            self.held += texts
            return
        if not self.scored:
            self.scored = True
            texts, rows = self.held + texts, [{"error": "empty text: skipped"}] * len(self.held) + rows
            self.held = []
        if self.as_table:
            _print_predictions(texts, rows, self.space, start=self.count + 1)
        else:
            _write_jsonl(rows)
        self.count += len(rows)

    def finish(self, name: str) -> None:
        if self.scored:
            return
        if not self.nonblank and name != "the arguments":
            raise SentimentError(f"no reviews: {name} is empty" if name == "standard input" else f"{name} is empty")
        raise SentimentError(f"nothing to predict: {'the review is' if len(self.held) == 1 else 'every review is'} "
                             "empty (no words)")


def _write_jsonl(rows: list[dict[str, Any]]) -> None:
    try:
        sys.stdout.write("".join(json.dumps(r) + "\n" for r in rows))
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader went away (`| head`): no traceback; the Python docs' recipe for a quiet exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(1) from None


def _print_predictions(texts: list[str], rows: list[dict[str, Any]], space: Any, start: int = 1) -> None:
    from rich.text import Text

    table = Table()
    # on a narrow terminal only the review preview shrinks
    table.add_column("#", justify="right", min_width=len(str(start + len(rows) - 1)))
    table.add_column("text", max_width=60)
    table.add_column("label", min_width=8)
    heading = f"P({space.names[1]})" if space.binary else "P(label)"
    table.add_column(escape(heading), justify="right", min_width=len(heading))
    colors = {space.names[0]: "red", space.names[-1]: "green"} if space.binary else {}
    for i, (text, row) in enumerate(zip(texts, rows), start):
        # one line per text, cut with an ellipsis (the table shows 60 characters at most)
        preview = Text(" ".join(text[:200].split()), no_wrap=True, overflow="ellipsis")
        if "error" in row:
            table.add_row(str(i), preview, "[dim]skipped[/]", "[dim]empty[/]")
        else:
            label = escape(row["label"])
            shown = row["probability"] if space.binary else row["probs"][row["label"]]
            color = colors.get(row["label"])
            table.add_row(str(i), preview, f"[{color}]{label}[/]" if color else label, f"{shown:.4f}")
    console.print(table)


