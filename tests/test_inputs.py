"""The input pipeline: one scaling, epoch-seeded order, deterministic augmentation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from fmnist.training import inputs
from helpers import recipe_params

NONE = recipe_params("notebook").train.augment  # the notebook: no augmentation


def batches(ds) -> list[np.ndarray]:
    return [x.numpy() for x, _ in ds]


def test_preprocess_scales_and_adds_the_channel():
    pixels = np.array([[[0, 255] * 14] * 28], dtype=np.uint8)  # (1, 28, 28)
    out = inputs.preprocess(pixels).numpy()
    assert out.shape == (1, 28, 28, 1) and out.dtype == np.float32
    assert out[0, 0, 0, 0] == 0.0 and out[0, 0, 1, 0] == 1.0


def test_epoch_order_depends_only_on_seed_and_epoch(tiny_data):
    images, labels = tiny_data["test"]
    epoch = tf.Variable(0, dtype=tf.int64)
    ds = inputs.training_dataset(images, labels, 16, 42, epoch)
    first, again = batches(ds), batches(ds)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    seen = np.concatenate([y.numpy() for _, y in ds])
    assert sorted(seen) == sorted(labels)  # every example exactly once per epoch
    epoch.assign(1)
    assert not np.array_equal(batches(ds)[0], first[0])
    epoch.assign(0)
    fresh = inputs.training_dataset(images, labels, 16, 42, tf.Variable(0, dtype=tf.int64))
    assert np.array_equal(batches(fresh)[0], first[0])  # a new process would see the same


def test_unaugmented_batches_are_the_scaled_images(tiny_data):
    images, labels = tiny_data["test"]
    ds = inputs.training_dataset(images, labels, 100, 1, tf.Variable(0, dtype=tf.int64))
    x, y = next(iter(ds))
    originals = inputs.preprocess(images).numpy()
    for image, label in zip(x.numpy()[:5], y.numpy()[:5]):
        matches = np.flatnonzero((originals == image).all(axis=(1, 2, 3)))
        assert matches.size and labels[matches[0]] == label


def test_identity_augmentation_changes_nothing(tiny_data):
    x = inputs.preprocess(tiny_data["test"][0][:8])
    out = inputs.augment_batch(x, tf.constant([1, 2], tf.int64), NONE)
    assert np.allclose(out.numpy(), x.numpy(), atol=1e-6)


def test_flip_mirrors_some_images_and_keeps_the_rest(tiny_data):
    x = inputs.preprocess(tiny_data["test"][0][:32]).numpy()
    flip = dataclasses.replace(NONE, horizontal_flip=True)
    out = inputs.augment_batch(x, tf.constant([3, 4], tf.int64), flip)
    out = out.numpy()
    kept = [np.allclose(o, i, atol=1e-6) for o, i in zip(out, x)]
    mirrored = [np.allclose(o, i[:, ::-1], atol=1e-6) for o, i in zip(out, x)]
    assert all(k or m for k, m in zip(kept, mirrored))
    assert 4 < sum(mirrored) < 28


@pytest.mark.parametrize("horizontal", [False, True])
def test_vertical_flip_turns_some_images_upside_down(tiny_data, horizontal):
    x = inputs.preprocess(tiny_data["test"][0][:32]).numpy()
    flips = dataclasses.replace(NONE, horizontal_flip=horizontal, vertical_flip=True)
    out = inputs.augment_batch(x, tf.constant([3, 4], tf.int64), flips).numpy()
    views = {"kept": lambda i: i, "upside down": lambda i: i[::-1]}
    if horizontal:
        views |= {"mirrored": lambda i: i[:, ::-1], "both": lambda i: i[::-1, ::-1]}
    seen = [
        [name for name, view in views.items() if np.allclose(o, view(i), atol=1e-6)]
        for o, i in zip(out, x)
    ]
    assert all(seen), "every image is one of the flipped views"
    counts = {name: sum(name in s for s in seen) for name in views}
    assert 0 < counts["upside down"] < 32
    if horizontal:
        assert counts["both"] > 0  # the two flips are drawn independently


def test_shift_moves_content_by_whole_pixels_at_most_the_bound():
    image = np.zeros((1, 28, 28), np.uint8)
    image[0, 13, 13] = 255
    shift = dataclasses.replace(NONE, shift=2 / 28)
    for s in range(20):
        out = inputs.augment_batch(inputs.preprocess(image), tf.constant([s, 0], tf.int64), shift)
        ys, xs = np.nonzero(out.numpy()[0, :, :, 0] > 0.01)
        assert abs(ys.mean() - 13) <= 2.01 and abs(xs.mean() - 13) <= 2.01


def test_erasing_blanks_one_rectangle_no_larger_than_asked():
    ones = tf.ones((64, 28, 28, 1))
    p = dataclasses.replace(NONE, erase_prob=1.0, erase_size=6)
    out = inputs.augment_batch(ones, tf.constant([5, 6], tf.int64), p).numpy()[..., 0]
    for image in out:
        rows, cols = np.nonzero(image == 0)
        assert rows.size > 0
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert height <= 6 and width <= 6 and rows.size == height * width  # one solid rectangle


@pytest.mark.parametrize("field", ["rotation_deg", "shear", "zoom"])
def test_augmentation_is_a_pure_function_of_the_seed(tiny_data, field):
    x = inputs.preprocess(tiny_data["test"][0][:8])
    p = dataclasses.replace(NONE, **{field: 10 if field == "rotation_deg" else 0.2})
    a = inputs.augment_batch(x, tf.constant([7, 8], tf.int64), p).numpy()
    b = inputs.augment_batch(x, tf.constant([7, 8], tf.int64), p).numpy()
    c = inputs.augment_batch(x, tf.constant([7, 9], tf.int64), p).numpy()
    assert np.array_equal(a, b) and not np.array_equal(a, c) and not np.allclose(a, x.numpy())


def test_steps_per_epoch_counts_the_short_last_batch():
    assert inputs.steps_per_epoch(100, 32) == 4 and inputs.steps_per_epoch(96, 32) == 3


def test_pipelines_do_not_autotune_and_autotuning_would_not_change_the_batches(tiny_data):
    images, labels = tiny_data["test"]
    epoch = tf.Variable(0, dtype=tf.int64)
    fixed = inputs.training_dataset(images, labels, 16, 42, epoch, NONE)
    tuned = inputs.training_dataset(images, labels, 16, 42, epoch, NONE, autotune=True)
    assert fixed.options().autotune.enabled is False
    assert inputs.dataset(images, labels, 16).options().autotune.enabled is False
    assert tuned.options().autotune.enabled is True
    assert all(np.array_equal(a, b) for a, b in zip(batches(fixed), batches(tuned)))


def test_alternating_flips_show_each_image_both_ways_in_two_epochs(tiny_data):
    images, _ = tiny_data["test"]
    images = images[:40]
    index = np.arange(len(images))  # labels that name each image
    epoch = tf.Variable(0, dtype=tf.int64)
    p = dataclasses.replace(NONE, horizontal_flip=True, alternate_flips=True)
    originals = inputs.preprocess(images).numpy()

    def mirrored_in(ds: tf.data.Dataset, e: int) -> np.ndarray:
        epoch.assign(e)
        out = np.zeros(len(images), bool)
        for x, y in ds:
            for image, i in zip(x.numpy(), y.numpy()):
                mirrored = np.allclose(image, originals[i][:, ::-1], atol=1e-6)
                assert mirrored or np.allclose(image, originals[i], atol=1e-6)
                out[i] = mirrored
        return out

    ds = inputs.training_dataset(images, index, 16, 42, epoch, p)
    first, second, third = mirrored_in(ds, 0), mirrored_in(ds, 1), mirrored_in(ds, 2)
    assert 8 < first.sum() < 32  # a random half starts mirrored
    assert np.array_equal(second, ~first) and np.array_equal(third, first)
    # A coin toss per epoch would (almost surely) repeat some images' side.
    coin = dataclasses.replace(p, alternate_flips=False)
    ds = inputs.training_dataset(images, index, 16, 42, epoch, coin)
    assert not np.array_equal(mirrored_in(ds, 1), ~mirrored_in(ds, 0))
