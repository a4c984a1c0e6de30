"""Time language-model steps (forward + backward + Adam, both directions) of each output layer on the same windows.

    python benchmarks/time_lm_steps.py --config configs/imdb_cpu_pretrain.yaml --steps 10 [--set run.threads=1]

Prints one JSON line per output layer (adaptive, sampled, full): tokens/s (window positions per second; each
direction predicts every one) and seconds per step, after `--warmup` untimed steps. The full softmax is the
baseline the others are compared with; on CPU it is only ever run here.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    from sentiment.config import load_config
    from sentiment.data.prepare import prepare_data
    from sentiment.training.lm import LanguageModelObjective, WindowStream, build_language_model
    from sentiment.training.pretrain import pretraining_text_of

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=Path("configs/imdb_cpu_pretrain.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--outputs", default="adaptive,sampled,full")
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    t0 = time.perf_counter()
    data = prepare_data(cfg.data, embedding_seed=cfg.run.seed)
    text = pretraining_text_of(cfg, data)
    print(json.dumps({"prepare_seconds": round(time.perf_counter() - t0, 1), "vocab": len(data.vocab),
                      "texts": text.texts, "train_tokens": int(len(text.train)), "threads": torch.get_num_threads()}),
          flush=True)
    stream = WindowStream(text.train, cfg.pretrain.bptt, cfg.pretrain.batch_size, seed=cfg.run.seed,
                          device=torch.device("cpu"))
    stream.set_epoch(0)
    for output in args.outputs.split(","):
        cfg.pretrain.output = output
        torch.manual_seed(cfg.run.seed)
        model = build_language_model(cfg, len(data.vocab), data.vocab.pad_index)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.pretrain.lr)
        objective = LanguageModelObjective()
        seconds, tokens, loss = 0.0, 0, float("nan")
        for i in range(args.warmup + args.steps):
            batch = stream.batch(i)
            started = time.perf_counter()
            value, _ = objective(model, batch)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            if i >= args.warmup:
                seconds += time.perf_counter() - started
                tokens += batch.tokens
            loss = float(value.detach())
        print(json.dumps({"output": output, "steps": args.steps, "tokens_per_s": round(tokens / seconds),
                          "seconds_per_step": round(seconds / args.steps, 3), "last_loss": round(loss, 3)}), flush=True)


if __name__ == "__main__":
    main()
