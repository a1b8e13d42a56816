"""The out-of-distribution score: how far an image lies from every class it was trained on,
and the threshold above which the package flags an input as unlike its data.

The score is a Mahalanobis distance (Lee et al. 2018, "A Simple Unified Framework for
Detecting Out-of-Distribution Samples and Adversarial Attacks") over features of the image:
the mean of each convolution stage's output over the image (the input of each pooling layer;
the penultimate features for a network without any), and the extent of its object (the longest
side of the box around the pixels brighter than 5% of white: Fashion-MNIST's conversion
resizes every garment's longest edge to 28 pixels, so 99.98% of its images span 27 or 28).
Each class's mean and one covariance shared by the classes are fitted on training images, the
features standardised first; an image's score is its distance to the nearest class mean,
divided by the square root of the feature count (so about 1 for a typical training image). The
softmax probability alone does not do: the model is confidently wrong on inverted images ("Bag
1.000").

The threshold is chosen on validation images and product photos made from them (in
distribution) and synthetic out-of-distribution sets made from validation images and generated
images (`fmnist.serving.synthetic`), never on the test set: the one that best separates them
(largest mean detection rate minus mean false-alarm rate) among those that flag at most
`package.ood_max_false_alarm` of each in-distribution set.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

# Added to the covariance's diagonal (the features standardised): a feature that never varies
# on the training data must not make it singular.
RIDGE = 1e-3
# A pixel counts towards the object's extent above this intensity (5% of white, the
# Fashion-MNIST paper's tolerance for trimming).
INK = 0.05


def extent(images: tf.Tensor) -> tf.Tensor:
    """The longest side, in pixels, of the box around the pixels above `INK`, float32 (B,),
    of images (B, 28, 28, 1) scaled to [0, 1]; 0 for an image with none."""
    ink = images[..., 0] > INK  # (B, H, W)

    def span(lines: tf.Tensor) -> tf.Tensor:  # (B, L) bool -> (B,) from first to last True
        length = tf.shape(lines)[1]
        index = tf.range(length)[None]
        first = tf.reduce_min(tf.where(lines, index, length), axis=1)
        last = tf.reduce_max(tf.where(lines, index, -1), axis=1)
        return tf.maximum(last - first + 1, 0)

    longest = tf.maximum(span(tf.reduce_any(ink, axis=2)), span(tf.reduce_any(ink, axis=1)))
    return tf.cast(longest, tf.float32)


@dataclass(frozen=True)
class OodDetector:
    """The standardised, whitened class means and the transform into that space; the threshold.

    ||(f - shift) @ whitening - means[c]||² is the squared Mahalanobis distance of features f
    to class c.
    """

    shift: np.ndarray  # (D,) the training features' mean
    whitening: np.ndarray  # (D, D)
    means: np.ndarray  # (C, D)
    threshold: float

    def score(self, features: np.ndarray) -> np.ndarray:
        """Scores (N,) of features (N, D), in NumPy (float64)."""
        z = (np.asarray(features, np.float64) - self.shift) @ self.whitening  # (N, D)
        d2 = (z * z).sum(1, keepdims=True) - 2 * z @ self.means.T + (self.means**2).sum(1)
        return np.sqrt(np.maximum(d2.min(axis=1), 0.0) / z.shape[1])

    def tf_score(self, features: tf.Tensor) -> tf.Tensor:
        """Scores (N,) float32 of features (N, D), in TensorFlow ops (for the SavedModel)."""
        z = (tf.cast(features, tf.float32) - self.shift.astype(np.float32)) @ tf.constant(
            self.whitening, tf.float32
        )  # (N, D)
        means = tf.constant(self.means, tf.float32)  # (C, D)
        d2 = (
            tf.reduce_sum(z * z, axis=1, keepdims=True)
            - 2.0 * z @ tf.transpose(means)
            + tf.reduce_sum(means * means, axis=1)[None]
        )  # (N, C)
        return tf.sqrt(tf.maximum(tf.reduce_min(d2, axis=1), 0.0) / len(self.shift))

    def with_threshold(self, threshold: float) -> OodDetector:
        """The same detector flagging scores above `threshold`."""
        return dataclasses.replace(self, threshold=float(threshold))

    def to_dict(self) -> dict:
        """The detector as JSON-able lists (the package records it)."""
        return {
            "threshold": self.threshold,
            "shift": self.shift.tolist(),
            "whitening": self.whitening.tolist(),
            "means": self.means.tolist(),
        }


def fit(features: np.ndarray, labels: np.ndarray, num_classes: int) -> OodDetector:
    """The class means and shared covariance of standardised training `features` (N, D) with
    `labels` (N,); the threshold is left at infinity (`with_threshold` sets it)."""
    features = np.asarray(features, np.float64)
    missing = sorted(set(range(num_classes)) - set(np.unique(labels).tolist()))
    if missing:
        raise ValueError(f"no training features of classes {missing}")
    shift = features.mean(axis=0)
    scale = features.std(axis=0) + 1e-6
    standard = (features - shift) / scale
    means = np.stack([standard[labels == c].mean(axis=0) for c in range(num_classes)])
    centred = standard - means[labels]
    cov = centred.T @ centred / len(standard) + RIDGE * np.eye(standard.shape[1])
    # precision = L Lᵀ, so (f - m)ᵀ precision (f - m) = ||(f - m) L||².
    chol = np.linalg.cholesky(np.linalg.inv(cov))
    return OodDetector(shift, np.diag(1.0 / scale) @ chol, means @ chol, float("inf"))


def flagged(scores: np.ndarray, threshold: float) -> float:
    """The fraction of `scores` above `threshold`."""
    return float(np.mean(np.asarray(scores) > threshold)) if len(scores) else 0.0


def choose_threshold(
    in_distribution: dict[str, np.ndarray],
    out_of_distribution: dict[str, np.ndarray],
    max_false_alarm: float,
) -> float:
    """The threshold that best separates the sets: the largest mean detection rate over the
    out-of-distribution sets minus the mean false-alarm rate over the in-distribution sets,
    among thresholds that flag at most `max_false_alarm` of every in-distribution set. Ties
    go to the highest threshold (the fewest false alarms)."""
    # "higher": an order statistic, so that at most `max_false_alarm` of a small set is above it.
    floor = max(
        float(np.quantile(s, 1.0 - max_false_alarm, method="higher"))
        for s in in_distribution.values()
    )
    candidates = np.unique(
        np.concatenate([floor, *in_distribution.values(), *out_of_distribution.values()], axis=None)
    )
    candidates = candidates[candidates >= floor]

    def flagged_at(scores: np.ndarray) -> np.ndarray:  # (K,) fractions above each candidate
        ordered = np.sort(scores)
        return 1.0 - np.searchsorted(ordered, candidates, side="right") / len(ordered)

    detection = np.mean([flagged_at(s) for s in out_of_distribution.values()], axis=0)
    false_alarm = np.mean([flagged_at(s) for s in in_distribution.values()], axis=0)
    separation = detection - false_alarm
    best = candidates[separation >= separation.max() - 1e-12]
    return float(best.max())


def rates(sets: dict[str, np.ndarray], threshold: float) -> dict[str, float]:
    """The fraction of each set flagged at `threshold`, rounded for a report."""
    return {name: round(flagged(scores, threshold), 4) for name, scores in sets.items()}
