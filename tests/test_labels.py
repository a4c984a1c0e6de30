"""sentiment.data.labels: the one place logits become losses, predictions and probabilities, for two classes (one
logit, BCE) and for K (K logits, cross-entropy); label names mapped to indices, and sorted naturally."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sentiment.errors import SentimentError
from sentiment.data.labels import IMDB_LABELS, LabelSpace, sort_labels

BINARY = LabelSpace(("neg", "pos"))
THREE = LabelSpace(("billing", "delivery", "quality"))


def _logits(n: int, width: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (n,) if width == 1 else (n, width)
    return torch.randn(shape, generator=g) * 3


def test_width_of_the_head():
    assert (BINARY.num_outputs, BINARY.num_classes, BINARY.binary) == (1, 2, True)
    assert (THREE.num_outputs, THREE.num_classes, THREE.binary) == (3, 3, False)


# ---------------------------------------------------------------- losses
def test_two_class_loss_is_binary_cross_entropy_on_one_logit():
    logits, targets = _logits(50, 1), torch.randint(0, 2, (50,), generator=torch.Generator().manual_seed(1))
    expected = F.binary_cross_entropy_with_logits(logits, targets.float())
    # and by hand, so that the test does not merely restate the implementation
    p = torch.sigmoid(logits.double())
    by_hand = -(targets * torch.log(p) + (1 - targets) * torch.log(1 - p)).mean()
    got = BINARY.loss(logits, targets)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    assert got.item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_k_class_loss_is_cross_entropy_on_k_logits():
    logits, targets = _logits(40, 3), torch.randint(0, 3, (40,), generator=torch.Generator().manual_seed(2))
    by_hand = -torch.log_softmax(logits.double(), dim=1)[torch.arange(40), targets].mean()
    got = THREE.loss(logits, targets)
    assert got.item() == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-6)
    assert got.item() == pytest.approx(by_hand.item(), rel=1e-5)


@pytest.mark.parametrize("space", [BINARY, THREE], ids=["two", "three"])
def test_weighted_loss_is_a_weighted_mean_for_both_heads(space):
    n = 30
    logits = _logits(n, space.num_outputs, seed=3)
    targets = torch.randint(0, space.num_classes, (n,), generator=torch.Generator().manual_seed(4))
    weights = torch.tensor([0.5, 2.0, 4.0][: space.num_classes])
    if space.binary:
        per_row = F.binary_cross_entropy_with_logits(logits, targets.float(), reduction="none")
    else:
        per_row = F.cross_entropy(logits, targets, reduction="none")
    w = weights[targets]
    expected = (per_row * w).sum() / w.sum()
    got = space.loss(logits, targets, weights)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    assert got.item() != pytest.approx(space.loss(logits, targets).item(), rel=1e-3)  # the weights did something
    # equal weights change nothing
    assert space.loss(logits, targets, torch.full((space.num_classes,), 7.0)).item() == pytest.approx(
        space.loss(logits, targets).item(), rel=1e-6)


def test_loss_of_a_whole_split_matches_the_batch_loss():
    logits = _logits(25, 3, seed=5)
    labels = np.arange(25) % 3
    assert THREE.loss_of(logits.numpy(), labels) == pytest.approx(F.cross_entropy(logits, torch.from_numpy(labels)).item(),
                                                                  rel=1e-6)


# ---------------------------------------------------------------- class weights
def test_balanced_weights_are_n_over_k_times_class_count():
    labels = np.array([0] * 6 + [1] * 3 + [2] * 1)
    weights = THREE.balanced_weights(labels)
    assert weights == pytest.approx([10 / (3 * 6), 10 / (3 * 3), 10 / (3 * 1)])
    # every class then carries the same total weight
    totals = np.bincount(labels, weights=weights[labels])
    assert totals == pytest.approx([totals[0]] * 3)


def test_balanced_weights_need_every_class():
    with pytest.raises(SentimentError, match="no training rows of delivery"):
        THREE.balanced_weights(np.array([0, 0, 2]))


# ---------------------------------------------------------------- predictions and probabilities
def test_two_class_predictions_threshold_the_logit_at_zero():
    logits = np.array([-2.0, -0.01, 0.0, 0.01, 3.0], dtype=np.float32)
    # a logit of exactly 0 is P = 0.5, positive, as predict's default threshold decides it
    assert BINARY.predictions(logits).tolist() == [0, 0, 1, 1, 1]
    assert BINARY.predict(torch.from_numpy(logits)).tolist() == [0, 0, 1, 1, 1]
    # a threshold is on P(positive): 0.5 is the logit 0 (ties go positive), 0 makes everything positive
    assert BINARY.predictions(logits, threshold=0.5).tolist() == [0, 0, 1, 1, 1]
    assert BINARY.predictions(logits, threshold=0.0).tolist() == [1] * 5
    assert BINARY.predictions(logits, threshold=0.95).tolist() == [0, 0, 0, 0, 1]


def test_k_class_predictions_are_the_argmax():
    logits = _logits(20, 3, seed=6).numpy()
    expected = [int(np.argmax(row)) for row in logits]
    assert THREE.predictions(logits).tolist() == expected
    assert THREE.predict(torch.from_numpy(logits)).tolist() == expected
    assert len(set(expected)) > 1  # not a one-class coincidence
    targets = torch.tensor(expected)
    targets[0] = (targets[0] + 1) % 3
    assert int(THREE.correct(torch.from_numpy(logits), targets)) == 19


@pytest.mark.parametrize("space", [BINARY, THREE], ids=["two", "three"])
def test_probabilities_sum_to_one_and_agree_with_predictions(space):
    logits = _logits(64, space.num_outputs, seed=7).numpy()
    logits[0] = 500.0  # extreme logits must not overflow into NaN
    logits[1] = -500.0
    probs = space.probabilities(logits)
    assert probs.shape == (64, space.num_classes) and probs.dtype == np.float64
    assert np.isfinite(probs).all() and (probs >= 0).all()
    assert probs.sum(axis=1) == pytest.approx(np.ones(64), abs=1e-12)
    assert probs.argmax(axis=1)[2:].tolist() == space.predictions(logits)[2:].tolist()


def test_two_class_probability_is_the_sigmoid_of_the_logit():
    probs = BINARY.probabilities(np.array([0.0, np.log(3.0)]))
    assert probs == pytest.approx(np.array([[0.5, 0.5], [0.25, 0.75]]))


def test_k_class_probability_is_the_softmax():
    probs = THREE.probabilities(np.array([[0.0, np.log(2.0), np.log(5.0)]]))
    assert probs[0].tolist() == pytest.approx([1 / 8, 2 / 8, 5 / 8])


# ---------------------------------------------------------------- names to indices
def test_index_by_name_case_and_spacing_folded():
    assert THREE.index(["quality", "billing", "Delivery", " QUALITY "]).tolist() == [2, 0, 1, 2]


def test_two_class_index_accepts_the_usual_spellings():
    space = LabelSpace(IMDB_LABELS)
    values = ["1", "0", "pos", "neg", "Positive", "NEGATIVE", "true", "False", "positive", "negative"]
    assert space.index(values).tolist() == [1, 0, 1, 0, 1, 0, 1, 0, 1, 0]
    # the run's own names come first: a space whose names[1] is "neg" maps "neg" to 1, not to the spelling's 0
    odd = LabelSpace(("pos", "neg"))
    assert odd.index(["neg", "pos"]).tolist() == [1, 0]


def test_synonyms_apply_only_when_unambiguous_for_the_runs_own_names():
    # issue 23 #2: a run whose classes are "1" and "2" must not read 0/1 through the 0/1 spellings ([0, 0])
    stars = LabelSpace(("1", "2"))
    assert stars.index(["1", "2", "2.0"]).tolist() == [0, 1, 1]
    with pytest.raises(SentimentError, match="unknown label '0'"):
        stars.index(["0", "1"])
    # names that are not a negative/positive pair take no spellings: which of good/bad is "1" is not ours to guess
    with pytest.raises(SentimentError, match="unknown label '1'"):
        LabelSpace(("bad", "good")).index(["1"])
    # a 0/1 run reads pos/neg and true/false; a false/true run reads 0/1
    assert LabelSpace(("0", "1")).index(["pos", "neg", "TRUE", "1.0"]).tolist() == [1, 0, 1, 1]
    assert LabelSpace(("false", "true")).index(["1", "0"]).tolist() == [1, 0]


def test_one_normalisation_of_label_values():
    from sentiment.data.labels import merged_labels, normalize_label

    assert [normalize_label(v) for v in ["1.0", " 1 ", "+1", "01", "1e1", "-0.0", "2.5", " Positive ", "NaN"]] == \
        ["1", "1", "1", "1", "10", "0", "2.5", "positive", "nan"]
    assert merged_labels(["1", "1.0", "0", "pos"]) == {"1": ["1", "1.0"]}
    # a run trained with 1 and 1.0 as two classes (before labels were normalised) maps each as stored
    old = LabelSpace(("0", "0.0", "1", "1.0"))
    assert old.index(["1.0", "1", "0.0", "0"]).tolist() == [3, 2, 1, 0]


def test_k_class_index_does_not_take_binary_spellings():
    space = LabelSpace(("0", "1", "2"))
    assert space.index(["2", "0"]).tolist() == [2, 0]
    with pytest.raises(SentimentError) as info:
        space.index(["pos"])
    assert "unknown label 'pos'" in str(info.value) and "pos/neg" not in str(info.value)


def test_unknown_labels_are_one_error_naming_them_and_where_the_first_is():
    where = [f"data.csv: line {n}" for n in range(2, 8)]
    with pytest.raises(SentimentError) as info:
        THREE.index(["billing", "refunds", "quality", "refunds", "spam", "billing"], where)
    message = str(info.value)
    assert message.startswith("data.csv: line 3: unknown label 'refunds' (and 'spam')")
    assert "'billing', 'delivery', 'quality'" in message
    assert "\n" not in message
    with pytest.raises(SentimentError, match=r"^file.csv: unknown label 'maybe'.*pos/neg"):
        BINARY.index(["pos", "maybe"], source="file.csv")


# ---------------------------------------------------------------- building and storing
@pytest.mark.parametrize("names, needle", [(("only",), "at least two classes"), (("a", "b", "a"), "repeat")])
def test_a_space_needs_two_distinct_names(names, needle):
    with pytest.raises(SentimentError, match=needle):
        LabelSpace(names)


def test_save_and_load_round_trip(tmp_path):
    THREE.save(tmp_path / "labels.json")
    assert json.loads((tmp_path / "labels.json").read_text()) == {"labels": list(THREE.names)}
    assert LabelSpace.load(tmp_path / "labels.json") == THREE
    assert LabelSpace.load(tmp_path / "absent.json").names == IMDB_LABELS  # runs from before labels.json
    (tmp_path / "bad.json").write_text('{"labels": "neg"}')
    with pytest.raises(SentimentError, match="list of label names"):
        LabelSpace.load(tmp_path / "bad.json")


# ---------------------------------------------------------------- sort_labels
def test_sort_labels_numerically_when_every_label_is_an_integer():
    assert sort_labels(["10", "2", "1", "2", "-3"]) == ("-3", "1", "2", "10")  # not "1", "10", "2"


def test_sort_labels_alphabetically_otherwise():
    assert sort_labels(["10", "2", "x"]) == ("10", "2", "x")
    assert sort_labels(["quality", "billing", "delivery", "billing"]) == ("billing", "delivery", "quality")


@pytest.mark.parametrize("values", [["pos", "neg"], ["positive", "negative"], ["1", "0"], ["true", "false"]])
def test_sort_labels_puts_the_positive_class_second(values):
    assert sort_labels(values) == tuple(reversed(values))


@pytest.mark.parametrize("value", ["NaN", "nan", "NA", "N/A", "null", "None", "<NA>", " NaN "])
def test_a_missing_value_label_is_named_as_missing_not_unknown(value):
    with pytest.raises(SentimentError, match=rf"^data.csv: line 3: label {value!r} is a missing value"):
        BINARY.index(["pos", value], ["data.csv: line 2", "data.csv: line 3"])
    assert LabelSpace(("none", "some")).index(["None", "some"]).tolist() == [0, 1]  # a class of the run: kept
