"""The seeds' recipes as plain Keras scripts: the reference that this project's recipes answer to.

The reference figures of the seeds' recipes are those of plain Keras scripts on the real data.
This is such a script, kept so that the reference can be measured again, on any machine, side
by side with the pipeline: the recipe's
model in Keras' own layers (no fused BatchNorm), float32, the notebook's float64 arrays of
pixel / 255, `model.fit` with Keras' batching and one step per call, Adam, sparse categorical
cross-entropy, the recipe's EarlyStopping and ReduceLROnPlateau, and, where the recipe augments,
Keras' legacy `ImageDataGenerator` given the write-up's table as its parameters (whose names
the table uses; it reads the shear range as degrees and draws the x and y zoom apart), or with
`--augmentation layers` Keras 3's preprocessing layers in front of the model, one per row of
the table (`augmentation_layers`). The recipe's settings come from recipes.yaml, so this runs
what `dvc exp run $(fmnist recipe NAME)` runs, but the way the seeds ran it. Each run trains on
the prepared split (the notebook's `train_test_split` call) and scores the model it ends with
(the best epoch restored, by validation loss) on the test set. A full run takes about as long
as the recipe's `train` stage (the `writeup`: 20-30 minutes on 2 cores).

    python3 benchmarks/seed_scripts.py --recipe writeup
    python3 benchmarks/seed_scripts.py --recipe writeup --seeds 42 7 1 2
    python3 benchmarks/seed_scripts.py --recipe writeup -S model.padding=same
    python3 benchmarks/seed_scripts.py --recipe writeup --augmentation layers
    python3 benchmarks/seed_scripts.py --recipe notebook
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import machine  # first: TensorFlow starts with the stages' oneDNN setting

# isort: split
import keras
import numpy as np
from keras import layers

import throughput
from augment_strength import keras_generator
from fmnist.dataset import IMAGE_SHAPE, load_split
from fmnist.errors import report_errors
from fmnist.model import architectures, saving
from fmnist.params import AugmentParams, Params
from fmnist.stages import train
from fmnist.training import inputs

GENERATOR, LAYERS = "ImageDataGenerator", "layers"


def plain_arrays(path) -> tuple[np.ndarray, np.ndarray]:
    """A prepared split as the notebook holds it (`throughput.notebook_pixels`), and its labels."""
    images, labels = load_split(path)
    return throughput.notebook_pixels(images), labels


def augmentation_layers(p: AugmentParams) -> keras.Sequential:
    """The recipe's augmentation as Keras 3's preprocessing layers, one per row of the
    write-up's table and in its order, each with the recipe's fill mode (active in training
    only). Each layer warps and interpolates the image again. RandomShear shears along x and y,
    each by up to the given fraction of the image: the recipe's shear factor, read the same way
    (the `writeup` recipe's 0.0026; the table's "15%" read as a fraction would be 0.15)."""
    fill = {"fill_mode": p.fill_mode}
    flip = {(True, False): "horizontal", (False, True): "vertical"}.get(
        (p.horizontal_flip, p.vertical_flip), "horizontal_and_vertical"
    )
    return keras.Sequential(
        [
            layers.RandomRotation(p.rotation_deg / 360, **fill),  # a fraction of a full turn
            layers.RandomTranslation(p.shift, p.shift, **fill),
            layers.RandomShear(x_factor=p.shear, y_factor=p.shear, **fill),
            layers.RandomZoom(p.zoom, **fill),
            *([layers.RandomFlip(flip)] if p.horizontal_flip or p.vertical_flip else []),
        ],
        name="augmentation",
    )


def run(params: Params, data, train_size: int | None, augmentation: str) -> dict:
    """Train `params`' recipe as a plain Keras script; return its figures."""
    m, p = params.model, params.train
    keras.utils.set_random_seed(p.seed)  # Python, NumPy (the generator's draws) and TensorFlow
    with saving.dtype_policy("float32"):
        model = saving.keras_copy(architectures.build(m))  # Keras' own layers
        if p.augment.enabled and augmentation == LAYERS:
            model = keras.Sequential(
                [keras.Input(IMAGE_SHAPE), augmentation_layers(p.augment), model], name=model.name
            )
    (x, y), val, (x_test, y_test) = data
    x, y = x[:train_size], y[:train_size]
    # The recipe's optimizer, loss and metric (for the seeds: Adam and sparse cross-entropy),
    # with the notebook's one step per call.
    train.compile_model(model, p, inputs.steps_per_epoch(len(y), p.batch_size))
    model.steps_per_execution = 1
    callbacks = train.schedule_callbacks(p)
    if p.augment.enabled and augmentation == GENERATOR:
        fit_data = {
            "x": keras_generator(p.augment).flow(x, y, batch_size=p.batch_size, seed=p.seed)
        }
    else:
        fit_data = {"x": x, "y": y, "batch_size": p.batch_size}
    start = time.perf_counter()
    history = model.fit(
        **fit_data, epochs=p.epochs, validation_data=val, callbacks=callbacks, verbose=2
    )
    seconds = time.perf_counter() - start
    stopper = [c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping)]
    epochs = len(history.history["loss"])
    # Keras restores the best epoch's weights at the end, stopped early or not.
    best = stopper[0].best_epoch + 1 if stopper and stopper[0].restore_best_weights else epochs
    return {
        "parameters": model.count_params(),
        "epochs": epochs,
        "best": best,
        "val": model.evaluate(*val, verbose=0)[1],
        "test": model.evaluate(x_test, y_test, verbose=0)[1],
        "seconds": seconds,
    }


@report_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    throughput.add_training_arguments(parser, recipe="writeup", images=None)
    parser.add_argument("--seeds", type=int, nargs="+", help="train.seed of each run")
    parser.add_argument(
        "--augmentation",
        choices=(GENERATOR, LAYERS),
        default=GENERATOR,
        help="how the script augments, where the recipe does: Keras' legacy ImageDataGenerator "
        "(tf.keras.preprocessing.image; the table's parameter names) or Keras 3's preprocessing "
        "layers in front of the model",
    )
    args = parser.parse_args()
    params = throughput.recipe(args)  # float32, as the seeds trained
    data = tuple(plain_arrays(args.data / f"{name}.npz") for name in ("train", "val", "test"))
    seeds = args.seeds or [params.train.seed]
    print(f"machine: {machine.describe()}", flush=True)
    rows = []
    for seed in seeds:
        run_params = dataclasses.replace(params, train=dataclasses.replace(params.train, seed=seed))
        rows.append((seed, run(run_params, data, args.images, args.augmentation)))
    m, p = params.model, params.train
    print(
        f"\nrecipe {args.recipe} as a plain Keras script {' '.join(args.set)}: {m.arch} "
        f"{list(m.filters)}, padding {m.padding}, batch {p.batch_size}, augmentation "
        f"{args.augmentation if p.augment.enabled else 'none'}"
    )
    print(
        "| seed | parameters | epochs (best) | val accuracy | test accuracy | train s | s/epoch |"
    )
    print("|---|---|---|---|---|---|---|")
    for seed, r in rows:
        print(
            f"| {seed} | {r['parameters']:,} | {r['epochs']} ({r['best']}) | {r['val']:.2%} | "
            f"{r['test']:.2%} | {r['seconds']:,.0f} | {r['seconds'] / r['epochs']:.1f} |"
        )


if __name__ == "__main__":
    sys.exit(main())
