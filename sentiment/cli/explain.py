"""`sentiment explain`: each token's contribution to a run's logits (terminal, JSON lines, HTML), or the recurrent
cell's gates over one text (--gates). `eval --errors` and `eval --top-words` print with the helpers here."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import typer
from rich.markup import escape
from rich.text import Text

from sentiment.errors import SentimentError

from sentiment.cli.app import app, console, err_console, user_errors, _check_checkpoint

_LEGEND = ("[on rgb(22,163,74)] pushes towards [/] [on rgb(220,38,38)] pushes away [/] "
           "[dim underline]dim, underlined[/]: not read by the recurrent part (outside its head+tail window)")


@app.command(short_help="Why a run labels texts as it does: each token's contribution (or --gates: the "
             "recurrent cell's gates).")
def explain(
    texts: Optional[list[str]] = typer.Argument(None, help="Texts to explain (or --file)."),
    run: Path = typer.Option(..., "--run", help="A run directory written by `sentiment train`."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Texts from a file, read as `predict --file` "
                                        "reads it (.csv/.tsv/.jsonl/.parquet with --text-column, a directory, or "
                                        "plain text one per line)."),
    text_column: str = typer.Option("text", help="Column or field of --file holding the text."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per text (tokens, contributions, "
                                 "logits, baseline, completeness error) instead of the colored view."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write the explanations to this self-contained "
                                        "HTML page (inline CSS, no external URLs)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Integrated Gradients steps (Gauss-Legendre nodes); "
                                        "more: closer to completeness, slower. Default: sentiment.inference."
                                        "explain.DEFAULT_STEPS."),
    gates: bool = typer.Option(False, "--gates", help="Instead: draw the GRU/LSTM gates and the hidden state's "
                               "norm over ONE text, per layer and direction, into --out (PNG)."),
    out: Optional[Path] = typer.Option(None, "--out", help="With --gates: the PNG to write."),
    checkpoint: str = typer.Option("best", help="Which checkpoint: best or last."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, mps (default: the run's)."),
) -> None:
    """Explain a run's predictions: each token's contribution to the positive class's logit (two classes) or to
    each class's logit (more). The recurrent part by Integrated Gradients over the embedding layer (Captum), the
    n-gram branch exactly; together they add up to the logit minus the baseline's (padding, no n-grams).
    Needs the `explain` extra (pip install 'sentiment[explain]'). See docs/explain.md."""
    from sentiment.inference.explain import DEFAULT_STEPS, load_explainer

    with user_errors():
        _check_checkpoint(checkpoint)
        if texts and file is not None:
            raise SentimentError("give texts as arguments or with --file, not both")
        if gates:
            _gates(texts, file, out, run, checkpoint, device)
            return
        if out is not None:
            raise SentimentError("--out is for --gates (the explanations go to the terminal, --json or --html)")
        inputs = _inputs(texts, file, text_column)
        explainer = load_explainer(run, checkpoint=checkpoint, device=device)
        explanations = []
        with _progress(len(inputs), "explaining") as advance:
            for text in inputs:
                explanations += explainer.explain([text], steps=DEFAULT_STEPS if steps is None else steps)
                advance()
    for e in explanations:
        if as_json:
            print(json.dumps(e.to_dict()))
        else:
            print_explanation(e)
    if not as_json and explanations:
        console.print(_LEGEND)
    if html is not None:
        _write_html(html, explanations)


def _inputs(texts: Optional[list[str]], file: Optional[Path], text_column: str) -> list[str]:
    from sentiment.cli.inference import _predict_inputs

    if not texts and file is None:
        raise SentimentError("give texts to explain, or --file")
    inputs = [t for t in _predict_inputs(texts, file, text_column)[0]]
    if not inputs:
        raise SentimentError(f"no texts: {file} is empty")
    return inputs


def _gates(texts: Optional[list[str]], file: Optional[Path], out: Optional[Path], run: Path, checkpoint: str,
           device: Optional[str]) -> None:
    from sentiment.inference.gates import plot_gates, run_gates

    if file is not None or not texts or len(texts) != 1:
        raise SentimentError("--gates draws one text: give exactly one TEXT argument")
    if out is None:
        raise SentimentError("--gates needs --out FILE.png")
    if out.suffix.lower() != ".png":
        raise SentimentError(f"--out must be a .png file, got {out.name}")
    trace = run_gates(run, texts[0], checkpoint=checkpoint, device=device)
    path = plot_gates(trace, out)
    worst = max(d.module_difference for d in trace.directions)
    console.print(f"wrote {escape(str(path))}: {len(trace.directions)} layer-direction(s) over "
                  f"{len(trace.tokens):,} tokens; hidden states match the {trace.rnn.upper()} module's to {worst:.1e}",
                  highlight=False)


def _write_html(path: Path, explanations: list[Any], headings: list[str] | None = None,
                title: str = "sentiment explain") -> None:
    from sentiment.atomic import atomic_write_text
    from sentiment.inference.explain_html import render_html

    atomic_write_text(path, render_html(explanations, title, headings))
    err_console.print(f"wrote {escape(str(path))}", highlight=False)


@contextmanager
def _progress(total: int, what: str) -> Iterator[Callable[..., None]]:
    """A transient bar on stderr (when total > 1): advance() after each item, or advance(done, total)."""
    if total <= 1:
        yield lambda *args: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err_console,
                  transient=True) as progress:
        task = progress.add_task(what, total=total)

        def advance(done: int | None = None, of: int | None = None) -> None:
            if done is None:
                progress.advance(task)
            else:  # a library's progress(done, total)
                progress.update(task, completed=done, total=of)

        yield advance


def _style(value: float, scale: float, read: bool) -> str:
    strength = min(1.0, abs(value) / scale) if scale > 0 else 0.0
    base = (22, 163, 74) if value > 0 else (220, 38, 38)
    r, g, b = (int(40 + (c - 40) * strength) for c in base)  # from a dark grey to the full color
    return f"on rgb({r},{g},{b})" + ("" if read else " dim underline")


def token_text(e: Any, column: int) -> Text:
    """The tokens colored by their contribution to one column's logit."""
    scores = e.token_scores(column)
    scale = max((abs(v) for v in scores), default=0.0)
    line = Text()
    for token, value, read in zip(e.tokens, scores, e.read):
        line.append(token, style=_style(value, scale, read))
        line.append(" ")
    return line


