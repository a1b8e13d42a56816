"""The input pipeline: uint8 arrays in, scaled (and, for training, augmented) batches out.

`preprocess` is the one definition of the model's input scaling, shared by training,
evaluation, packaging and `predict`, so that they cannot drift apart.

Training batches depend only on (seed, epoch, batch index): the epoch's order and every random
transform come from stateless random ops keyed by those numbers, and the epoch number reaches
the pipeline through `EpochCounter`. So a run resumed at epoch k sees exactly the batches an
uninterrupted run would, and parallel batch preparation cannot change the result.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from fmnist.dataset import IMAGE_SHAPE, IMAGE_SIZE
from fmnist.params import AugmentParams

# Batches prepared ahead of the model, and in parallel: fixed, not tuned by tf.data. With
# tf.data's autotuning on (TensorFlow's default), destroying an iterator waits for the tuning
# thread's next wake-up, whose period doubles from 10 ms up to a minute, and Keras makes a new
# iterator every epoch, for training and for validation, so epochs would sit idle
# (benchmarks/throughput.py compares the two; docs/measurements.md has the figures).
PARALLEL_BATCHES = 2


def _pipelined(ds: tf.data.Dataset, fn, autotune: bool) -> tf.data.Dataset:
    """`ds.map(fn)` in parallel and prefetched: fixed depth, or TensorFlow's autotuning."""
    depth = tf.data.AUTOTUNE if autotune else PARALLEL_BATCHES
    ds = ds.map(fn, num_parallel_calls=depth, deterministic=True).prefetch(depth)
    options = tf.data.Options()
    options.autotune.enabled = autotune
    return ds.with_options(options)


def preprocess(images: tf.Tensor | np.ndarray) -> tf.Tensor:
    """uint8 pixels (B, 28, 28) or (B, 28, 28, 1) -> float32 in [0, 1], (B, 28, 28, 1)."""
    images = tf.convert_to_tensor(images)
    images = tf.reshape(images, (-1, *IMAGE_SHAPE))
    return tf.cast(images, tf.float32) / 255.0


class EpochCounter(keras.callbacks.Callback):
    """Publishes the current epoch to the training pipeline (also after a resume)."""

    def __init__(self):
        super().__init__()
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="input_epoch")

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch.assign(epoch)


def _uniform(seed: tf.Tensor, salt: int, batch: tf.Tensor, bound: float) -> tf.Tensor:
    """(B,) floats in [-bound, bound], a pure function of (seed, salt)."""
    return tf.random.stateless_uniform([batch], seed=seed + [0, salt], minval=-bound, maxval=bound)


def augment_batch(
    images: tf.Tensor, seed: tf.Tensor, p: AugmentParams, mirror: tf.Tensor | None = None
) -> tf.Tensor:
    """Random flips, rotation, shear, zoom and shift as one affine warp, then random erasing.

    images: (B, 28, 28, 1) float32; seed: (2,) int64. Same seed, same output. `mirror`: (B,)
    bools that decide the horizontal flips instead of a coin toss (`alternate_flips`).
    """
    batch = tf.shape(images)[0]
    ones, zeros = tf.ones([batch]), tf.zeros([batch])
    angle = _uniform(seed, 1, batch, math.radians(p.rotation_deg))
    shear = _uniform(seed, 2, batch, p.shear)
    zoom = 1.0 + _uniform(seed, 3, batch, p.zoom)
    shift = p.shift * IMAGE_SIZE
    dx, dy = _uniform(seed, 4, batch, shift), _uniform(seed, 5, batch, shift)
    if not p.horizontal_flip:
        flip = ones
    elif mirror is not None:
        flip = tf.where(mirror, -ones, ones)
    else:
        flip = tf.where(_uniform(seed, 6, batch, 1.0) < 0, -ones, ones)
    # The transform maps each output pixel back to the input pixel it samples:
    # input = M (output - centre) + centre - shift, with M = rotate · shear · (1/zoom) · flips.
    cos, sin = tf.cos(angle), tf.sin(angle)
    m00 = (cos - sin * shear) * flip / zoom
    m01 = sin / zoom
    m10 = (sin + cos * shear) * flip / zoom
    m11 = cos / zoom
    if p.vertical_flip:
        flip_y = tf.where(_uniform(seed, 12, batch, 1.0) < 0, -ones, ones)
        m01, m11 = m01 * flip_y, m11 * flip_y
    centre = (IMAGE_SIZE - 1) / 2.0
    a2 = centre - m00 * centre - m01 * centre - dx
    b2 = centre - m10 * centre - m11 * centre - dy
    transforms = tf.stack([m00, m01, a2, m10, m11, b2, zeros, zeros], axis=1)
    images = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=[IMAGE_SIZE, IMAGE_SIZE],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode=p.fill_mode.upper(),
    )
    if p.erase_prob:
        images = _erase(images, seed, p.erase_prob, p.erase_size)
    return images


