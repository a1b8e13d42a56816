"""Test-time augmentation: the shipped model averages its probabilities over fixed views.

Built from Keras' own layers and ops only, so that plain Keras loads the saved model in safe
mode. The views of a batch go through the network as one batch (V·B images in one call, not V
calls of B): the same arithmetic, and one call's overhead instead of V at batch 1.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from fmnist.dataset import IMAGE_SHAPE, NUM_CLASSES
from fmnist.params import ModelParams


def mirror(images: keras.KerasTensor) -> keras.KerasTensor:
    """`images` (B, H, W, 1) flipped left to right, in built-in layers only (so that plain
    Keras, in safe mode, loads the model without this project's code): a fixed, non-trainable
    reversal matrix applied along the width. Exact: each output pixel is one input pixel."""
    height, width, _ = IMAGE_SHAPE
    rows = layers.Reshape((height, width), name="mirror_rows")(images)  # (B, H, W)
    reverse = layers.Dense(width, use_bias=False, trainable=False, name="mirror")
    flipped = reverse(rows)
    reverse.set_weights([np.eye(width, dtype="float32")[::-1]])
    return layers.Reshape(IMAGE_SHAPE, name="mirror_image")(flipped)


def shift(images: keras.KerasTensor, dx: int, dy: int, name: str) -> keras.KerasTensor:
    """`images` moved `dx` pixels right and `dy` down (negative: left, up), zeros shifted in:
    zero-padding on one side, cropping the other. Built-in layers, no weights, exact."""
    pad = ((max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0)))
    crop = ((max(-dy, 0), max(dy, 0)), (max(-dx, 0), max(dx, 0)))
    padded = layers.ZeroPadding2D(pad, name=f"{name}_pad")(images)
    return layers.Cropping2D(crop, name=f"{name}_crop")(padded)


def test_time_views(images: keras.KerasTensor, p: ModelParams) -> list[keras.KerasTensor]:
    """The views that the saved model averages over: the image; its mirror if `p.tta_flip`;
    each of those moved `p.tta_shift` pixels right, left, down and up if `p.tta_shift`."""
    originals = [("", images)] + ([("mirror_", mirror(images))] if p.tta_flip else [])
    s = p.tta_shift
    moves = {"right": (s, 0), "left": (-s, 0), "down": (0, s), "up": (0, -s)} if s else {}
    views = []
    for prefix, view in originals:
        views.append(view)
        views += [shift(view, dx, dy, f"{prefix}shift_{way}") for way, (dx, dy) in moves.items()]
    return views


def stack_views(images: keras.KerasTensor, p: ModelParams) -> tuple[keras.KerasTensor, int]:
    """(every view of `images` (B, 28, 28, 1) stacked on the batch axis (V·B, 28, 28, 1), V):
    view v of image b is row v·B + b. With one view, `images` itself."""
    views = test_time_views(images, p)
    if len(views) == 1:
        return images, 1
    return layers.Concatenate(axis=0, name="tta_views")(views), len(views)


def average_views(outputs: keras.KerasTensor, count: int) -> keras.KerasTensor:
    """The mean over the `count` views of per-view outputs stacked by `stack_views`:
    (V·B, K) -> (B, K)."""
    if count == 1:
        return outputs
    return ops.mean(ops.reshape(outputs, (count, -1, outputs.shape[-1])), axis=0)


def first_view(outputs: keras.KerasTensor, count: int) -> keras.KerasTensor:
    """The outputs of the image itself (view 0) among those stacked by `stack_views`."""
    if count == 1:
        return outputs
    return ops.reshape(outputs, (count, -1, outputs.shape[-1]))[0]


def with_test_time_augmentation(network: keras.Model, p: ModelParams) -> keras.Model:
    """`network` made to average its probabilities over `test_time_views`.

    The same weights on every view: no trainable parameters added (the mirror's fixed 28x28
    matrix is not trained), and as many times the inference work as there are views (2 for
    the mirror, 5 for the shifts, 10 for both). Training mirrors and shifts garments too.
    """
    images = keras.Input(shape=IMAGE_SHAPE, name="images")
    stacked, count = stack_views(images, p)  # (V·B, 28, 28, 1)
    probs = network(stacked)  # (V·B, 10)
    probs = average_views(probs, count)  # (B, 10)
    probs = layers.Reshape((NUM_CLASSES,), name="tta_average")(probs)
    return keras.Model(images, probs, name=f"{network.name}_tta")


def network(model: keras.Model) -> keras.Model:
    """The trained network itself: `model`, or the one inside a mirror-averaging wrapper."""
    inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return inner[0] if len(inner) == 1 else model
