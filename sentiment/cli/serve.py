"""`sentiment serve` and `sentiment export`: a run behind HTTP, or as a file other programs score with."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sentiment.errors import SentimentError

from sentiment.cli.app import app, err_console, user_errors, _check_checkpoint


@app.command(short_help='Serve a run (or an exported model) over HTTP: a page at /, POST /predict, /explain, GET /health, /info.')
def serve(
    run: Optional[Path] = typer.Option(None, "--run", help="A run directory written by `sentiment train`."),
    model: Optional[Path] = typer.Option(None, "--model", help="Instead of --run: a model written by `sentiment "
                                         "export` (scored by onnxruntime or torch.export). --run (torch) is the "
                                         "default; benchmarks/bench_export.py compares their speed."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, help="Port to listen on."),
    checkpoint: str = typer.Option("best", help="Which checkpoint: best or last."),
    threshold: Optional[float] = typer.Option(None, help="Two-class runs: P(positive) from which a text gets it "
                                              "(default 0.5); a request's `threshold` overrides it."),
    workers: int = typer.Option(1, help="Server processes (uvicorn's --workers); each loads the run and gets "
                                "CPU cores / workers torch threads (see --threads)."),
    threads: Optional[int] = typer.Option(None, help="Torch threads per process (default: CPU cores / --workers)."),
    max_wait_ms: float = typer.Option(5.0, help="Dynamic batching: how long a batch waits for requests still "
                                      "being tokenized (never when none is)."),
    batch_tokens: int = typer.Option(32768, help="Dynamic batching: tokens (after truncation) scored in one round "
                                     "at most."),
    batching: bool = typer.Option(True, "--batching/--no-batching", help="Score concurrent requests together "
                                  "(--no-batching: each alone)."),
    max_texts: int = typer.Option(1000, help="Texts per request at most (more: 413)."),
    max_bytes: int = typer.Option(2_000_000, help="Bytes per request body at most (more: 413)."),
    max_chars: int = typer.Option(100_000, help="Characters per text at most (more: 413)."),
    explain_max_texts: int = typer.Option(16, help="POST /explain: texts per request at most (more: 413)."),
    explain_max_tokens: int = typer.Option(2000, help="POST /explain: tokens per text at most, before the run's "
                                           "truncation (more: 413)."),
    explain_max_steps: int = typer.Option(256, help="POST /explain: Integrated Gradients steps a request may ask "
                                          "for at most (more: 422)."),
    explain_timeout: float = typer.Option(30.0, help="POST /explain: seconds a request may take, waiting "
                                          "included; a longer one is answered 503 and dropped."),
    log_batches: bool = typer.Option(False, help="Log one line per scored batch."),
    access_log: bool = typer.Option(False, help="Log one line per request (uvicorn's access log)."),
    log_level: str = typer.Option("info", help="uvicorn's log level: critical, error, warning, info, debug."),
) -> None:
    """Serve a run over HTTP: POST /predict {"texts": [...]} or {"text": "..."} gives what `sentiment predict`
    gives; POST /explain each word's contribution (--run only); GET / a page to try it in a browser (works
    offline); GET /health, GET /info, GET /openapi.json. Ctrl-C or SIGTERM finishes the requests in flight and
    exits 0. See docs/serving.md and docs/explain.md."""
    from sentiment.inference.serve import ServeOptions, serve as run_server

    with user_errors():
        _check_checkpoint(checkpoint)
        if (run is None) == (model is None):
            raise SentimentError("give --run (a run directory) or --model (an exported model), one of them")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise SentimentError(f"--threshold must be between 0 and 1, got {threshold}")
        for name, value in (("--workers", workers), ("--batch-tokens", batch_tokens), ("--max-texts", max_texts),
                            ("--max-bytes", max_bytes), ("--max-chars", max_chars), ("--threads", threads or 1),
                            ("--explain-max-texts", explain_max_texts), ("--explain-max-tokens", explain_max_tokens),
                            ("--explain-max-steps", explain_max_steps)):
            if value < 1:
                raise SentimentError(f"{name} must be >= 1, got {value}")
        if max_wait_ms < 0:
            raise SentimentError(f"--max-wait-ms must be >= 0, got {max_wait_ms}")
        if not 0 < explain_timeout < float("inf"):
            raise SentimentError(f"--explain-timeout must be a positive number of seconds, got {explain_timeout}")
        if not 0 < port < 65536:
            raise SentimentError(f"--port must be in 1..65535, got {port}")
        opts = ServeOptions(None if run is None else str(run), checkpoint, threshold, max_wait_ms, batch_tokens,
                            batching, max_texts, max_bytes, max_chars, threads, workers, log_batches,
                            None if model is None else str(model), explain_max_texts=explain_max_texts,
                            explain_max_tokens=explain_max_tokens, explain_max_steps=explain_max_steps,
                            explain_timeout_s=explain_timeout)
        run_server(opts, host, port, log_level=log_level, access_log=access_log)


@app.command(short_help="Export a run's model to ONNX or torch.export, with the vocabulary and labels beside it.")
def export(
    run: Path = typer.Option(..., "--run", help="A run directory written by `sentiment train`."),
    fmt: str = typer.Option(..., "--format", help="onnx (onnxruntime) or torch (a torch.export program, "
                            "torch.export.load)."),
    out: Path = typer.Option(..., "--out", help="The model file to write (e.g. model.onnx, model.pt2); its "
                             "settings go beside it in OUT.json."),
    checkpoint: str = typer.Option("best", help="Which checkpoint: best or last."),
) -> None:
    """Export a run's model: a file that scores token ids (inputs ids [B, T] and lengths [B], output logits
    [B, K], batch and length dynamic) without this package, and OUT.json with the vocabulary, labels and
    text settings. `sentiment predict --model OUT` scores texts with it. See docs/serving.md."""
    from sentiment.inference.export import export_run

    with user_errors():
        _check_checkpoint(checkpoint)
        sidecar = export_run(run, fmt, out, checkpoint=checkpoint)
    err_console.print(f"wrote {out} and {sidecar}", soft_wrap=True, highlight=False)
