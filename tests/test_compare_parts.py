"""benchmarks/compare_parts.py end to end on tiny data: the whole and each part alone, same seeds, and the paired
bootstrap of the whole against each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import TINY_TRAINING, make_imdb

ROOT = Path(__file__).resolve().parents[1]


def test_the_whole_and_each_part_alone_with_a_paired_bootstrap(tmp_path: Path):
    data = make_imdb(tmp_path / "data", n_per_class=30, with_glove=False)
    config = tmp_path / "two_parts.yaml"
    config.write_text("model: {rnn: gru, hidden_size: 8, combine: mixture, ngrams: {n: 2, buckets: 4096, lr: 0.05}}\n")
    settings = [f"data.data_dir={data}", "data.glove_dim=null", "model.embed_dim=16", "run.threads=1",
                "data.workers=1", "train.epochs=2",
                *[s for s in TINY_TRAINING if not s.startswith("model.ngrams")]]  # the config's branch stays on
    cmd = [sys.executable, str(ROOT / "benchmarks" / "compare_parts.py"), "--config", str(config), "--seeds", "1",
           "--runs-dir", str(tmp_path / "runs"), "--resamples", "200", "--json", str(tmp_path / "out.json")]
    for s in settings:
        cmd += ["--set", s]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    report = json.loads((tmp_path / "out.json").read_text())
    assert set(report["variants"]) == {"whole", "rnn", "branch"}
    assert set(report["variants"]["whole"]["parts"][0]) == {"rnn", "branch"}  # the whole's own parts, inside it
    assert report["variants"]["rnn"]["parts"] == [None]  # a part alone has none
    for part in ("rnn", "branch"):
        d = report["variants"][part]["whole_minus_this"]
        whole, alone = report["variants"]["whole"]["test"][0], report["variants"][part]["test"][0]
        assert abs(d["difference"] - (whole - alone)) < 1e-9 and d["low"] <= d["difference"] <= d["high"]
