"""How strong an augmentation is, read two ways: a trained model's accuracy on augmented images.

The seed write-up names its augmentation in the words of Keras' legacy `ImageDataGenerator`
(rotation, width/height shift, shear range, zoom range, flips, fill mode). This script applies a
recipe's augmentation to the test images, once per draw, as this project's training does and as
that class does with the same settings (the same rotation, shifts, shear angle, zoom range and
flips; the class draws the x and y zoom apart, this project one zoom for both axes), and scores
the trained network (one view, no test-time averaging) on them: the lower the accuracy, the
further the augmentation moves images from the data. No retraining.

    python3 benchmarks/augment_strength.py models/model.keras --recipe writeup --draws 3
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import machine  # first: TensorFlow starts with the stages' oneDNN setting

# isort: split
import keras
import numpy as np
import tensorflow as tf

# The legacy class: Keras 3's own API no longer exports it (TensorFlow's `tf.keras` still does).
from keras.src.legacy.preprocessing.image import ImageDataGenerator

from fmnist.dataset import load_split
from fmnist.errors import report_errors
from fmnist.model import saving, tta
from fmnist.params import AugmentParams, load_params, params_to_dict
from fmnist.tools.recipe import load_recipes, recipe_params
from fmnist.training import inputs


def this_project(x: np.ndarray, p: AugmentParams, draw: int, batch: int) -> np.ndarray:
    """`inputs.augment_batch`, as training applies it, seeded by (draw, batch index)."""
    return np.concatenate(
        [
            inputs.augment_batch(
                tf.constant(x[i : i + batch]), tf.constant([draw, i], tf.int64), p
            ).numpy()
            for i in range(0, len(x), batch)
        ]
    )


def keras_generator(p: AugmentParams) -> ImageDataGenerator:
    """Keras' `ImageDataGenerator` with `p`'s settings. Its shear range is an angle in degrees,
    this project's a shear factor: it gets the angle of `p.shear` (so the `writeup` recipe's
    0.0026 gives it 0.15, the write-up's number)."""
    return ImageDataGenerator(
        rotation_range=p.rotation_deg,
        width_shift_range=p.shift,
        height_shift_range=p.shift,
        shear_range=math.degrees(math.atan(p.shear)),
        zoom_range=p.zoom,
        horizontal_flip=p.horizontal_flip,
        vertical_flip=p.vertical_flip,
        fill_mode=p.fill_mode,
    )


def image_data_generator(x: np.ndarray, p: AugmentParams, draw: int) -> np.ndarray:
    """`x` augmented once by `keras_generator(p)`, seeded by `draw`."""
    generator = keras_generator(p)
    np.random.seed(draw)  # the generator draws from NumPy's global generator
    return np.stack([generator.random_transform(image) for image in x])


@report_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, nargs="?", default=Path("models/model.keras"))
    parser.add_argument("--data", type=Path, default=Path("data/prepared"))
    parser.add_argument("--recipe", default="writeup", help="whose augmentation (`fmnist recipe`)")
    parser.add_argument("--draws", type=int, default=3, help="augmented copies of the test set")
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()

    base = params_to_dict(load_params("params.yaml"))
    p = recipe_params(args.recipe, load_recipes(), base).train.augment
    network = tta.network(saving.load_model(args.model))
    images, labels = load_split(args.data / "test.npz")
    x = inputs.preprocess(images[..., np.newaxis]).numpy()

    def accuracy(xs: np.ndarray) -> float:
        return float(
            (network.predict(xs, batch_size=args.batch, verbose=0).argmax(1) == labels).mean()
        )

    readings = {
        "this project (one zoom for both axes)": lambda d: this_project(x, p, d, args.batch),
        "ImageDataGenerator (the same settings; x and y zoom apart)": lambda d: (
            image_data_generator(x, p, d)
        ),
    }
    print(f"machine: {machine.describe()}")
    print(f"model: {args.model} ({network.name}, one view), Keras {keras.__version__}")
    print(f"recipe {args.recipe}: {p}\n")
    print("| augmentation | test accuracy, median of draws | min-max |")
    print("|---|---|---|")
    print(f"| none | {accuracy(x):.2%} | |", flush=True)
    for name, augment in readings.items():
        scores = [accuracy(augment(draw)) for draw in range(args.draws)]
        print(
            f"| {name} | {statistics.median(scores):.2%} | {min(scores):.2%}-{max(scores):.2%} |",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
