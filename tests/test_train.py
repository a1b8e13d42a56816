"""Optimiser and schedule choices of the train stage."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from fmnist.errors import ParamsError
from fmnist.model import architectures, saving
from fmnist.params import EarlyStoppingParams, ModelParams, ReduceLRParams, TrainParams
from fmnist.stages import train
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


def test_label_smoothing_is_kerass_smoothed_cross_entropy_on_integer_labels():
    labels = np.array([0, 3, 9, 1, 3])
    probs = np.random.default_rng(0).dirichlet(np.ones(10), len(labels)).astype("float32")
    one_hot = np.eye(10, dtype="float32")[labels]
    for smoothing in (0.1, 0.3):
        ours = train.SmoothedSparseCrossentropy(smoothing)
        keras_loss = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)
        assert float(ours(labels, probs)) == pytest.approx(float(keras_loss(one_hot, probs)))
        assert float(ours(labels[:, None], probs)) == pytest.approx(float(ours(labels, probs)))
    plain = keras.losses.SparseCategoricalCrossentropy()(labels, probs)
    assert float(train.SmoothedSparseCrossentropy(0.1)(labels, probs)) != pytest.approx(
        float(plain)
    )
    # Off: exactly the seeds' loss.
    assert train.loss(TrainParams(label_smoothing=0.0)) == "sparse_categorical_crossentropy"
    smoothed = train.loss(TrainParams(label_smoothing=0.1))
    assert isinstance(smoothed, train.SmoothedSparseCrossentropy) and smoothed.smoothing == 0.1


@pytest.mark.slow  # trains
def test_a_model_trained_with_label_smoothing_ships_without_this_projects_code(tmp_path):
    """The shipped file holds no trace of training (loss, optimizer), so plain Keras loads it,
    even with `compile=True`, in a process that never imported this project."""
    keras.utils.set_random_seed(0)
    for tta in (False, True):
        p = ModelParams(arch="bn_gap_cnn", filters=(4, 6, 8), tta_flip=tta, tta_shift=int(tta))
        net = architectures.build(p)
        train.compile_model(net, TrainParams(label_smoothing=0.1, epochs=2), 1)
        x = np.random.default_rng(1).random((8, 28, 28, 1), dtype=np.float32)
        net.fit(x, np.arange(8) % 10, epochs=1, verbose=0)
        path = tmp_path / f"tta-{tta}.keras"
        saving.save_model(saving.for_inference(net, p), path)
        np.save(tmp_path / "x.npy", x)
        expected = saving.for_inference(net, p).predict(x, verbose=0)
        np.save(tmp_path / "expected.npy", expected)
        script = (
            "import sys, keras, numpy as np\n"
            f"m = keras.saving.load_model({str(path)!r}, safe_mode=True)\n"
            f"x, expected = np.load({str(tmp_path / 'x.npy')!r}), "
            f"np.load({str(tmp_path / 'expected.npy')!r})\n"
            "assert np.allclose(m.predict(x, verbose=0), expected, atol=1e-6)\n"
            "assert not any(name.startswith('fmnist') for name in sys.modules)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]


def test_weight_decay_selects_adamw():
    model = architectures.build(ModelParams())
    train.compile_model(model, TrainParams(weight_decay=0.01), 10)
    assert isinstance(model.optimizer, keras.optimizers.AdamW)
    train.compile_model(model, TrainParams(weight_decay=0.0), 10)
    assert type(model.optimizer) is keras.optimizers.Adam


@pytest.mark.parametrize("decay_all", [True, False])
def test_weight_decay_can_spare_batchnorm_and_biases(decay_all):
    model = architectures.build(ModelParams())
    p = TrainParams(weight_decay=0.1, learning_rate=0.5, decay_norms_and_biases=decay_all)
    train.compile_model(model, p, 10)
    weights = model.trainable_variables
    for v in weights:  # non-zero everywhere, so that decay shows (offsets and biases start at 0)
        v.assign(keras.ops.ones_like(v))
    # Zero gradients: Adam's step is zero, so any change is the decay's.
    model.optimizer.apply_gradients([(keras.ops.zeros_like(v), v) for v in weights])
    decayed = {name: [] for name in ("kernel", "gamma", "beta", "bias")}
    for v in weights:
        decayed[v.name].append(bool(np.all(np.array(v) < 1)))
    assert all(decayed.values()), "the network has each kind of variable"
    assert all(decayed["kernel"])
    for name in ("gamma", "beta", "bias"):
        assert decayed[name] == [decay_all] * len(decayed[name]), name


def test_schedule_callbacks_follow_params():
    kinds = [type(c).__name__ for c in train.schedule_callbacks(NOTEBOOK)]
    assert kinds == ["EarlyStopping", "ReduceLROnPlateau"]
    # A cosine schedule sets the rate itself: early stopping at most.
    stopping = cosine(early_stopping=EarlyStoppingParams(patience=10))
    assert [type(c).__name__ for c in train.schedule_callbacks(stopping)] == ["EarlyStopping"]
    assert train.schedule_callbacks(TrainParams()) == []  # the default: all its epochs


@pytest.mark.slow  # trains
def test_several_steps_per_call_train_the_same_weights_as_one():
    """`compile_model`'s steps per execution change speed only: same steps, same weights."""
    rng = np.random.default_rng(0)
    x = rng.random((300, 28, 28, 1), dtype=np.float32)  # 10 steps of 32 (the last one short)
    y = rng.integers(0, 10, 300)
    p = cosine(epochs=2, batch_size=32)
    assert train.STEPS_PER_EXECUTION > 1
    trained = {}
    for steps_per_execution in (1, train.STEPS_PER_EXECUTION):
        keras.utils.set_random_seed(0)
        model = architectures.build(ModelParams(filters=(4, 6, 8)))
        train.compile_model(model, p, steps_per_epoch=10)
        assert model.steps_per_execution == train.STEPS_PER_EXECUTION
        model.steps_per_execution = steps_per_execution
        model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
        assert int(model.optimizer.iterations.numpy()) == 20
        trained[steps_per_execution] = model.get_weights()
    one, several = trained.values()
    assert all(np.array_equal(a, b) for a, b in zip(one, several))


def test_under_a_distribution_strategy_training_takes_one_step_per_call():
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        model = architectures.build(ModelParams(filters=(4, 6, 8)))
        train.compile_model(model, cosine(), steps_per_epoch=10)
    assert model.steps_per_execution == 1