def print_explanation(e: Any, heading: str | None = None) -> None:
    probs = " · ".join(f"P({escape(c)}) {p:.4f}" for c, p in zip(e.classes, e.probabilities))
    console.print(f"[bold]{escape(heading) + ': ' if heading else ''}{escape(e.label)}[/]  {probs}  "
                  f"[dim]completeness error {e.completeness_error:.2%}[/]", highlight=False)
    for j, output in enumerate(e.outputs):
        if len(e.outputs) > 1:
            console.print(f"[dim]towards {escape(output)}:[/]")
        console.print(token_text(e, j))
    strongest = sorted(range(len(e.tokens)), key=lambda i: -abs(e.contributions[i][0]))[:5] if len(e.outputs) == 1 \
        else []
    if strongest:
        console.print("[dim]strongest: " + ", ".join(f"{escape(e.tokens[i])} {e.contributions[i][0]:+.3f}"
                                                      for i in strongest) + "[/]", highlight=False)
    console.print()


# ---------------------------------------------------------------- eval --errors / --top-words
def print_mistakes(mistakes: list[Any], html: Optional[Path], as_json: bool) -> None:
    headings = [f"row {m.row}: true {m.true_label}, predicted {m.explanation.label} ({m.confidence:.2%})"
                for m in mistakes]
    if not mistakes:
        err_console.print("no wrong predictions")
    for m, heading in zip(mistakes, headings):
        if as_json:
            print(json.dumps({"row": m.row, "true_label": m.true_label, "confidence": m.confidence,
                              **m.explanation.to_dict()}))
        else:
            print_explanation(m.explanation, heading)
    if mistakes and not as_json:
        console.print(_LEGEND)
    if html is not None:
        _write_html(html, [m.explanation for m in mistakes], headings, "the most confident mistakes")


def print_top_words(ranked: dict[str, list[Any]], as_json: bool) -> None:
    from rich.table import Table

    if as_json:
        print(json.dumps({name: [vars(t) for t in terms] for name, terms in ranked.items()}))
        return
    for name, terms in ranked.items():
        table = Table(title=f"pushing towards {escape(name)}")
        for column, justify in (("word or n-gram", "left"), ("mean contribution", "right"), ("seen", "right")):
            table.add_column(column, justify=justify)
        for t in terms:
            table.add_row(escape(t.term), f"{t.mean:+.4f}", f"{t.count:,}")
        console.print(table)
