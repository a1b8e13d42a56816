"""The architectures, selected by `model.arch`, exactly as the seed documents define them.

Every model takes float32 images scaled to [0, 1], shape (B, 28, 28, 1), and returns class
probabilities (B, 10). The last layer always computes in float32 so that mixed precision never
changes what the model outputs, and the model that ships computes in float32 throughout (mixed
precision is a way to train faster, not part of the model).
"""

from __future__ import annotations

import contextlib
import io
import json
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from fmnist import atomic
from fmnist.dataset import IMAGE_SHAPE, NUM_CLASSES
from fmnist.errors import PipelineError
from fmnist.params import ModelParams


def _classifier(name: str = "output") -> layers.Layer:
    return layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32", name=name)


@keras.saving.register_keras_serializable(package="fmnist")
class FusedBatchNormalization(layers.BatchNormalization):
    """Keras' BatchNormalization that trains with TensorFlow's fused batch-norm kernel.

    Keras 3 computes batch statistics and their gradients as a dozen separate float32 ops; on a
    2-core CPU they took at least 40% of the op time of a training step of the earlier default
    (filters 16-40-72) in bfloat16, by TensorFlow's profiler (`benchmarks/op_profile.py`). The fused
    kernel (oneDNN's, which also absorbs a ReLU that follows) does the same arithmetic in one op
    each way: the same outputs and moving statistics up to rounding (a test compares them). It
    is fast in bfloat16 only when the channels are a multiple of 16 (the README has the
    figures). Where the kernel does not apply (not training, a mask, synchronized statistics
    across replicas, renormalization, or not 4-D channels-last) this is Keras' layer as it is.
    The model that ships uses Keras' own layer (`for_inference`), with the same weights.
    """

    def _fusable(self, inputs, training, mask) -> bool:
        return bool(
            training
            and self.trainable
            and mask is None
            and not self.synchronized
            and not self.renorm
            and len(inputs.shape) == 4
            and list(self._reduction_axes) == [0, 1, 2]
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        gamma = tf.cast(self.gamma, "float32") if self.scale else tf.ones([channels])
        beta = tf.cast(self.beta, "float32") if self.center else tf.zeros([channels])
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, gamma, beta, epsilon=self.epsilon, is_training=True
        )
        # The kernel returns the unbiased variance (n - 1 in the denominator); Keras keeps
        # the biased one, which the kernel normalises with.
        n = tf.cast(tf.size(inputs) // channels, "float32")
        variance = variance * (n - 1.0) / n
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
        return tf.cast(outputs, self.compute_dtype)


def gap_cnn(p: ModelParams) -> keras.Model:
    """The seed notebook's CNN: Conv 32-64-128, MaxPool after the first two, GAP (93,962 params)."""
    f1, f2, f3 = p.filters
    conv = dict(kernel_size=p.kernel_size, strides=1, padding=p.padding, activation="relu")
    return keras.Sequential(
        [
            keras.Input(shape=IMAGE_SHAPE),
            layers.Conv2D(f1, name="conv1", **conv),  # (B, 28, 28, 32)
            layers.MaxPooling2D(2, name="pool1"),  # (B, 14, 14, 32)
            layers.Conv2D(f2, name="conv2", **conv),  # (B, 14, 14, 64)
            layers.MaxPooling2D(2, name="pool2"),  # (B, 7, 7, 64)
            layers.Conv2D(f3, name="conv3", **conv),  # (B, 7, 7, 128)
            # GAP instead of Flatten: 128 features instead of 6,272, a structural regulariser.
            layers.GlobalAveragePooling2D(name="global_avg_pool"),  # (B, 128)
            layers.Dropout(p.dropout, name="dropout"),
            _classifier(),
        ],
        name="gap_cnn",
    )


def bn_cnn(p: ModelParams) -> keras.Model:
    """The write-up's CNN: 3 × (Conv → BatchNorm → MaxPool → Dropout), Dense 128 → BN → Dropout."""
    blocks = []
    for i, filters in enumerate(p.filters, start=1):
        blocks += [
            layers.Conv2D(
                filters, p.kernel_size, padding=p.padding, activation="relu", name=f"conv{i}"
            ),
            FusedBatchNormalization(name=f"bn{i}"),
            layers.MaxPooling2D(2, name=f"pool{i}"),  # 28 -> 14 -> 7 -> 3 with 'same'
            layers.Dropout(p.conv_dropout, name=f"dropout{i}"),
        ]
    return keras.Sequential(
        [
            keras.Input(shape=IMAGE_SHAPE),
            *blocks,
            layers.Flatten(name="flatten"),  # (B, 3 * 3 * 128) with 'same'
            layers.Dense(p.dense_units, activation="relu", name="dense"),
            layers.BatchNormalization(name="bn_dense"),
            layers.Dropout(p.dropout, name="dropout"),
            _classifier(),
        ],
        name="bn_cnn",
    )


def dense(p: ModelParams) -> keras.Model:
    """The notebook's dense baseline: Flatten → Dense 128 → Dense 10 (101,770 params)."""
    return keras.Sequential(
        [
            keras.Input(shape=IMAGE_SHAPE),
            layers.Flatten(name="flatten"),  # (B, 784)
            layers.Dense(p.dense_units, activation="relu", name="dense"),
            layers.Dropout(p.dropout, name="dropout"),
            _classifier(),
        ],
        name="dense",
    )


def bn_gap_cnn(p: ModelParams) -> keras.Model:
    """The notebook's design made deeper for the same budget: BatchNorm, several 3×3
    convolutions per stage, MaxPool after the first two stages, GAP head.

    Depth at low cost: with filters (16, 48, 64) and two convolutions per stage it has
    ~96k parameters and about 1.4× the notebook CNN's multiply-adds.
    """
    body = []
    for stage, filters in enumerate(p.filters, start=1):
        for j in range(1, p.convs_per_stage + 1):
            body += [
                # No bias: the BatchNorm that follows has its own shift.
                layers.Conv2D(
                    filters,
                    p.kernel_size,
                    padding=p.padding,
                    use_bias=False,
                    name=f"conv{stage}_{j}",
                ),
                FusedBatchNormalization(name=f"bn{stage}_{j}"),
                layers.ReLU(name=f"relu{stage}_{j}"),
            ]
        if stage < len(p.filters):
            body.append(layers.MaxPooling2D(2, name=f"pool{stage}"))  # 28 -> 14 -> 7
    return keras.Sequential(
        [
            keras.Input(shape=IMAGE_SHAPE),
            *body,
            layers.GlobalAveragePooling2D(name="global_avg_pool"),  # (B, filters[-1])
            layers.Dropout(p.dropout, name="dropout"),
            _classifier(),
        ],
        name="bn_gap_cnn",
    )


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


def with_test_time_augmentation(network: keras.Model, p: ModelParams) -> keras.Model:
    """`network` made to average its probabilities over `test_time_views`.

    The same weights on every view: no trainable parameters added (the mirror's fixed 28x28
    matrix is not trained), and as many times the inference work as there are views (2 for
    the mirror, 5 for the shifts, 10 for both). Training mirrors and shifts garments too.
    """
    images = keras.Input(shape=IMAGE_SHAPE, name="images")
    probs = [network(view) for view in test_time_views(images, p)]
    return keras.Model(
        images, layers.Average(name="tta_average")(probs), name=f"{network.name}_tta"
    )


def network(model: keras.Model) -> keras.Model:
    """The trained network itself: `model`, or the one inside a mirror-averaging wrapper."""
    inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return inner[0] if len(inner) == 1 else model


ARCHITECTURES: dict[str, Callable[[ModelParams], keras.Model]] = {
    "gap_cnn": gap_cnn,
    "bn_cnn": bn_cnn,
    "dense": dense,
    "bn_gap_cnn": bn_gap_cnn,
}


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Layers made inside compute under the Keras dtype policy `name` (the global one after)."""
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def build(p: ModelParams, replicas: int = 1) -> keras.Model:
    """The model named by `p.arch`, under the current Keras dtype policy.

    With several replicas, BatchNorm normalises over the global batch (its statistics are
    all-reduced across replicas and workers), as one device training on that batch would. So
    every replica ends with the same moving statistics, and the model any worker saves is the
    same. With one replica nothing changes.
    """
    model = ARCHITECTURES[p.arch](p)
    if replicas > 1:
        for layer in model.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.synchronized = True  # read at each call: set before the first
    return model


def for_inference(trained: keras.Model, p: ModelParams) -> keras.Model:
    """What is saved and shipped: the trained network, averaged over test-time views if
    `p.tta_flip` or `p.tta_shift`.

    A copy, without what `compile` attached (loss, optimizer and its state): a Keras archive
    stores those, and this project's loss would then stop plain Keras from loading the file.
    It computes in float32 whatever precision trained it (the weights are float32 either way):
    the same answers on every machine, with no bfloat16 emulated where a CPU lacks it, and a
    SavedModel that agrees with it (in bfloat16 the two kernels' roundings differ).
    """
    with dtype_policy("float32"):
        network = keras_copy(trained, "float32")
        network.set_weights(trained.get_weights())
        return with_test_time_augmentation(network, p) if p.tta_flip or p.tta_shift else network


def keras_copy(model: keras.Model, policy: str | None = None) -> keras.Model:
    """A new, uncompiled model of `model`'s layers (a Sequential, as every architecture is), in
    Keras' own classes: `FusedBatchNormalization` becomes Keras' BatchNormalization, so that
    plain Keras loads it. Every layer computes under dtype `policy` if given. New weights."""

    def copy(layer: layers.Layer) -> layers.Layer:
        fused = isinstance(layer, FusedBatchNormalization)
        new = (layers.BatchNormalization if fused else type(layer)).from_config(layer.get_config())
        if policy:
            new.dtype_policy = policy
        return new

    return keras.Sequential(
        [keras.Input(shape=IMAGE_SHAPE), *map(copy, model.layers)], name=model.name
    )


# `model.save` stamps the wall-clock time into the archive; a fixed stamp makes the same
# weights give the same bytes, and so the same DVC hash.
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def _renumber_shared(config, ids: dict | None = None):
    """`config` with each `shared_object_id` (Keras uses the Python `id()` of the object, which
    differs from process to process) replaced by its order of first appearance."""
    ids = {} if ids is None else ids
    if isinstance(config, list):
        return [_renumber_shared(item, ids) for item in config]
    if not isinstance(config, dict):
        return config
    out = {}
    for key, value in config.items():
        if key == "shared_object_id":
            value = ids.setdefault(value, len(ids))
        out[key] = _renumber_shared(value, ids)
    return out


def save_model(model: keras.Model, path: str | Path) -> None:
    """Save `model` as a `.keras` archive atomically, with bytes that depend only on the model."""
    with atomic.atomic_path(path) as tmp:
        raw = tmp.with_name("raw.keras")
        model.save(raw)
        out = io.BytesIO()
        with zipfile.ZipFile(raw) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in sorted(src.infolist(), key=lambda i: i.filename):
                data = src.read(info)
                if info.filename == "metadata.json":
                    meta = json.loads(data)
                    meta.pop("date_saved", None)
                    data = json.dumps(meta, sort_keys=True).encode()
                elif info.filename == "config.json":
                    data = json.dumps(_renumber_shared(json.loads(data)), sort_keys=True).encode()
                dst.writestr(zipfile.ZipInfo(info.filename, date_time=_FIXED_ZIP_TIME), data)
        raw.unlink()
        tmp.write_bytes(out.getvalue())


def load_model(path: str | Path) -> keras.Model:
    """Load a `.keras` model in Keras' safe mode (no arbitrary code from the file)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: no model there; run `dvc repro train`")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    # TypeError: a config naming a function or class that is not registered.
    except (ValueError, TypeError, OSError, zipfile.BadZipFile, KeyError) as exc:
        raise PipelineError(f"{path}: not a loadable Keras model ({exc})") from None
