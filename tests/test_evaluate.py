"""Evaluation metrics on arrays whose answers are known."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import helpers
from fmnist import figures
from fmnist.dataset import NUM_CLASSES
from fmnist.errors import ParamsError
from fmnist.stages import evaluate


def one_hot_probs(predicted: np.ndarray, confidence: float = 0.91) -> np.ndarray:
    probs = np.full((len(predicted), NUM_CLASSES), (1 - confidence) / (NUM_CLASSES - 1))
    probs[np.arange(len(predicted)), predicted] = confidence
    return probs


def test_loss_and_accuracy():
    labels = np.array([0, 1, 2, 3])
    probs = one_hot_probs(np.array([0, 1, 2, 4]))
    scores = evaluate.loss_and_accuracy(labels, probs)
    assert scores["accuracy"] == 0.75
    expected = -(3 * np.log(0.91) + np.log(0.01)) / 4
    assert scores["loss"] == pytest.approx(expected)


def test_confident_mistakes_cost_a_finite_loss():
    probs = np.zeros((1, NUM_CLASSES))
    probs[0, 1] = 1.0
    assert np.isfinite(evaluate.loss_and_accuracy(np.array([0]), probs)["loss"])


def test_macro_and_weighted_metrics():
    labels = np.array([0, 0, 0, 1])
    predicted = np.array([0, 0, 1, 1])
    m = evaluate.classification_metrics(labels, predicted)
    # Class 0: P=1, R=2/3; class 1: P=1/2, R=1; the other eight classes score 0.
    assert m["precision_macro"] == pytest.approx((1 + 0.5) / NUM_CLASSES)
    assert m["recall_weighted"] == pytest.approx(0.75 * (2 / 3) + 0.25 * 1)


def test_per_class_report_lists_every_class():
    labels = np.arange(NUM_CLASSES).repeat(2)
    report = evaluate.per_class_report(labels, labels)
    assert list(report.columns) == ["class", "precision", "recall", "f1", "support"]
    assert (
        len(report) == NUM_CLASSES
        and (report["f1"] == 1.0).all()
        and (report["support"] == 2).all()
    )


def test_figures_are_pngs():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (12, 28, 28), dtype=np.uint8)
    labels = np.arange(12) % NUM_CLASSES
    predicted = (labels + (np.arange(12) % 2)) % NUM_CLASSES
    log = pd.DataFrame(
        {
            "step": [0, 1],
            "train/loss": [1.0, 0.5],
            "val/loss": [1.1, 0.7],
            "train/accuracy": [0.6, 0.8],
            "val/accuracy": [0.5, 0.7],
        }
    )
    pngs = [
        figures.confusion_matrix(np.eye(NUM_CLASSES, dtype=int)),
        figures.training_curves(log),
        figures.misclassified(images, labels, predicted, rng.random(12), 5),
        figures.filters(rng.random((3, 3, 1, 32)), "conv1"),
        figures.sample_grid(images, labels, 2),
    ]
    assert all(p[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_training_curves_without_a_log_say_so_and_warn_nothing(monkeypatch):
    """A model trained outside the pipeline has no DVCLive history (an empty --live-dir)."""
    drawn = []
    monkeypatch.setattr(figures, "_png", lambda fig: drawn.append(fig) or b"")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "No artists with labels" before
        figures.training_curves(pd.DataFrame())
    texts = [[t.get_text() for t in ax.texts] for ax in drawn[0].axes]
    assert texts == [["no training log"], ["no training log"]]


def test_a_missing_training_log_directory_is_one_error_line(tmp_path, capsys):
    """A mistyped --live-dir stops the stage; it does not pass as "no training log"."""
    missing = tmp_path / "metrics" / "trian"
    argv = ["--params", str(helpers.ROOT / "params.yaml"), "--live-dir", str(missing)]
    argv += ["--model", str(tmp_path / "model.keras"), "--metrics", str(tmp_path / "eval.json")]
    assert evaluate.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: --live-dir {missing}: no such directory")
    assert "Traceback" not in err
    assert not (tmp_path / "eval.json").exists()


def test_the_training_sample_is_fixed_distinct_and_in_order():
    images = np.arange(50, dtype=np.uint8).repeat(4).reshape(50, 2, 2)
    labels = np.arange(50) % NUM_CLASSES
    picked_images, picked_labels = evaluate.sample((images, labels), 20)
    again, _ = evaluate.sample((images, labels), 20)
    firsts = picked_images[:, 0, 0]
    assert len(picked_labels) == 20 and np.array_equal(again, picked_images)
    assert len(set(firsts)) == 20 and np.all(np.diff(firsts) > 0)
    assert np.array_equal(picked_labels, labels[firsts])  # image and label stay paired
    assert not np.array_equal(firsts, np.arange(20))  # random, not the first 20
    for whole in (0, 50, 80):
        assert evaluate.sample((images, labels), whole)[0] is images


def test_the_worker_scores_every_split_and_draws_every_figure(tiny_data):
    """`evaluate.evaluate` takes arrays and params and returns values: no file is touched."""
    from fmnist.model import architectures
    from fmnist.params import EvaluateParams, ModelParams

    model = architectures.build(ModelParams(filters=(4, 6, 8), tta_flip=False, tta_shift=0))
    splits = {"train": tiny_data["train"], "val": tiny_data["train"], "test": tiny_data["test"]}
    log = pd.DataFrame(
        {"step": [0], "train/loss": [2.3], "val/loss": [2.3], "train/accuracy": [0.1]}
        | {"val/accuracy": [0.1]}
    )
    p = EvaluateParams(batch_size=64, misclassified=4, train_sample=50)
    result = evaluate.evaluate(model, splits, log, p)
    n_test = len(tiny_data["test"][1])
    assert result.scores["train"]["examples"] == 50
    assert result.scores["test"]["examples"] == n_test and "f1_macro" in result.scores["test"]
    assert len(result.per_class) == NUM_CLASSES and len(result.predictions) == n_test
    assert set(result.figures) == {
        "confusion_matrix.png",
        "training_curves.png",
        "misclassified.png",
        "filters.png",
        "feature_maps.png",
    }
    assert all(png[:8] == b"\x89PNG\r\n\x1a\n" for png in result.figures.values())
    with pytest.raises(ParamsError, match="evaluate.feature_map_image 999 is past"):
        evaluate.evaluate(model, splits, log, EvaluateParams(feature_map_image=999))
