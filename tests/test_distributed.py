"""Training on several processes through torchrun (DDP, gloo on CPU), on a tiny generated dataset: one run
directory, written once; the same weights as one process stepping over both ranks' batches; two "machines"
on localhost through c10d rendezvous; a killed rank and Ctrl-C end every process with one clear line."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import set_args

SETTINGS = ["data.dataset=files", "data.glove_dim=null", "model.embed_dim=8", "model.hidden_size=8",
            "model.embed_dropout=0.0", "model.output_dropout=0.0", "train.batch_size=8", "train.lr=0.01",
            "train.lr_schedule=constant", "train.warmup_steps=0", "data.workers=1", "run.threads=1",
            "model.ngrams=null"]  # the recurrent model alone, as these tests were written for (the default has two parts)
CUES = {"neg": ["awful", "bad", "worst", "rude"], "pos": ["great", "good", "love", "kind"]}


def write_data(base: Path, rows: int = 240, seed: int = 0) -> Path:
    rng = random.Random(seed)
    lines = ["text,label"]
    for _ in range(rows):
        label = rng.choice(["neg", "pos"])
        words = [rng.choice(["the", "a", "it", "was", "so", "crew", "seat"]) for _ in range(rng.randint(3, 12))]
        words.insert(rng.randrange(len(words) + 1), rng.choice(CUES[label]))
        lines.append(f"{' '.join(words)},{label}")
    base.mkdir(parents=True, exist_ok=True)
    (base / "t.csv").write_text("\n".join(lines) + "\n")
    return base / "t.csv"


def sentiment(*args: str, timeout: float = 240, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "SENTIMENT_DIST_TIMEOUT": "30"}
    env.pop("SENTIMENT_CACHE_DIR", None)
    return subprocess.run([sys.executable, "-m", "sentiment", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, **kw)


def common(tmp: Path, csv: Path, *extra: str) -> list[str]:
    return set_args([*SETTINGS, f"data.train_file={csv}", f"data.data_dir={tmp / 'data'}", *extra])


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    csv = write_data(tmp)
    run_dir = tmp / "runs" / "r"
    done = sentiment("train", "--nproc", "2", *common(tmp, csv, "train.epochs=2"), "--run-dir", str(run_dir))
    return tmp, csv, run_dir, done


def test_two_processes_write_one_run_directory(two_ranks):
    tmp, _, run_dir, done = two_ranks
    assert done.returncode == 0, done.stderr
    assert list((tmp / "runs").iterdir()) == [run_dir]  # one directory, named by rank 0
    assert done.stdout.count("run directory:") == 1 and "2 processes" in done.stdout  # only rank 0 prints
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]  # each epoch written once
    assert all(r["processes"] == 2 and r["global_batch_size"] == 16 for r in rows)
    from sentiment.training.tensorboard import tensorboard_installed

    # rank 0 alone logs curves (run.tensorboard: auto) and says how the run ended
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == (1 if tensorboard_installed() else 0)
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["processes"] == 2
    # valid and test counted every row exactly once across the ranks
    splits = np.load(run_dir / "splits.npz")
    assert results["valid"]["n"] == len(splits["valid"]) and results["test"]["n"] == len(splits["test"])


def test_an_overwrite_under_nproc_that_fails_late_leaves_the_finished_run_as_it_was(two_ranks, tmp_path):
    """rank 0 sets the old run aside once the data is read; a check after that (init_from of another embedding
    width, on every rank) puts it back byte for byte, and nothing is left beside it."""
    import shutil

    tmp, csv, finished, done = two_ranks
    assert done.returncode == 0, done.stderr
    run_dir = Path(shutil.copytree(finished, tmp_path / "r"))
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    failed = sentiment("train", "--nproc", "2", *common(tmp, csv, f"model.init_from={finished}", "model.embed_dim=16"),
                       "--run-dir", str(run_dir), "--overwrite", timeout=120)
    assert failed.returncode != 0 and "embedding size" in failed.stderr, failed.stderr
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_eval_of_a_ddp_run_gives_its_figures(two_ranks):
    _, _, run_dir, done = two_ranks
    assert done.returncode == 0, done.stderr
    out = sentiment("eval", "--run", str(run_dir), "--json")
    assert out.returncode == 0, out.stderr
    figures, results = json.loads(out.stdout.strip().splitlines()[-1]), json.loads((run_dir / "results.json").read_text())
    assert figures["confusion"] == results["test"]["confusion"]
    assert figures["loss"] == pytest.approx(results["test"]["loss"], abs=1e-6)


def test_ddp_weights_equal_one_process_over_both_ranks_batches(two_ranks):
    """Two ranks stepping together are one process stepping over the union of their batches: each row
    weighs the same, whichever rank read it, also when one rank's batch is the short last one of a pool
    (no dropout, constant learning rate). Not DDP's own arithmetic (the mean of the ranks' batch means),
    which gives a short batch's rows more weight."""
    from sentiment.data.batching import BucketBatchSampler, collate
    from sentiment.runs import load_checkpoint, load_labels, load_run
    from sentiment.model import build_model
    from sentiment.data.prepare import prepare_data
    from sentiment.training.train import seed_everything

    tmp, _, run_dir, done = two_ranks
    assert done.returncode == 0, done.stderr
    cfg, vocab = load_run(run_dir)
    space = load_labels(run_dir)
    data = prepare_data(cfg.data, vocab, label_space=space)
    torch.set_num_threads(1)
    seed_everything(cfg.run.seed)
    model = build_model(cfg, len(vocab), vocab.pad_index, space.num_outputs)
    params = list(model.parameters())
    optimizer = torch.optim.Adam(params, lr=cfg.train.lr)
    lengths = data.train.lengths(cfg.data.max_len)
    samplers = [BucketBatchSampler(lengths, cfg.train.batch_size, seed=cfg.run.seed, num_replicas=2, rank=r)
                for r in range(2)]
    model.train()
    uneven = 0
    for epoch in range(cfg.train.epochs):
        for s in samplers:
            s.set_epoch(epoch)
        for pair in zip(*(s.batches() for s in samplers)):
            uneven += len(pair[0]) != len(pair[1])
            optimizer.zero_grad()
            union = np.concatenate(pair)
            ids, lens, labels = collate(data.train, union, cfg.data.max_len, cfg.data.truncate, vocab.pad_index)
            space.loss(model(ids, lens), labels).backward()  # the mean over every row of the step
            torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
            optimizer.step()
    assert uneven > 0  # a short batch beside a full one: where the two arithmetics part
    trained = load_checkpoint(run_dir / "last.pt", vocab)["model"]
    assert trained.keys() == model.state_dict().keys()
    moved = max(float((trained[k] - v).abs().max()) for k, v in build_model(
        cfg, len(vocab), vocab.pad_index, space.num_outputs).state_dict().items())
    assert moved > 1e-2  # training changed the weights, so agreeing below is not a coincidence
    for name, value in model.state_dict().items():
        assert torch.allclose(trained[name], value, atol=1e-5), (name, float((trained[name] - value).abs().max()))


