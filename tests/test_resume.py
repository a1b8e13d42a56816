"""Resuming training in-process: an interrupted run continues to the uninterrupted run's model.

The slow test in test_reliability.py does the same with SIGKILL through `dvc repro`.
"""

from __future__ import annotations

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from fmnist.params import Params
from fmnist.stages import train
from fmnist.training import device, inputs, resume

EPOCHS = 4


@pytest.fixture(scope="module")
def params() -> Params:
    p = Params()
    t = p.train
    return dataclasses.replace(
        p,
        # Dropout on, and both schedules on, so that their state has to survive the interruption.
        model=dataclasses.replace(p.model, arch="dense", dense_units=16, dropout=0.5),
        train=dataclasses.replace(
            t,
            epochs=EPOCHS,
            batch_size=16,
            learning_rate=0.01,
            precision="float32",
            schedule="plateau",
            reduce_lr=dataclasses.replace(t.reduce_lr, patience=1),
            early_stopping=dataclasses.replace(t.early_stopping, patience=3),
        ),
    )


class Interrupt(keras.callbacks.Callback):
    """Stops the run as a kill would: after `epochs` complete epochs, before the next."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epochs:
            raise KeyboardInterrupt


def run(params, split, backup, live, extra=()):
    device.setup(params.train)  # seeds, as the stage does at start
    live.mkdir(exist_ok=True)
    checkpoint = resume.Checkpoint(backup, live, resume.load(backup))
    return train.train(params, split, split, list(extra), checkpoint=checkpoint)


@pytest.mark.slow
@pytest.mark.parametrize("augment", [False, True])
def test_an_interrupted_run_resumes_to_the_same_weights(params, tiny_data, tmp_path, augment):
    if augment:
        on = dataclasses.replace(params.train.augment, rotation_deg=15, shift=0.1, zoom=0.1)
        params = dataclasses.replace(params, train=dataclasses.replace(params.train, augment=on))
    split = tiny_data["test"]
    reference, epochs = run(params, split, tmp_path / "a", tmp_path / "live-a")
    assert epochs == EPOCHS

    with pytest.raises(KeyboardInterrupt):
        run(params, split, tmp_path / "b", tmp_path / "live-b", [Interrupt(2)])
    assert resume.load(tmp_path / "b").epochs_done == 2
    resumed, epochs = run(params, split, tmp_path / "b", tmp_path / "live-b")
    assert epochs == EPOCHS
    for a, b in zip(reference.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)
    lr = [
        float(keras.ops.convert_to_numpy(m.optimizer.learning_rate)) for m in (reference, resumed)
    ]
    assert lr[0] == lr[1]


@pytest.mark.slow
def test_a_run_that_had_already_stopped_trains_no_more(params, tiny_data, tmp_path):
    split = tiny_data["test"]
    with pytest.raises(KeyboardInterrupt):
        run(params, split, tmp_path / "b", tmp_path / "live", [Interrupt(2)])
    state = tmp_path / "b" / resume.STATE_FILE
    state.write_text(json.dumps({**json.loads(state.read_text()), "stopped": True}))
    _, epochs = run(params, split, tmp_path / "b", tmp_path / "live", [Interrupt(2)])
    assert epochs == 2


def test_epoch_k_has_the_same_batches_whatever_ran_before(tiny_data):
    # A resumed process publishes epoch k first; it must see what an uninterrupted run saw.
    images, labels = tiny_data["test"]
    uninterrupted = tf.Variable(0, dtype=tf.int64)
    full = inputs.training_dataset(images, labels, 16, 3, uninterrupted)
    seen = []
    for epoch in range(3):
        uninterrupted.assign(epoch)
        seen.append([y.numpy() for _, y in full])
    resumed = tf.Variable(2, dtype=tf.int64)
    late = inputs.training_dataset(images, labels, 16, 3, resumed)
    assert all(np.array_equal(a, y.numpy()) for a, (_, y) in zip(seen[2], late))
    assert not all(np.array_equal(a, b) for a, b in zip(seen[0], seen[2]))


def test_fingerprint_changes_with_params_and_data(tmp_path):
    data = tmp_path / "train.npz"
    data.write_bytes(b"one")
    base = resume.fingerprint(Params(), [data])
    assert resume.fingerprint(Params(), [data]) == base
    other = dataclasses.replace(Params(), train=dataclasses.replace(Params().train, seed=1))
    assert resume.fingerprint(other, [data]) != base
    data.write_bytes(b"two")
    assert resume.fingerprint(Params(), [data]) != base
