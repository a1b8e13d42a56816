"""Fitting the out-of-distribution detector of a trained network, and measuring it.

Fitted on a fixed sample of training images; its threshold chosen on the validation split,
product photos made from it (preprocessed as `serving_bytes` does) and the tuning
out-of-distribution sets (`fmnist.serving.synthetic`); then measured, not tuned, on held-out
sets: the test split and photos made from it (false alarms), and out-of-distribution sets made
from the test split with other seeds and three families the threshold never saw (detection).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from fmnist.dataset import IMAGE_SIZE, NUM_CLASSES, Split
from fmnist.params import PackageParams
from fmnist.serving import ood, preprocess, synthetic
from fmnist.serving.signatures import features_of

# The report's file name in the package's metadata/.
REPORT_FILE = "ood.json"
# Seeds of the synthetic sets: tuning sets from validation images, held-out ones from test
# images, never the same draws.
TUNING_SEED = 1
HELD_OUT_SEED = 2
# Training images in the sample the class statistics are fitted on.
_SAMPLE_SEED = 0


def preprocessed(photos: list[bytes]) -> np.ndarray:
    """Encoded photos brought back to (N, 28, 28) pixels by the bytes signature's
    preprocessing: what a served photo looks like to the network."""
    if not photos:
        return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    pixels, errors = preprocess.to_pixels(tf.constant(photos))
    bad = [e.decode() for e in errors.numpy() if e]
    if bad:
        raise RuntimeError(f"a synthetic photo could not be preprocessed: {bad[0]}")
    return pixels.numpy()[..., 0]


def _sets(
    images: np.ndarray, n: int, seed: int, held_out: bool
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(product photos of the first `n` images, preprocessed; the out-of-distribution sets)."""
    photos = synthetic.product_photos(images[:n], seed)
    sets = synthetic.out_of_distribution_sets(images, photos, n, seed, held_out)
    # Photos of things that are not garments, preprocessed: they fill the frame as garments
    # do, so only the network's features can tell them apart.
    objects = {"typeset_digits": synthetic.digits}
    if held_out:
        objects = {"typeset_letters": synthetic.letters, "scribbles": synthetic.strokes}
    rng = np.random.default_rng(seed + 100)
    for name, make in objects.items():
        drawn = synthetic.product_photos(make(n, rng), seed + 200)
        sets[f"photographed_{name}"] = preprocessed(drawn)
    return preprocessed(photos), sets


def calibrate(
    model: keras.Model, train: Split, val: Split, test: Split, p: PackageParams
) -> tuple[ood.OodDetector, dict]:
    """The detector for `model` (made by `fmnist.serving.signatures.with_features`), its
    threshold chosen on validation and tuning sets, and a report: its rates on every set, and
    the accuracy of `model` on the splits and on photos made from them."""
    images, labels = train
    if 0 < p.ood_fit_sample < len(images):
        rng = np.random.default_rng(_SAMPLE_SEED)
        picked = np.sort(rng.choice(len(images), p.ood_fit_sample, replace=False))
        images, labels = images[picked], labels[picked]
    n = p.ood_set_size
    val_photos, tuning_sets = _sets(val[0], n, TUNING_SEED, held_out=False)
    test_photos, held_out_sets = _sets(test[0], n, HELD_OUT_SEED, held_out=True)
    groups = {
        "fit": images,
        "val": val[0],
        "val_photos": val_photos,
        **{("tuning", name): x for name, x in tuning_sets.items()},
        "test": test[0],
        "test_photos": test_photos,
        **{("held_out", name): x for name, x in held_out_sets.items()},
    }
    # Every image through the network in one `predict`, not one per group: each call pays
    # Keras' set-up again, and there are 27 groups (docs/measurements.md).
    probs, features = features_of(model, np.concatenate(list(groups.values())))
    starts = np.cumsum([0, *(len(x) for x in groups.values())])
    rows = {group: slice(a, b) for group, a, b in zip(groups, starts[:-1], starts[1:])}
    detector = ood.fit(features[rows.pop("fit")], labels, NUM_CLASSES)
    scores = {group: detector.score(features[where]) for group, where in rows.items()}
    truth = {"val": val[1], "val_photos": val[1][:n], "test": test[1], "test_photos": test[1][:n]}
    accuracy = {
        name: round(float((probs[rows[name]].argmax(axis=1) == y).mean()), 4)
        for name, y in truth.items()
    }
    tuning_in = {name: scores[name] for name in ("val", "val_photos")}
    tuning_out = {name: scores["tuning", name] for name in tuning_sets}
    threshold = ood.choose_threshold(tuning_in, tuning_out, p.ood_max_false_alarm)
    held_in = {name: scores[name] for name in ("test", "test_photos")}
    held_out = {name: scores["held_out", name] for name in held_out_sets}
    report = {
        "threshold": round(threshold, 6),
        "fitted_on": f"{len(images)} training images",
        "max_false_alarm": p.ood_max_false_alarm,
        "set_size": n,
        "tuning": {
            "false_alarm": ood.rates(tuning_in, threshold),
            "detection": ood.rates(tuning_out, threshold),
        },
        "held_out": {
            "false_alarm": ood.rates(held_in, threshold),
            "detection": ood.rates(held_out, threshold),
        },
        # The network alone (serving_default), on the splits and photos made from them.
        "accuracy": accuracy,
    }
    return detector.with_threshold(threshold), report