def test_ddp_with_a_sparse_ngram_table_equals_one_process_over_both_ranks_batches(tmp_path):
    """A GRU + n-gram branch whose table's gradient is sparse (model.ngrams.sparse: gloo all-reduces it; LazyAdam
    steps the rows it touches, with the branch's L2 penalty on them): two ranks end with the weights of one process
    stepping over the union of their batches, within float tolerance."""
    from sentiment.data.batching import BucketBatchSampler, collate
    from sentiment.data.prepare import prepare_data
    from sentiment.model import build_model
    from sentiment.ngrams import init_statistics, ngram_inputs
    from sentiment.runs import load_checkpoint, load_labels, load_run
    from sentiment.training.lazy_adam import build_optimizer
    from sentiment.training.train import optimizer_groups, seed_everything

    csv = write_data(tmp_path)
    run_dir = tmp_path / "runs" / "r"
    branch = ["model.ngrams.n=2", "model.ngrams.buckets=4096", "model.ngrams.lr=0.05",
              "model.ngrams.weight_decay=0.01", "train.epochs=2", "run.eval_test=false",
              "model.combine=sum"]  # the reference below steps the summed loss
    done = sentiment("train", "--nproc", "2", *common(tmp_path, csv, *branch), "--run-dir", str(run_dir))
    assert done.returncode == 0, done.stderr
    cfg, vocab = load_run(run_dir)
    assert cfg.model.ngrams.sparse  # the default
    space = load_labels(run_dir)
    data = prepare_data(cfg.data, vocab, label_space=space, token_hashes=True)
    torch.set_num_threads(1)
    seed_everything(cfg.run.seed)
    model = build_model(cfg, len(vocab), vocab.pad_index, space.num_outputs)
    init_statistics(model, cfg, data.train, space.num_classes)
    groups = optimizer_groups(model, cfg)
    assert groups[-1]["sparse"] and groups[-1]["params"] == [model.ngrams.table.weight]
    optimizer = build_optimizer(groups, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    dense = [p for p in model.parameters() if p is not model.ngrams.table.weight]
    lengths = data.train.lengths(cfg.data.max_len)
    samplers = [BucketBatchSampler(lengths, cfg.train.batch_size, seed=cfg.run.seed, num_replicas=2, rank=r)
                for r in range(2)]
    model.train()
    for epoch in range(cfg.train.epochs):
        for s in samplers:
            s.set_epoch(epoch)
        for pair in zip(*(s.batches() for s in samplers)):
            optimizer.zero_grad()
            union = np.concatenate(pair)
            ids, lens, labels = collate(data.train, union, cfg.data.max_len, cfg.data.truncate, vocab.pad_index)
            inputs = ngram_inputs(model, data.train, union, cfg.data.max_len, cfg.data.truncate)
            space.loss(model(ids, lens, **inputs), labels).backward()
            assert model.ngrams.table.weight.grad.is_sparse
            torch.nn.utils.clip_grad_norm_(dense, cfg.train.grad_clip)  # the table is left out, as the engine does
            optimizer.step()
    saved = load_checkpoint(run_dir / "last.pt", vocab)
    trained = saved["model"]
    assert "amsgrad" not in saved["optimizer"]["param_groups"][-1]  # LazyAdam's group, not torch Adam's
    assert float(trained["ngrams.table.weight"].abs().max()) > 1e-2  # the table (zero at init) trained
    for name, value in model.state_dict().items():
        assert torch.allclose(trained[name], value, atol=1e-5), (name, float((trained[name] - value).abs().max()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_localhost_through_c10d_rendezvous(tmp_path):
    csv = write_data(tmp_path)
    run_dir = tmp_path / "runs" / "r"
    endpoint = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "SENTIMENT_DIST_TIMEOUT": "30"}
    env.pop("SENTIMENT_CACHE_DIR", None)
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                               "--node-rank", str(k), "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
                               "--rdzv-id", "test", "-m", "sentiment", "train", *common(tmp_path, csv, "train.epochs=1"),
                               "--run-dir", str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for k in range(2)]
    outs = [n.communicate(timeout=240) for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], outs
    assert sum(o[0].count("run directory:") for o in outs) == 1
    assert json.loads((run_dir / "results.json").read_text())["processes"] == 2


def _start(tmp: Path, csv: Path, run_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "SENTIMENT_DIST_TIMEOUT": "30"}
    env.pop("SENTIMENT_CACHE_DIR", None)
    # many epochs on a few rows: long enough to be stopped mid-run, every epoch writes metrics.jsonl
    return subprocess.Popen([sys.executable, "-m", "sentiment", "train", "--nproc", "2",
                             *common(tmp, csv, "train.epochs=400"), "--run-dir", str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


def _wait_for_epochs(run_dir: Path, proc: subprocess.Popen, n: int = 2) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        metrics = run_dir / "metrics.jsonl"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"training did not reach epoch {n}: {proc.poll()}")


def _ranks(launcher: int) -> list[int]:
    """pids of the training ranks: the grandchildren of the launcher (launcher -> torchrun -> ranks)."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout.split()
    parent = dict(zip(map(int, out[::2]), map(int, out[1::2])))
    torchrun = [p for p, pp in parent.items() if pp == launcher]
    return sorted(p for p, pp in parent.items() if pp in torchrun)


def test_a_killed_rank_ends_every_process_with_one_line(tmp_path):
    csv = write_data(tmp_path, rows=120)
    run_dir = tmp_path / "r"
    proc = _start(tmp_path, csv, run_dir)
    _wait_for_epochs(run_dir, proc)
    ranks = _ranks(proc.pid)
    assert len(ranks) == 2
    os.kill(ranks[1], signal.SIGKILL)
    killed = time.monotonic()
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - killed < 30
    assert proc.returncode != 0
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "each rank's output" in errors[0], err
    assert "rank 1" in errors[0] and "SIGKILL" in errors[0], errors[0]  # which rank, and what ended it
    assert "Traceback" not in err
    assert not any(Path(f"/proc/{pid}").exists() for pid in ranks)
    log_dir = Path(errors[0].rsplit("each rank's output: ", 1)[1].rstrip("]"))
    logs = {p.relative_to(log_dir).as_posix() for p in log_dir.rglob("*.log")}
    assert "rank0-stderr.log" in logs and any(p.endswith("/1/stderr.log") for p in logs), logs  # every rank's
    assert not run_dir.with_name(f".{run_dir.name}.lock").exists()  # the launcher's lock went with it


def test_killing_the_launcher_ends_every_rank_and_frees_the_run_directory(tmp_path):
    """kill -9 of `sentiment train --nproc 2`: torchrun and both ranks are gone within 10 s. While it ran,
    it held the run directory's lock: a second training into it was refused, naming the launcher."""
    from sentiment.runlock import RunLock

    csv = write_data(tmp_path, rows=120)
    run_dir = tmp_path / "r"
    proc = _start(tmp_path, csv, run_dir)
    _wait_for_epochs(run_dir, proc)
    second = sentiment("train", *common(tmp_path, csv), "--run-dir", str(run_dir), "--overwrite", timeout=60)
    assert second.returncode == 1 and f"(pid {proc.pid})" in second.stderr, second.stderr
    ranks = _ranks(proc.pid)
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout.split()
    torchrun = [int(p) for p, pp in zip(out[::2], out[1::2]) if int(pp) == proc.pid]
    assert len(ranks) == 2 and len(torchrun) == 1
    os.kill(proc.pid, signal.SIGKILL)
    killed = time.monotonic()
    while time.monotonic() - killed < 10 and any(_running(pid) for pid in ranks + torchrun):
        time.sleep(0.2)
    assert not any(_running(pid) for pid in ranks + torchrun), "a training process outlived its launcher"
    proc.communicate(timeout=10)
    with RunLock(run_dir):  # the kernel released the launcher's lock
        pass


def _running(pid: int) -> bool:
    """pid exists and is not a zombie (the test reaps only its own child)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def test_sigterm_while_the_ranks_start_is_an_interruption(tmp_path):
    csv = write_data(tmp_path, rows=120)
    run_dir = tmp_path / "r"
    proc = _start(tmp_path, csv, run_dir)
    deadline = time.monotonic() + 60
    while not _ranks(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the ranks are importing torch, joining the group or preparing the data
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode in (130, 143), err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: interrupted"), err
    assert "Traceback" not in err
    assert not run_dir.exists() or not any(run_dir.iterdir())  # nothing half-written: a rerun starts afresh


@pytest.mark.parametrize("bad", [["--set", "model.rnnn=gru"], ["--set", "data.train_file=/nonexistent/t.csv"]],
                         ids=["bad-set", "missing-file"])
def test_bad_input_under_nproc_is_refused_before_launching(tmp_path, bad):
    csv = write_data(tmp_path, rows=40)
    started = time.monotonic()
    done = sentiment("train", "--nproc", "2", *common(tmp_path, csv), *bad, "--run-dir", str(tmp_path / "r"), timeout=60)
    seconds = time.monotonic() - started
    from conftest import one_line_error

    one_line_error(done.returncode, done.stdout + done.stderr, "rnnn" if "rnnn" in bad[1] else "not found")
    assert "processes" not in done.stderr  # torchrun never started
    assert seconds < 10 and not (tmp_path / "r").exists()


def test_ctrl_c_writes_last_pt_once_and_the_run_resumes(tmp_path):
    csv = write_data(tmp_path, rows=120)
    run_dir = tmp_path / "r"
    proc = _start(tmp_path, csv, run_dir)
    _wait_for_epochs(run_dir, proc)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: every process of the group gets it
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err
    assert "interrupted at epoch" in err and "--resume" in err and "Traceback" not in err
    state = torch.load(run_dir / "last.pt", weights_only=True)
    epochs_done = state["loop"]["epoch"]
    done = sentiment("train", "--resume", str(run_dir), "--set", f"train.epochs={epochs_done + 1}", "--nproc", "2")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, epochs_done + 2))


def test_grad_accum_steps_once_per_group_of_batches(tmp_path):
    """train.grad_accum=2: one optimizer step per two batches, on the mean of their losses (a lone last batch
    counts half), the same as stepping by hand; and only then a checkpoint may be written."""
    from typer.testing import CliRunner

    from sentiment.data.batching import BucketBatchSampler, collate
    from sentiment.runs import load_checkpoint, load_labels, load_run
    from sentiment.cli import app
    from sentiment.model import build_model
    from sentiment.data.prepare import prepare_data
    from sentiment.training.train import seed_everything

    csv = write_data(tmp_path, rows=140)
    run_dir = tmp_path / "r"
    result = CliRunner().invoke(app, ["train", *common(tmp_path, csv, "train.epochs=1", "train.grad_accum=2"),
                                      "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    cfg, vocab = load_run(run_dir)
    space = load_labels(run_dir)
    data = prepare_data(cfg.data, vocab, label_space=space)
    seed_everything(cfg.run.seed)
    model = build_model(cfg, len(vocab), vocab.pad_index, space.num_outputs)
    params = list(model.parameters())
    optimizer = torch.optim.Adam(params, lr=cfg.train.lr)
    batches = BucketBatchSampler(data.train.lengths(cfg.data.max_len), cfg.train.batch_size, seed=cfg.run.seed).batches()
    assert len(batches) % 2 == 1  # the lone last batch is covered too
    model.train()
    for start in range(0, len(batches), 2):
        optimizer.zero_grad()
        for indices in batches[start:start + 2]:
            ids, lens, labels = collate(data.train, indices, cfg.data.max_len, cfg.data.truncate, vocab.pad_index)
            (space.loss(model(ids, lens), labels) / 2).backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
        optimizer.step()
    trained = load_checkpoint(run_dir / "last.pt", vocab)
    assert trained["scheduler"]["last_epoch"] == (len(batches) + 1) // 2  # optimizer steps, not batches
    for name, value in model.state_dict().items():
        assert torch.allclose(trained["model"][name], value, atol=1e-6), name


def test_resume_on_another_number_of_processes(two_ranks, tmp_path):
    """A run trained on 2 processes continues on 1: from the same global place, with the schedule's
    steps counted for one process, and the epoch table says how many processes trained each epoch."""
    import shutil

    tmp, _, run_dir, done = two_ranks
    assert done.returncode == 0, done.stderr
    copy = tmp_path / "r"
    shutil.copytree(run_dir, copy)
    before = torch.load(copy / "last.pt", weights_only=True)
    out = sentiment("train", "--resume", str(copy), "--set", "train.epochs=3")
    assert out.returncode == 0, out.stderr
    assert "cpu (1 thread) · 1 process(es) · global batch 8" in out.stdout
    rows = [json.loads(line) for line in (copy / "metrics.jsonl").read_text().splitlines()]
    assert [r["processes"] for r in rows] == [2, 2, 1]
    after = torch.load(copy / "last.pt", weights_only=True)
    steps_per_epoch_two = before["loop"]["global_step"] // 2  # 2 epochs on 2 processes
    # the schedule and the step count were doubled for one process, then one epoch on it was added
    assert after["loop"]["world_size"] == 1
    assert after["loop"]["schedule_steps"] == 2 * before["loop"]["schedule_steps"]
    # one process reads every batch of an epoch: the two ranks' shares, and the odd one they dropped if any
    added = after["loop"]["global_step"] - 2 * before["loop"]["global_step"]
    assert added in (2 * steps_per_epoch_two, 2 * steps_per_epoch_two + 1)


# ---------------------------------------------------------------- agreeing without a deadline
def _rank_main(rank: int, port: int, case: str, out: str) -> None:
    """One of two gloo ranks whose process group times out after 3 s; writes what happened to out.<rank>."""
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), SENTIMENT_DIST_TIMEOUT="3")
    from datetime import timedelta

    from sentiment import distributed
    from sentiment.errors import SentimentError

    distributed.TIMEOUT = timedelta(seconds=3)  # read when the module was imported (the test module imports it)
    r = distributed.from_env()
    distributed.init(r, torch.device("cpu"))

    def prepare():
        if case == "slow" and r.is_local_main:
            time.sleep(8)  # a cold prepare longer than the process group's timeout
        if case == "dies" and r.is_main:
            os._exit(9)
        if case == "raises" and r.is_main:
            raise ValueError("not one of ours")
        return f"data of rank {r.rank}"

    try:
        if case == "raises-together":
            result = distributed.together(r, lambda: prepare() if not r.is_main else 1 / 0, what="a step")
        else:
            result = distributed.once_per_machine(r, prepare)
        Path(f"{out}.{rank}").write_text(f"ok {result}")
    except SentimentError as e:
        Path(f"{out}.{rank}").write_text(f"error {e}")
    except Exception as e:  # noqa: BLE001
        Path(f"{out}.{rank}").write_text(f"raised {type(e).__name__}")


def _two_ranks(tmp_path: Path, case: str) -> tuple[list[str], float]:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    port, out = free_port(), str(tmp_path / "out")
    started = time.monotonic()
    procs = [ctx.Process(target=_rank_main, args=(r, port, case, out)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    seconds = time.monotonic() - started
    return [Path(f"{out}.{r}").read_text() if Path(f"{out}.{r}").exists() else "nothing" for r in range(2)], seconds


def test_a_prepare_longer_than_the_timeout_succeeds_on_every_rank(tmp_path):
    results, _ = _two_ranks(tmp_path, "slow")
    assert results == ["ok data of rank 0", "ok data of rank 1"]


def test_a_rank_that_dies_while_preparing_brings_the_others_down(tmp_path):
    results, seconds = _two_ranks(tmp_path, "dies")
    assert results[0] == "nothing"
    # the others see it gone (same machine), or the store it hosted go with it (torchrun hosts it elsewhere)
    assert results[1].startswith(("error stopped: rank 0 died in preparing the data",
                                  "error stopped: lost contact with the other ranks")), results
    assert seconds < 30


@pytest.mark.parametrize("case", ["raises", "raises-together"])
def test_any_exception_on_one_rank_stops_the_others_with_a_clear_line(tmp_path, case):
    results, seconds = _two_ranks(tmp_path, case)
    assert results[0] == ("raised ValueError" if case == "raises" else "raised ZeroDivisionError")
    assert results[1].startswith("error stopped: "), results
    assert "failed in" in results[1]


def test_a_start_that_fails_after_creating_the_run_directory_leaves_nothing(tmp_path):
    """--nproc 3 on too few rows fails once the run directory holds config, vocab, labels and splits: the
    rerun must not be refused as "already exists" (nor --resume as "no last.pt")."""
    csv = write_data(tmp_path, rows=40)
    run_dir = tmp_path / "runs" / "r"
    done = sentiment("train", "--nproc", "3", *common(tmp_path, csv, "train.batch_size=16"), "--run-dir", str(run_dir))
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 1 and len(errors) == 1 and "fewer batches" in errors[0], done.stderr
    assert not (tmp_path / "runs").exists()  # nor the folder made for it
