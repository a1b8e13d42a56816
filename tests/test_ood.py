"""The out-of-distribution score, its threshold and the synthetic sets it is chosen on."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from fmnist.serving import ood, synthetic


def clusters(n: int = 600, dims: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian classes with different means and a shared, correlated covariance."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    mix = rng.normal(size=(dims, dims))
    features = rng.normal(size=(n, dims)) @ mix + 6.0 * np.eye(3, dims)[labels]
    return features, labels


def test_the_score_is_the_mahalanobis_distance_to_the_nearest_class():
    features, labels = clusters()
    detector = ood.fit(features, labels, num_classes=3)
    means = np.stack([features[labels == c].mean(0) for c in range(3)])
    centred = features - means[labels]
    cov = centred.T @ centred / len(features)
    std = features.std(0) + 1e-6
    standard_cov = cov / np.outer(std, std) + ood.RIDGE * np.eye(5)
    precision = np.diag(1 / std) @ np.linalg.inv(standard_cov) @ np.diag(1 / std)
    x = features[:7] + 0.3
    d2 = np.array([[(v - m) @ precision @ (v - m) for m in means] for v in x])
    np.testing.assert_allclose(detector.score(x), np.sqrt(d2.min(1) / 5), rtol=1e-6)
    # The TensorFlow version, which the SavedModel runs, agrees.
    np.testing.assert_allclose(
        detector.tf_score(tf.constant(x, tf.float32)).numpy(), detector.score(x), rtol=1e-4
    )


def test_typical_points_score_about_one_and_far_points_much_more():
    features, labels = clusters()
    detector = ood.fit(features, labels, num_classes=3)
    assert 0.5 < np.median(detector.score(features)) < 1.5
    assert detector.score(features[:5] + 50.0).min() > 5.0


def test_a_constant_feature_does_not_make_the_covariance_singular():
    features, labels = clusters()
    features[:, 2] = 0.0  # a channel a ReLU never lets through
    detector = ood.fit(features, labels, num_classes=3)
    assert np.isfinite(detector.score(features)).all()
    assert detector.score(np.where(np.arange(5) == 2, 1.0, features[:1]))[0] > 10


def test_fit_needs_every_class():
    features, labels = clusters()
    with pytest.raises(ValueError, match=r"classes \[2\]"):
        ood.fit(features[labels < 2], labels[labels < 2], num_classes=3)


def test_the_threshold_respects_the_false_alarm_cap_and_separates_the_sets():
    rng = np.random.default_rng(1)
    inside = {"val": rng.normal(1.0, 0.1, 1000), "photos": rng.normal(1.05, 0.1, 300)}
    outside = {"noise": rng.normal(3.0, 0.3, 300), "digits": rng.normal(1.6, 0.2, 300)}
    threshold = ood.choose_threshold(inside, outside, max_false_alarm=0.01)
    for scores in inside.values():
        assert ood.flagged(scores, threshold) <= 0.01
    assert ood.flagged(outside["noise"], threshold) == 1.0
    assert ood.flagged(outside["digits"], threshold) > 0.9
    # A looser cap never gives a higher threshold.
    assert ood.choose_threshold(inside, outside, max_false_alarm=0.1) <= threshold


@pytest.mark.parametrize("size", [5, 20, 99, 101, 1000])
def test_the_cap_holds_for_small_sets_too(size):
    """A set of 20 cannot have 1% of it flagged: none of it may be (an interpolated quantile
    between its two highest scores would flag one: 5%)."""
    rng = np.random.default_rng(size)
    inside = {"val": rng.normal(1.0, 0.1, size), "photos": rng.normal(1.0, 0.2, size)}
    outside = {"near": rng.normal(1.1, 0.1, 50)}
    threshold = ood.choose_threshold(inside, outside, max_false_alarm=0.01)
    for scores in inside.values():
        assert ood.flagged(scores, threshold) <= 0.01


def test_when_the_sets_are_apart_the_threshold_is_the_highest_that_catches_them_all():
    inside = {"val": np.linspace(0.5, 1.5, 101)}
    outside = {"far": np.array([4.0, 5.0, 6.0])}
    threshold = ood.choose_threshold(inside, outside, max_false_alarm=0.05)
    assert ood.flagged(outside["far"], threshold) == 1.0
    assert ood.flagged(inside["val"], threshold) == 0.0
    assert threshold >= 1.5 and threshold < 4.0


def test_rates_per_set():
    assert ood.rates({"a": np.array([0.0, 2.0]), "b": np.array([3.0])}, 1.0) == {
        "a": 0.5,
        "b": 1.0,
    }


def test_extent_is_the_longest_side_of_the_inked_box():
    images = np.zeros((3, 28, 28, 1), np.float32)
    images[0, 3:25, 10:14] = 1.0  # 22 rows by 4 columns
    images[1, 0:28, 5:6] = 0.04  # too faint to count as ink
    images[2, 4:9, 2:26] = 0.5  # 24 columns
    np.testing.assert_array_equal(ood.extent(tf.constant(images)).numpy(), [22, 0, 24])


def test_fashion_mnist_images_span_the_canvas_and_typeset_digits_do_not(tiny_data):
    rng = np.random.default_rng(0)
    digits = synthetic.digits(50, rng)[..., None] / 255.0
    assert ood.extent(tf.constant(digits, tf.float32)).numpy().max() < 24


@pytest.mark.parametrize("held_out", [False, True])
def test_the_synthetic_sets_are_reproducible_images(tiny_data, held_out):
    images = tiny_data["test"][0][:20]
    photos = synthetic.product_photos(images, seed=3)
    sets = synthetic.out_of_distribution_sets(images, photos, 12, seed=5, held_out=held_out)
    again = synthetic.out_of_distribution_sets(images, photos, 12, seed=5, held_out=held_out)
    assert sets.keys() == again.keys()
    for name, array in sets.items():
        assert array.shape == (12, 28, 28) and array.dtype == np.uint8, name
        np.testing.assert_array_equal(array, again[name])
    assert {"handwritten_digits", "typeset_letters", "scribbles"} <= sets.keys() or not held_out
    np.testing.assert_array_equal(sets["inverted"], 255 - images[:12])
    assert sets["blank"].std(axis=(1, 2)).max() == 0  # one grey level each
