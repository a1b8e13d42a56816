"""The architectures, selected by `model.arch`, exactly as the seed documents define them.

Every model takes float32 images scaled to [0, 1], shape (B, 28, 28, 1), and returns class
probabilities (B, 10). The last layer always computes in float32 so that mixed precision never
changes what the model outputs, and the model that ships computes in float32 throughout (mixed
precision is a way to train faster, not part of the model).
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf
from keras import layers

from fmnist.dataset import IMAGE_SHAPE, NUM_CLASSES
from fmnist.params import ModelParams


def _classifier(name: str = "output") -> layers.Layer:
    return layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32", name=name)


@keras.saving.register_keras_serializable(package="fmnist")
class FusedBatchNormalization(layers.BatchNormalization):
    """Keras' BatchNormalization that trains with TensorFlow's fused batch-norm kernel.

    Keras 3 computes batch statistics and their gradients as a dozen separate float32 ops, a
    large share of a CPU training step (`benchmarks/op_profile.py` shows it). The fused kernel
    (oneDNN's, which also absorbs a ReLU that follows) does the same arithmetic in one op each
    way: the same outputs and moving statistics up to rounding (a test compares them). It is
    fast in bfloat16 only when the channels are a multiple of 16 (docs/measurements.md has the
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


ARCHITECTURES: dict[str, Callable[[ModelParams], keras.Model]] = {
    "gap_cnn": gap_cnn,
    "bn_cnn": bn_cnn,
    "dense": dense,
    "bn_gap_cnn": bn_gap_cnn,
}


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
