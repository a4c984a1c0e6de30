"""One `sentiment tune --jobs K` worker: `python -m sentiment.training.tune_worker SETTINGS_JSON`. It runs trials
(sentiment.training.tune.run_worker) and prints nothing but its one error line; the tune process that started it
reads that line from its log."""

from __future__ import annotations

import json
import signal
import sys


def main(argv: list[str]) -> int:
    from sentiment.errors import SentimentError
    from sentiment.training.tune import TuneSettings, quiet_optuna, run_worker

    def interrupt(signum, frame):  # the tune process stops its workers with SIGTERM: end the running trial too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        quiet_optuna()
        run_worker(TuneSettings(**json.loads(argv[0])))
    except SentimentError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
