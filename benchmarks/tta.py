"""Accuracy of test-time augmentation settings on a trained model: no retraining needed.

The trained network inside `model.keras` is wrapped with each (`tta_flip`, `tta_shift`) setting,
as the `train` stage would save it, and scored on the validation and test splits. Choose a
setting by its validation accuracy; the test column is for reporting, not for choosing.

    python3 benchmarks/tta.py models/model.keras --data data/prepared --settings 0:0 1:0 1:1 1:2

`--view-sets` scores sets of views that the params cannot express instead: each a subset of
the image and its mirror moved by up to 2 pixels each way (a 5x5 grid, 50 views), every view
scored once and the sets averaged from those scores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import machine  # first: TensorFlow starts with the stages' oneDNN setting

# isort: split
import keras
import numpy as np

from fmnist.dataset import IMAGE_SHAPE, load_split
from fmnist.errors import report_errors
from fmnist.model import saving, tta
from fmnist.params import ModelParams
from fmnist.stages import evaluate

# Sets of views (mirrored, dx, dy) on the 5x5 grid of shifts, in order of size.
VIEW_SETS = {
    "the image": lambda m, dx, dy: not (m or dx or dy),
    "and its mirror": lambda m, dx, dy: not (dx or dy),
    "both, moved 1 px left and right": lambda m, dx, dy: not dy and abs(dx) <= 1,
    "both, moved 1 px up and down": lambda m, dx, dy: not dx and abs(dy) <= 1,
    "both, moved 1 px each way (tta_shift 1)": lambda m, dx, dy: abs(dx) + abs(dy) <= 1,
    "both, a 3x3 grid": lambda m, dx, dy: max(abs(dx), abs(dy)) <= 1,
    "both, moved 1 and 2 px each way": lambda m, dx, dy: not (dx and dy),
    "both, a 5x5 grid": lambda m, dx, dy: True,
}
GRID = [(m, dx, dy) for m in (False, True) for dy in range(-2, 3) for dx in range(-2, 3)]


def view_models(network: keras.Model) -> dict:
    """{(mirrored, dx, dy): `network` on that view} for every view of `GRID`, each view made by
    the layers the shipped model makes its views with."""
    models = {}
    for m, dx, dy in GRID:
        x = keras.Input(shape=IMAGE_SHAPE)
        view = tta.mirror(x) if m else x
        if dx or dy:
            view = tta.shift(view, dx, dy, "view")
        models[m, dx, dy] = keras.Model(x, network(view))
    return models


def view_sets(network: keras.Model, splits: dict, batch: int) -> None:
    """Print each set of `VIEW_SETS`: its views, and its averaged accuracy on each split."""
    models = view_models(network)
    probs = {
        split: {v: evaluate.predict(model, images, batch) for v, model in models.items()}
        for split, (images, _) in splits.items()
    }
    print("| views | count | val accuracy | test accuracy |")
    print("|---|---|---|---|")
    for name, member in VIEW_SETS.items():
        views = [v for v in GRID if member(*v)]
        accuracy = {}
        for split, (_, labels) in splits.items():
            averaged = np.mean([probs[split][v] for v in views], axis=0)
            accuracy[split] = (averaged.argmax(axis=1) == labels).mean()
        print(f"| {name} | {len(views)} | {accuracy['val']:.2%} | {accuracy['test']:.2%} |")


def setting(text: str) -> tuple[bool, int]:
    """'1:2' -> (tta_flip=True, tta_shift=2)."""
    flip, shift = text.split(":")
    return bool(int(flip)), int(shift)


@report_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, nargs="?", default=Path("models/model.keras"))
    parser.add_argument("--data", type=Path, default=Path("data/prepared"))
    parser.add_argument(
        "--settings",
        nargs="+",
        type=setting,
        default=[(False, 0), (True, 0), (True, 1), (True, 2)],
        help="flip:shift pairs, e.g. 1:1 (mirror and 1 px shifts)",
    )
    parser.add_argument("--view-sets", action="store_true", help="score VIEW_SETS instead")
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    network = tta.network(saving.load_model(args.model))
    splits = {name: load_split(args.data / f"{name}.npz") for name in ("val", "test")}
    print(f"machine: {machine.describe()}")
    print(f"model: {args.model} ({network.name}, {network.count_params():,} parameters)\n")
    if args.view_sets:
        return view_sets(network, splits, args.batch)
    print("| tta_flip | tta_shift | views | val accuracy | test accuracy | seconds |")
    print("|---|---|---|---|---|---|")
    for flip, shift in args.settings:
        p = ModelParams(tta_flip=flip, tta_shift=shift)
        wrapped = saving.for_inference(network, p)
        start = time.perf_counter()
        accuracy = {
            name: (evaluate.predict(wrapped, images, args.batch).argmax(axis=1) == labels).mean()
            for name, (images, labels) in splits.items()
        }
        seconds = time.perf_counter() - start
        print(
            f"| {str(flip).lower()} | {shift} | {p.tta_views} | {accuracy['val']:.2%} | "
            f"{accuracy['test']:.2%} | {seconds:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
