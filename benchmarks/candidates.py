"""Train one candidate recipe in this process on the prepared data and log how fast it learns.

For research on the default recipe: quicker than a DVC experiment (no evaluate or package
stage), and it records what choosing on validation needs: the wall time and the one-view
validation accuracy at the end of every epoch (the time-to-accuracy curve), then the final
network's validation and test accuracy with each set of test-time views (the image alone, with
its mirror, with its four 1-pixel shifts, all ten). One JSON line per run is appended to
`--log`. Run from the repository root after `dvc repro prepare`:

    python3 benchmarks/candidates.py base-10 -S train.epochs=10
    taskset -c 1 python3 benchmarks/candidates.py tuned-10 --recipe quick -S train.epochs=10
    python3 benchmarks/candidates.py --report --plot candidates.png   # the log as a table

`--teacher MODEL` distils a trained model into the candidate: each training image's target
is `--teacher-weight` times the teacher's probabilities (the views that model averages) plus
the rest times its label (smoothed as the recipe smooths labels), scored once before training
and kept with the image through its flips and shifts; validation keeps the true labels.

    taskset -c 0 python3 benchmarks/candidates.py kd-15 --recipe quick -S train.epochs=15 \
        --teacher models/model.keras --teacher-weight 0.5

Two runs side by side, one core each (`taskset -c 0 ...` and `taskset -c 1 ...`), get more
done on a 2-core machine than one after the other on both cores; their seconds are one core's,
so compare them only with runs made the same way (the speed probe is logged with each run).
`benchmarks/recipe_runs.py` measures a recipe end to end, as `dvc repro` runs it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import machine  # first: TensorFlow starts with the stages' oneDNN setting

# isort: split
import keras
import numpy as np

import curves
import inference
from fmnist.dataset import NUM_CLASSES, load_split
from fmnist.errors import report_errors
from fmnist.model import saving, tta
from fmnist.stages import train
from fmnist.tools.recipe import add_set_option, recipe_with_sets
from fmnist.training import device, inputs

# The test-time view sets scored at the end: their indices in `fmnist.model.tta`'s ten views
# (the image, moved right, left, down, up; then the same of its mirror).
VIEW_SETS = {"1 view": [0], "mirror": [0, 5], "shifts": [0, 1, 2, 3, 4], "10 views": [*range(10)]}


def score_views(network: keras.Model, splits: dict) -> dict:
    """Accuracy of the trained network on each split with each set of test-time views."""
    out = {}
    for split, (pixels, labels) in splits.items():
        probs = inference.view_probabilities(network, pixels, shift=1)  # (10, N, 10)
        for name, picked in VIEW_SETS.items():
            out[f"{split} {name}"] = inference.accuracy(probs, labels, picked)
    return out


def distillation_targets(
    teacher: keras.Model, images: np.ndarray, labels: np.ndarray, weight: float, smoothing: float
) -> np.ndarray:
    """Soft targets (N, 10): `weight` x the teacher's probabilities for `images` plus
    (1 - `weight`) x the labels, one-hot and smoothed by `smoothing` as training smooths them."""
    probs = teacher.predict(inputs.preprocess(images), batch_size=500, verbose=0)
    hard = np.eye(NUM_CLASSES)[labels] * (1.0 - smoothing) + smoothing / NUM_CLASSES
    return (weight * probs + (1.0 - weight) * hard).astype(np.float32)


def settings(run: dict) -> str:
    """What a logged run changed: its `-S` settings (or its recipe) and its teacher, if any."""
    text = " ".join(run["sets"]) or run["recipe"]
    if run.get("teacher"):  # logs from before --teacher have no such key
        text += f" --teacher {run['teacher']} --teacher-weight {run['teacher_weight']}"
    return text


def report(runs: list[dict], plot: Path | None) -> None:
    """The logged runs as a table; their time-to-accuracy curves as a PNG at `plot`."""
    print(
        "| run | parameters | epochs | cores | train s | val 1 view | val 10 views "
        "| test 1 view | test 2 views | test 10 views | probe s | settings |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        v = r["scores"]
        print(
            f"| {r['name']} | {r['parameters']:,} | {r['epochs']} | {r['cores']} | "
            f"{r['train_seconds']:.0f} | {v['val 1 view']:.2%} | {v['val 10 views']:.2%} | "
            f"{v['test 1 view']:.2%} | {v['test mirror']:.2%} | {v['test 10 views']:.2%} | "
            f"{r['probe_s']} | {settings(r)} |"
        )
    if plot:
        # Seconds on one core and on two are not the same clock: the label says which.
        lines = {
            f"{r['name']} ({r['cores']} core{'s' * (r['cores'] > 1)})": (
                r["epoch_seconds"],
                r["val_accuracy"],
            )
            for r in runs
        }
        plot.write_bytes(curves.time_to_accuracy(lines))
        print(f"time-to-accuracy curves: {plot}")


class EpochClock(keras.callbacks.Callback):
    """Seconds from the start of training to the end of each epoch (its validation pass
    included), and the one-view validation accuracy then: the time-to-accuracy curve."""

    def __init__(self):
        super().__init__()
        self.start = time.perf_counter()
        self.seconds: list[float] = []
        self.val_accuracy: list[float] = []

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(round(time.perf_counter() - self.start, 1))
        self.val_accuracy.append(float((logs or {}).get("val_accuracy", float("nan"))))


@report_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", help="a label for the run in the log")
    parser.add_argument("--recipe", default="default")
    parser.add_argument("--data", type=Path, default=Path("data/prepared"))
    parser.add_argument("--log", type=Path, default=Path("candidates.jsonl"))
    parser.add_argument(
        "--report", action="store_true", help="print the logged runs as a table instead"
    )
    parser.add_argument("--plot", type=Path, help="with --report: the curves' PNG")
    parser.add_argument("--teacher", type=Path, help="a trained .keras model to distil")
    parser.add_argument(
        "--teacher-weight", type=float, default=0.5, help="with --teacher: its share of the target"
    )
    add_set_option(parser, on_top_of="the recipe")
    args = parser.parse_args()
    if not 0.0 <= args.teacher_weight <= 1.0:
        parser.error("--teacher-weight must be between 0 and 1")
    if args.report:
        if not args.log.is_file():
            raise SystemExit(f"{args.log}: no such log; name one with --log (runs append to it)")
        runs = [json.loads(line) for line in args.log.read_text().splitlines() if line.strip()]
        return report(runs, args.plot)
    if not args.name:
        parser.error("name the run (or --report)")
    params = recipe_with_sets(args.recipe, args.set)
    probe = machine.speed_probe()
    runtime = device.setup(params.train)
    splits = {name: load_split(args.data / f"{name}.npz") for name in ("train", "val", "test")}
    train_split, val_split, teacher_seconds = splits["train"], splits["val"], 0.0
    if args.teacher:
        start = time.perf_counter()
        images, labels = train_split
        teacher = saving.load_model(args.teacher)
        smoothing = params.train.label_smoothing
        targets = distillation_targets(teacher, images, labels, args.teacher_weight, smoothing)
        train_split = images, targets
        val_split = val_split[0], np.eye(NUM_CLASSES, dtype=np.float32)[val_split[1]]
        teacher_seconds = time.perf_counter() - start
        # Soft targets take the one-hot form of the stage's loss; the smoothing is in them.
        train.loss = lambda p: "categorical_crossentropy"
    clock = EpochClock()
    start = time.perf_counter()
    model, epochs = train.train(params, train_split, val_split, [clock])
    seconds = time.perf_counter() - start
    record = {
        "name": args.name,
        "recipe": args.recipe,
        "sets": args.set,
        "parameters": model.count_params(),
        "epochs": epochs,
        "cores": len(machine.usable_cores()),
        "train_seconds": round(seconds, 1),
        "teacher": str(args.teacher or ""),
        "teacher_weight": args.teacher_weight if args.teacher else 0.0,
        "teacher_seconds": round(teacher_seconds, 1),
        "precision": runtime["precision"],
        "probe_s": round(probe, 2),
        "machine": machine.describe(),
        "scores": score_views(tta.network(model), {k: splits[k] for k in ("val", "test")}),
        "epoch_seconds": clock.seconds,
        "val_accuracy": clock.val_accuracy,
        "at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    with args.log.open("a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k not in ("epoch_seconds",)}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