def _erase(images: tf.Tensor, seed: tf.Tensor, prob: float, size: int) -> tf.Tensor:
    """Zero one random rectangle (sides 1..`size`) in each image with probability `prob`."""
    batch = tf.shape(images)[0]

    def ints(salt: int, high: tf.Tensor | int) -> tf.Tensor:
        draw = tf.random.stateless_uniform([batch], seed=seed + [0, salt])
        return tf.cast(draw * tf.cast(high, tf.float32), tf.int32)

    height, width = 1 + ints(7, size), 1 + ints(8, size)
    top, left = ints(9, IMAGE_SIZE - height + 1), ints(10, IMAGE_SIZE - width + 1)
    chosen = tf.random.stateless_uniform([batch], seed=seed + [0, 11]) < prob
    grid = tf.range(IMAGE_SIZE)[None, :]  # (1, 28)
    rows = (grid >= top[:, None]) & (grid < (top + height)[:, None])  # (B, 28)
    cols = (grid >= left[:, None]) & (grid < (left + width)[:, None])  # (B, 28)
    hole = rows[:, :, None] & cols[:, None, :] & chosen[:, None, None]  # (B, 28, 28)
    return tf.where(hole[..., None], 0.0, images)


def steps_per_epoch(examples: int, batch_size: int) -> int:
    """Batches in one epoch (the last one may be short)."""
    return -(-examples // batch_size)


def training_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    seed: int,
    epoch: tf.Variable,
    augment: AugmentParams | None = None,
    autotune: bool = False,
) -> tf.data.Dataset:
    """One epoch of shuffled (and augmented) batches; `epoch` picks which epoch it is.

    `autotune`: tf.data's autotuning instead of the fixed depth (for benchmarks).
    """
    x, y = tf.constant(images), tf.constant(labels)
    n = len(labels)
    base = tf.constant([seed, 0], tf.int64)
    mirrored_first = None
    if augment is not None and augment.horizontal_flip and augment.alternate_flips:
        # Alternating flips (airbench): a random half of the images starts mirrored and every
        # image changes side each epoch, so any two epochs in a row show each image both ways.
        mirrored_first = tf.random.stateless_uniform([n], seed=[seed + 2, 0]) < 0.5

    def epoch_order(_):
        e = epoch.read_value()
        order = tf.argsort(tf.random.stateless_uniform([n], seed=base + [0, e]))
        return (
            tf.data.Dataset.from_tensor_slices(order)
            .batch(batch_size)
            .enumerate()
            .map(lambda i, idx: (e, i, idx))
        )

    def make_batch(e, i, idx):
        batch = preprocess(tf.gather(x, idx))
        if augment is not None:
            # Seeds differ per batch and per epoch, never repeat across (e, i).
            mirror = None
            if mirrored_first is not None:
                mirror = tf.not_equal(tf.gather(mirrored_first, idx), e % 2 == 1)
            batch_seed = tf.stack([base[0] + 1, e * 1_000_003 + i])
            batch = augment_batch(batch, batch_seed, augment, mirror)
        return batch, tf.gather(y, idx)

    ds = tf.data.Dataset.range(1).flat_map(epoch_order)
    # flat_map hides the length; Keras needs it for its progress bar and epoch bookkeeping.
    ds = ds.apply(tf.data.experimental.assert_cardinality(steps_per_epoch(n, batch_size)))
    return _pipelined(ds, make_batch, autotune)


def dataset(images: np.ndarray, labels: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Batches of (scaled images (B, 28, 28, 1), labels (B,)) in order, for evaluation."""
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
    # Scaling whole batches is far cheaper than one image at a time.
    return _pipelined(ds, lambda x, y: (preprocess(x), y), autotune=False)
