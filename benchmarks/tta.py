"""Accuracy of test-time augmentation settings on a trained model: no retraining needed.

The trained network inside `model.keras` is wrapped with each (`tta_flip`, `tta_shift`) setting,
as the `train` stage would save it, and scored on the validation and test splits. Choose a
setting by its validation accuracy; the test column is for reporting, not for choosing.

    python3 benchmarks/tta.py models/model.keras --data data/prepared --settings 0:0 1:0 1:1 1:2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import machine
from fmnist.dataset import load_split
from fmnist.errors import report_errors
from fmnist.model import saving, tta
from fmnist.params import ModelParams
from fmnist.stages import evaluate


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
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    network = tta.network(saving.load_model(args.model))
    splits = {name: load_split(args.data / f"{name}.npz") for name in ("val", "test")}
    print(f"machine: {machine.describe()}")
    print(f"model: {args.model} ({network.name}, {network.count_params():,} parameters)\n")
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
