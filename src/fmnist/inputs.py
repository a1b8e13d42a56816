"""The input pipeline: uint8 arrays in, scaled (and, for training, augmented) batches out.

`preprocess` is the one definition of the model's input scaling, shared by training,
evaluation, packaging and `predict`, so that they cannot drift apart.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from fmnist.dataset import IMAGE_SHAPE
from fmnist.params import AugmentParams


def preprocess(images: tf.Tensor | np.ndarray) -> tf.Tensor:
    """uint8 pixels (B, 28, 28) or (B, 28, 28, 1) -> float32 in [0, 1], (B, 28, 28, 1)."""
    images = tf.convert_to_tensor(images)
    images = tf.reshape(images, (-1, *IMAGE_SHAPE))
    return tf.cast(images, tf.float32) / 255.0


def augmenter(p: AugmentParams, seed: int) -> keras.Sequential | None:
    """The random transforms `p` turns on, as one Keras model; None when none are on."""
    transforms = []
    if p.rotation_deg:
        transforms.append(
            layers.RandomRotation(p.rotation_deg / 360.0, fill_mode=p.fill_mode, seed=seed)
        )
    if p.shift:
        transforms.append(
            layers.RandomTranslation(p.shift, p.shift, fill_mode=p.fill_mode, seed=seed + 1)
        )
    if p.shear:
        transforms.append(
            layers.RandomShear(
                x_factor=p.shear, y_factor=p.shear, fill_mode=p.fill_mode, seed=seed + 2
            )
        )
    if p.zoom:
        transforms.append(layers.RandomZoom(p.zoom, fill_mode=p.fill_mode, seed=seed + 3))
    if p.horizontal_flip:
        transforms.append(layers.RandomFlip("horizontal", seed=seed + 4))
    if not transforms:
        return None
    return keras.Sequential([keras.Input(shape=IMAGE_SHAPE), *transforms], name="augment")


def _augmented(ds: tf.data.Dataset, augment: keras.Sequential | None) -> tf.data.Dataset:
    if augment is None:
        return ds
    return ds.map(
        lambda x, y: (augment(x, training=True), y),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    augment: keras.Sequential | None = None,
) -> tf.data.Dataset:
    """Batches of (scaled images (B, 28, 28, 1), labels (B,)); shuffled when a seed is given."""
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle_seed is not None:
        # A full-size buffer: a true shuffle of 54k small images costs ~42 MB.
        ds = ds.shuffle(len(images), seed=shuffle_seed, reshuffle_each_iteration=True)
    # Scaling whole batches is far cheaper than one image at a time.
    ds = ds.batch(batch_size).map(
        lambda x, y: (preprocess(x), y), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    ds = _augmented(ds, augment)
    return ds.prefetch(tf.data.AUTOTUNE)


def epoch_order(n: int, seed: int, epoch: tf.Tensor | int) -> tf.Tensor:
    """The order of `n` training examples in `epoch`, (n,) int64: a function of (seed, epoch).

    Nothing else feeds it (unlike `Dataset.shuffle`, whose orders depend on how many times this
    process has iterated), so a run resumed at epoch k sees the orders an uninterrupted run saw.
    """
    key = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=key)


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed for `epoch`'s random transforms, a function of (seed, epoch) only."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] % 2**30)


def training_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    seed: int,
    epochs: range,
    augment: AugmentParams | None = None,
) -> tuple[tf.data.Dataset, int]:
    """All the training batches of `epochs`, one epoch after another, and the steps per epoch.

    Fit it with `steps_per_epoch`: Keras then reads one stream across epochs. Each epoch has
    its own order (`epoch_order`) and its own augmenter seeded by `epoch_seed`, so the batches
    of epoch k are the same whichever epoch the run started at: a resumed run trains on what an
    uninterrupted one would have.
    """
    images_t, labels_t = tf.constant(images), tf.constant(labels)
    steps = -(-len(images) // batch_size)

    def one_epoch(epoch: int) -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices(epoch_order(len(images), seed, epoch))
        ds = ds.batch(batch_size).map(
            lambda idx: (preprocess(tf.gather(images_t, idx)), tf.gather(labels_t, idx)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        if augment is not None and augment.enabled:
            ds = _augmented(ds, augmenter(augment, epoch_seed(seed, epoch)))
        return ds

    if not epochs:  # nothing left to train: an empty stream of the same kind
        return one_epoch(0).take(0), steps
    stream = functools.reduce(tf.data.Dataset.concatenate, map(one_epoch, epochs))
    return stream.prefetch(tf.data.AUTOTUNE), steps
