"""sentiment/training/lazy_adam.py and the engine around it: Adam with its L2 penalty on the rows a sparse gradient
touches, against a reference written out by hand; the combined optimizer's one interface (param_groups for the
schedule, found_inf, an Adam-format state_dict); the engine's clipping and NaN guard with a sparse n-gram table;
an old run's config without model.ngrams.sparse resuming with the dense update it started with."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from sentiment.training.lazy_adam import AdamWithLazyRows, LazyAdam, build_optimizer

LR, BETAS, EPS, DECAY = 0.05, (0.9, 0.999), 1e-8, 0.1
# the rows each step's batch holds (two texts; row 2 in both texts of step 1, then in no text of step 2)
STEPS = [([0, 2], [2, 3]), ([0, 3], [4]), ([1, 2], [2])]


def table(sparse: bool = True) -> nn.EmbeddingBag:
    torch.manual_seed(0)
    bag = nn.EmbeddingBag(5, 3, mode="sum", sparse=sparse)
    nn.init.normal_(bag.weight)
    return bag


def backward(bag: nn.EmbeddingBag, texts: list[list[int]], k: int) -> None:
    ids = torch.tensor([i for t in texts for i in t])
    offsets = torch.tensor([0, len(texts[0])])
    weights = torch.linspace(0.5, 1.5, len(ids)) * (k + 1)
    target = torch.tensor([[1.0, -1.0, 0.5], [0.0, 2.0, -1.0]])
    ((bag(ids, offsets, per_sample_weights=weights) - target) ** 2).sum().backward()


def test_lazy_adam_is_adam_with_l2_on_the_rows_a_step_touches_and_leaves_the_others_as_they_were():
    bag = table()
    optimizer = LazyAdam(bag.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=DECAY)
    w = bag.weight.detach().double().clone()  # the reference, row by row, in float64
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    for k, texts in enumerate(STEPS):
        optimizer.zero_grad(set_to_none=True)
        backward(bag, texts, k)
        assert bag.weight.grad.is_sparse
        dense_grad = bag.weight.grad.to_dense().double()
        touched = sorted({i for t in texts for i in t})
        before = {name: t.clone() for name, t in (("w", bag.weight.detach()), *optimizer.state[bag.weight].items())}
        optimizer.step()
        t = k + 1  # the optimizer's step count: every step counts, touched or not (as SparseAdam's)
        for r in touched:
            g = dense_grad[r] + DECAY * w[r]
            m[r] = BETAS[0] * m[r] + (1 - BETAS[0]) * g
            v[r] = BETAS[1] * v[r] + (1 - BETAS[1]) * g * g
            denom = v[r].sqrt() / math.sqrt(1 - BETAS[1] ** t) + EPS
            w[r] = w[r] - LR / (1 - BETAS[0] ** t) * m[r] / denom
        state = optimizer.state[bag.weight]
        assert float(state["step"]) == t
        torch.testing.assert_close(bag.weight.detach().double(), w, rtol=0, atol=1e-6)
        torch.testing.assert_close(state["exp_avg"].double(), m, rtol=0, atol=1e-6)
        torch.testing.assert_close(state["exp_avg_sq"].double(), v, rtol=0, atol=1e-6)
        for r in set(range(5)) - set(touched):  # untouched: weights and moments bitwise as before the step
            assert torch.equal(bag.weight.detach()[r], before["w"][r])
            if k > 0:
                assert torch.equal(state["exp_avg"][r], before["exp_avg"][r])
                assert torch.equal(state["exp_avg_sq"][r], before["exp_avg_sq"][r])
        if k == 1:
            assert 2 not in touched and 1 not in touched
    assert float(bag.weight.detach()[1].sub(table().weight.detach()[1]).abs().max()) > 0  # row 1 moved in step 3


def test_where_every_row_is_touched_lazy_adam_steps_as_torch_adam_with_weight_decay():
    sparse, dense = table(sparse=True), table(sparse=False)
    lazy = LazyAdam(sparse.parameters(), lr=LR, weight_decay=DECAY)
    adam = torch.optim.Adam(dense.parameters(), lr=LR, weight_decay=DECAY)
    for k in range(3):
        for bag, opt in ((sparse, lazy), (dense, adam)):
            opt.zero_grad(set_to_none=True)
            backward(bag, [[0, 1, 2], [3, 4, 1]], k)
            opt.step()
    torch.testing.assert_close(sparse.weight, dense.weight, rtol=0, atol=0)
    torch.testing.assert_close(lazy.state[sparse.weight]["exp_avg_sq"], adam.state[dense.weight]["exp_avg_sq"])


def model_and_optimizer(fused: bool = False):
    torch.manual_seed(1)
    bag, linear = table(), nn.Linear(3, 2)
    groups = [{"params": list(linear.parameters())}, {"params": [bag.weight], "lr": 0.1, "weight_decay": 0.01,
                                                       "sparse": True}]
    return bag, linear, build_optimizer(groups, lr=0.01, fused=fused)


def train_step(bag, linear, optimizer, k: int) -> None:
    optimizer.zero_grad(set_to_none=True)
    ids, offsets = torch.tensor([k % 5, (k + 2) % 5, 4]), torch.tensor([0, 2])
    linear(bag(ids, offsets)).square().mean().backward()
    optimizer.step()


def test_the_combined_optimizer_is_one_adam_format_state_and_one_schedule():
    bag, linear, optimizer = model_and_optimizer()
    assert isinstance(optimizer, AdamWithLazyRows)
    assert isinstance(build_optimizer([{"params": list(linear.parameters())}], lr=0.01), torch.optim.Adam)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 ** step)
    for k in range(2):
        train_step(bag, linear, optimizer, k)
        scheduler.step()
    # the schedule scaled both parts' groups, the lazy one included
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.01 / 4, 0.1 / 4])
    assert optimizer.parts["lazy"].param_groups[0]["lr"] == pytest.approx(0.1 / 4)
    saved = optimizer.state_dict()
    assert [g["params"] for g in saved["param_groups"]] == [[0, 1], [2]]  # numbered as one Adam numbers them
    assert set(saved["state"][2]) == {"step", "exp_avg", "exp_avg_sq"}  # Adam's per-parameter state
    saved = {"state": {k: {n: t.clone() for n, t in s.items()} for k, s in saved["state"].items()},
             "param_groups": [dict(g) for g in saved["param_groups"]]}
    weights = [p.detach().clone() for p in (bag.weight, *linear.parameters())]
    sched_state = scheduler.state_dict()

    train_step(bag, linear, optimizer, 2)  # the step to reproduce
    scheduler.step()
    expected = [p.detach().clone() for p in (bag.weight, *linear.parameters())]

    bag2, linear2, resumed = model_and_optimizer()
    with torch.no_grad():
        for p, w in zip((bag2.weight, *linear2.parameters()), weights):
            p.copy_(w)
    scheduler2 = torch.optim.lr_scheduler.LambdaLR(resumed, lambda step: 0.5 ** step)
    resumed.load_state_dict(saved)
    scheduler2.load_state_dict(sched_state)
    train_step(bag2, linear2, resumed, 2)
    scheduler2.step()
    for a, b in zip(expected, (bag2.weight, *linear2.parameters())):
        assert torch.equal(a, b)
    assert [g["lr"] for g in resumed.param_groups] == [g["lr"] for g in optimizer.param_groups]
    assert resumed.parts["lazy"].param_groups[0]["lr"] == pytest.approx(0.1 / 8)  # the loaded groups, scheduled


def test_found_inf_skips_both_parts_without_a_host_sync():
    bag, linear, optimizer = model_and_optimizer(fused=True)  # fused Adam reads found_inf (the engine's lazy path)
    train_step(bag, linear, optimizer, 0)
    before = ([p.detach().clone() for p in (bag.weight, *linear.parameters())],
              {id(p): {k: t.clone() for k, t in s.items()} for p, s in
               [*optimizer.parts["dense"].state.items(), *optimizer.parts["lazy"].state.items()]})
    optimizer.found_inf = torch.tensor(1.0)
    train_step(bag, linear, optimizer, 1)
    for a, b in zip(before[0], (bag.weight, *linear.parameters())):
        assert torch.equal(a, b)
    for p, s in [*optimizer.parts["dense"].state.items(), *optimizer.parts["lazy"].state.items()]:
        assert all(torch.equal(t, before[1][id(p)][k]) for k, t in s.items())
    optimizer.found_inf = torch.tensor(0.0)
    train_step(bag, linear, optimizer, 1)
    assert not torch.equal(before[0][0], bag.weight)
    assert float(optimizer.parts["lazy"].state[bag.weight]["step"]) == 2


# ------------------------------------------------------------------ the engine with a sparse n-gram table
@pytest.fixture(scope="module")
def phrases(tmp_path_factory):
    from test_ngrams import phrase_rows, write_csv

    return write_csv(tmp_path_factory.mktemp("phrases") / "phrases.csv", phrase_rows(200))


def branch_config(phrases, tmp_path, *extra: str):
    from test_ngrams import phrase_config

    return phrase_config(phrases, tmp_path, "model.rnn=gru", "model.hidden_size=8", "train.epochs=1", *extra)


@pytest.mark.parametrize("lazy", [False, True])
def test_a_non_finite_sparse_gradient_stops_the_run(phrases, tmp_path, monkeypatch, lazy):
    """The loss stays finite while the table's sparse gradient turns NaN from the third step: the eager guard stops
    before stepping on it, the lazy path (fused Adam and LazyAdam skip on found_inf) stops when it reads the count;
    either way the table holds no NaN."""
    from sentiment.runs import LAST, load_checkpoint
    from sentiment.training import train as train_mod

    built = train_mod._model
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        model = built(*args, **kwargs)

        def hook(grad):
            calls["n"] += 1
            return grad * float("nan") if calls["n"] >= 3 else grad

        model.ngrams.table.weight.register_hook(hook)
        return model

    monkeypatch.setattr(train_mod, "_model", poisoned)
    cfg = branch_config(phrases, tmp_path, f"train.lazy_sync={str(lazy).lower()}", "run.checkpoint_minutes=0")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(train_mod.TrainingDiverged, match="step\\(s\\) had a non-finite" if lazy else
                       "gradient norm became nan .* at epoch 1, step 3"):
        train_mod.train(cfg, run_dir)
    if (run_dir / LAST).exists():
        assert bool(torch.isfinite(load_checkpoint(run_dir / LAST)["model"]["ngrams.table.weight"]).all())


def test_clipping_leaves_the_sparse_table_out_and_still_clips_the_rest(phrases, tmp_path, monkeypatch):
    """train.grad_clip clips the dense gradients to the limit (the table's sparse one is left as it is), and the
    guard's norm counts the table's too."""
    from sentiment.training import engine as engine_mod
    from sentiment.training.train import train

    clipped, guarded = [], []
    real_clip, real_guard = nn.utils.clip_grad_norm_, engine_mod.EagerSync.guard

    def clip(params, limit, *args, **kwargs):
        params = list(params)
        clipped.append([p.grad.is_sparse for p in params if p.grad is not None])
        norm = real_clip(params, limit, *args, **kwargs)
        clipped[-1].append(float(nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])))
        return norm

    def guard(self, optimizer, loss, grad_norm, scaled):
        guarded.append(float(grad_norm))
        return real_guard(self, optimizer, loss, grad_norm, scaled)

    monkeypatch.setattr(engine_mod.nn.utils, "clip_grad_norm_", clip)
    monkeypatch.setattr(engine_mod.EagerSync, "guard", guard)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    train(branch_config(phrases, tmp_path, "train.grad_clip=0.001"), run_dir)
    assert clipped and all(not any(c[:-1]) for c in clipped)  # no sparse gradient reached the clip
    assert all(c[-1] <= 0.001 * (1 + 1e-4) for c in clipped)  # the dense ones were clipped
    assert all(g > 0.001 for g in guarded)  # the guard's norm: before clipping, the table's included


def test_an_old_runs_config_without_the_key_resumes_with_the_dense_update(phrases, tmp_path):
    """A run stored before model.ngrams.sparse (config.yaml without the key) loads as sparse: false, so it resumes
    with the optimizer it started with (the dense table, one group for table and bias)."""
    from conftest import StopAfter
    from sentiment.runs import LAST, load_checkpoint, load_run
    from sentiment.training.train import TrainingInterrupted, train

    cfg = branch_config(phrases, tmp_path, "model.ngrams.sparse=false", "train.epochs=2")
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    with pytest.raises(TrainingInterrupted):
        train(cfg, run_dir, stop=StopAfter(4))
    config_file = run_dir / "config.yaml"
    text = config_file.read_text()
    assert "sparse: false" in text
    config_file.write_text("".join(line for line in text.splitlines(keepends=True) if "sparse:" not in line))
    saved, _ = load_run(run_dir)
    assert saved.model.ngrams.sparse is False
    assert branch_config(phrases, tmp_path).model.ngrams.sparse is True  # a new config: sparse
    train(saved, run_dir, resume=True)
    checkpoint = load_checkpoint(run_dir / LAST)
    assert checkpoint["loop"]["epoch"] == 2 and len(checkpoint["optimizer"]["param_groups"]) == 2


def test_where_sparse_gradients_cannot_be_all_reduced_the_table_trains_dense_with_a_note(phrases, tmp_path,
                                                                                           monkeypatch):
    """Under NCCL (here: the check answering no) the table is built dense before DDP and the optimizer see it: the
    same groups (one checkpoint format), none marked sparse, one note."""
    from sentiment.distributed import Rank, sparse_gradients_supported
    from sentiment.runs import LAST, load_checkpoint
    from sentiment.training import train as train_mod

    assert sparse_gradients_supported(Rank())  # one process: nothing to all-reduce
    notes = []

    class Notes:
        def epoch_start(self, *args) -> None: ...
        def step(self, *args) -> None: ...
        def epoch_end(self, row) -> None: ...
        def note(self, message) -> None: notes.append(message)

    groups = []
    real_groups = train_mod.optimizer_groups
    monkeypatch.setattr(train_mod, "sparse_gradients_supported", lambda rank: False)
    monkeypatch.setattr(train_mod, "optimizer_groups", lambda *a: groups.append(real_groups(*a)) or groups[-1])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    train_mod.train(branch_config(phrases, tmp_path), run_dir, reporter=Notes())
    assert [g.get("sparse") for g in groups[0]] == [None, None, False]  # the GRU's, the bias's, the table's
    assert len(notes) == 1 and "NCCL" in notes[0] and "dense" in notes[0]
    saved = load_checkpoint(run_dir / LAST)["optimizer"]
    assert len(saved["param_groups"]) == 3 and "amsgrad" in saved["param_groups"][2]  # torch Adam stepped it
