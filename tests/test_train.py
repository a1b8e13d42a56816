"""Optimiser and schedule choices of the train stage."""

from __future__ import annotations

import dataclasses

import keras
import pytest

from fmnist import models, train
from fmnist.errors import ParamsError
from fmnist.params import EarlyStoppingParams, ModelParams, ReduceLRParams, TrainParams
from helpers import recipe_params

NOTEBOOK = recipe_params("notebook").train  # plateau schedule, early stopping, Adam


def cosine(**kwargs) -> TrainParams:
    base = dict(
        schedule="cosine",
        epochs=10,
        learning_rate=0.01,
        warmup_epochs=0,
        reduce_lr=ReduceLRParams(patience=0),
    )
    return TrainParams(**(base | kwargs))


def test_plateau_schedule_is_a_constant_rate():
    assert train.learning_rate(dataclasses.replace(NOTEBOOK, learning_rate=0.002), 100) == 0.002


def test_cosine_schedule_warms_up_then_decays_to_zero():
    schedule = train.learning_rate(cosine(warmup_epochs=2), 100)
    rate = lambda step: float(schedule(step))  # noqa: E731
    assert rate(0) == pytest.approx(0.0001)
    assert rate(200) == pytest.approx(0.01)
    assert rate(500) < rate(300) < 0.01
    assert rate(1000) == pytest.approx(0.0, abs=1e-6)


def test_cosine_without_warmup_starts_at_the_peak():
    schedule = train.learning_rate(cosine(), 10)
    assert float(schedule(0)) == pytest.approx(0.01)


def test_cosine_and_plateau_cuts_cannot_be_combined():
    with pytest.raises(ParamsError, match="set train.reduce_lr.patience to 0"):
        dataclasses.replace(cosine(), reduce_lr=ReduceLRParams(patience=3))


def test_warmup_leaves_at_least_one_epoch_to_decay():
    """`-S train.epochs=1` on the default params (one warm-up epoch) still runs: it decays."""
    short = cosine(epochs=1, warmup_epochs=1)
    assert short.warmup == 0
    schedule = train.learning_rate(short, 10)
    assert float(schedule(0)) == pytest.approx(0.01) and float(schedule(10)) == pytest.approx(0)
    assert cosine(epochs=10, warmup_epochs=3).warmup == 3


def test_weight_decay_selects_adamw():
    model = models.build(ModelParams())
    train.compile_model(model, TrainParams(weight_decay=0.01), 10)
    assert isinstance(model.optimizer, keras.optimizers.AdamW)
    train.compile_model(model, TrainParams(weight_decay=0.0), 10)
    assert type(model.optimizer) is keras.optimizers.Adam


def test_schedule_callbacks_follow_params():
    kinds = [type(c).__name__ for c in train.schedule_callbacks(NOTEBOOK)]
    assert kinds == ["EarlyStopping", "ReduceLROnPlateau"]
    # A cosine schedule sets the rate itself: early stopping at most.
    stopping = cosine(early_stopping=EarlyStoppingParams(patience=10))
    assert [type(c).__name__ for c in train.schedule_callbacks(stopping)] == ["EarlyStopping"]
    assert train.schedule_callbacks(TrainParams()) == []  # the default: all its epochs
