"""The `sentiment` command line. Each command parses its options, calls one library function and prints
the result with rich. Library errors (SentimentError) become one line on stderr and a non-zero exit.

One module per command group; importing them registers their commands on `app`, in the order `--help` lists."""

from sentiment.cli.app import app
from sentiment.cli import data, train, inference, explain, serve, pretrain, runs, tune  # noqa: F401,E402  (registers the commands)


def main() -> None:
    from sentiment.memory import keep_freed_memory

    keep_freed_memory()  # before any tensor: training reuses its large blocks instead of faulting in new pages
    app()


__all__ = ["app", "main"]
