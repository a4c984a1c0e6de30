"""Do the explanations agree with what words plainly mean? Over the first --reviews IMDB test reviews in file order
that contain `wonderful`, `superb`, `awful` or `waste`, the share of those words' occurrences whose contribution to
the positive logit has the expected sign (positive for the first two, negative for the last two), and completeness
on every review (issue 32's done-when: >= 90% per word; completeness within 5% on all).

    python benchmarks/explain_words.py --run runs/NAME [--data-dir data] [--reviews 200] [--steps N] [--json FILE]

File order: the test reviews by their numeric id, neg/ before pos/ at the same id (aclImdb/test/neg/0_2.txt,
pos/0_10.txt, neg/1_3.txt, ...), so both labels come in. A review contains a word when one of its tokens (as the
run tokenizes, lowercased if it lowercases) is that word; every occurrence counts, read by the recurrent part or not.
Also printed: the same shares for each part alone (the recurrent part's Integrated Gradients, the branch's exact
share), and the recurrent part's own completeness error (the branch is exact).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

WORDS = {"wonderful": 1, "superb": 1, "awful": -1, "waste": -1}


def reviews_in_file_order(imdb_test: Path) -> list[Path]:
    files = [p for folder in ("neg", "pos") for p in (imdb_test / folder).glob("*.txt")]
    return sorted(files, key=lambda p: (int(p.stem.split("_")[0]), p.parent.name))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a run directory written by `sentiment train`")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--reviews", type=int, default=200, help="how many reviews with one of the words (default 200)")
    parser.add_argument("--steps", type=int, default=None, help="Integrated Gradients steps (default: explain's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    import torch

    from sentiment.inference.explain import DEFAULT_STEPS, load_explainer
    from sentiment.inference.predict import text_tokens

    steps = args.steps or DEFAULT_STEPS
    explainer = load_explainer(args.run)
    torch.set_num_threads(args.threads)
    if not explainer.space.binary:
        sys.exit(f"{args.run} has {explainer.space.num_classes} classes: this benchmark is for IMDB's two")
    picked: list[tuple[Path, str, list[str]]] = []
    for path in reviews_in_file_order(Path(args.data_dir) / "aclImdb" / "test"):
        text = path.read_text(encoding="utf-8", errors="replace")
        tokens = text_tokens([text], explainer.enc)[0]
        if any(t in WORDS for t in tokens):
            picked.append((path, text, tokens))
            if len(picked) == args.reviews:
                break
    if not picked:
        sys.exit(f"no test reviews with {', '.join(WORDS)} under {args.data_dir}/aclImdb/test")
    agree = {w: {"whole": 0, "rnn": 0, "branch": 0, "n": 0} for w in WORDS}
    errors, rnn_errors, start = [], [], time.perf_counter()
    for path, text, tokens in picked:
        e = explainer.explain_tokens([tokens], [text], steps=steps)[0]
        errors.append(e.completeness_error)
        if e.rnn_completeness_error is not None:
            rnn_errors.append(e.rnn_completeness_error)
        shares = {"whole": e.contributions, "rnn": e.rnn_contributions, "branch": e.branch_contributions}
        for i, token in enumerate(e.tokens):
            if token in WORDS:
                agree[token]["n"] += 1
                for part, values in shares.items():
                    if values is not None and np.sign(values[i][0]) == WORDS[token]:
                        agree[token][part] += 1
    seconds = time.perf_counter() - start
    errors = np.asarray(errors)
    print(f"run {args.run}; {len(picked)} test reviews in file order containing {', '.join(WORDS)} (last: "
          f"{picked[-1][0].parent.name}/{picked[-1][0].name}); {steps} steps; {args.threads} thread(s); {seconds:.0f} s")
    print(f"{'word':<10} {'expected':>8} {'occurrences':>11} {'whole':>8} {'recurrent':>10} {'branch':>8}")
    for word, a in agree.items():
        n = max(a["n"], 1)
        print(f"{word:<10} {'+' if WORDS[word] > 0 else '-':>8} {a['n']:>11} {a['whole'] / n:>8.1%} "
              f"{a['rnn'] / n:>10.1%} {a['branch'] / n:>8.1%}")
    print(f"completeness error (whole): max {errors.max():.2%}, median {np.median(errors):.2%}; "
          f"{int((errors <= 0.05).sum())}/{len(errors)} within 5%")
    if rnn_errors:
        r = np.asarray(rnn_errors)
        print(f"completeness error (recurrent part alone): max {r.max():.2%}, median {np.median(r):.2%}, "
              f"{int((r <= 0.05).sum())}/{len(r)} within 5%")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "run": str(args.run), "reviews": len(picked), "steps": steps, "seconds": seconds,
            "agreement": {w: {k: (v / max(a["n"], 1) if k != "n" else v) for k, v in a.items()} for w, a in agree.items()},
            "completeness_max": float(errors.max()), "completeness_within_5pct": int((errors <= 0.05).sum()),
            "rnn_completeness_max": float(max(rnn_errors)) if rnn_errors else None}, indent=1))


if __name__ == "__main__":
    main()
