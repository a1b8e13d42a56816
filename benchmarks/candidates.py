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
and kept with the image through its flips and shifts; validation keeps the true labels. Given
more than once, the teachers' probabilities are averaged (an ensemble). They are kept in
`--teacher-cache` (`.cache/teacher-probabilities/`), named by the teachers' and the images'
bytes, so the next student of the same teachers skips the scoring, which on a CPU can take
longer than training the student. `--save MODEL` keeps the trained candidate as the `train`
stage saves its model, for example to teach another.

    taskset -c 0 python3 benchmarks/candidates.py wide --recipe quick \
        -S 'model.filters=[32,96,128]' --save wide.keras
    taskset -c 0 python3 benchmarks/candidates.py kd-15 --recipe quick -S train.epochs=15 \
        --teacher wide.keras --teacher models/model.keras --teacher-weight 0.5

`--swa-epochs K` averages the weights (stochastic weight averaging): the cosine decay ends K
epochs early at `--swa-rate` times the peak rate, the rate stays there for the last K epochs,
the weights at the end of each of them are averaged, and the BatchNorm statistics are then
measured afresh for the averaged weights over the training images (the mean of every batch's).

    taskset -c 1 python3 benchmarks/candidates.py swa-15 --recipe quick -S train.epochs=15 \
        --swa-epochs 4 --swa-rate 0.1

Two runs side by side, one core each (`taskset -c 0 ...` and `taskset -c 1 ...`), get more
done on a 2-core machine than one after the other on both cores; their seconds are one core's,
so compare them only with runs made the same way (the speed probe is logged with each run).
`benchmarks/recipe_runs.py` measures a recipe end to end, as `dvc repro` runs it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import time
from pathlib import Path

import machine  # first: TensorFlow starts with the stages' oneDNN setting

# isort: split
import keras
import numpy as np
import tensorflow as tf

import curves
import inference
from fmnist import atomic
from fmnist.dataset import NUM_CLASSES, load_split
from fmnist.errors import report_errors
from fmnist.model import saving
from fmnist.params import ModelParams
from fmnist.stages import train
from fmnist.tools.recipe import add_set_option, recipe_with_sets
from fmnist.training import device, inputs

# The stage's schedule, before `--swa-epochs` replaces it in the stage's module.
stage_learning_rate = train.learning_rate

# The test-time view sets scored at the end: their indices in `fmnist.model.tta`'s ten views
# (the image, moved right, left, down, up; then the same of its mirror).
VIEW_SETS = {"1 view": [0], "mirror": [0, 5], "shifts": [0, 1, 2, 3, 4], "10 views": [*range(10)]}


def score_views(model: keras.Model, splits: dict) -> dict:
    """Accuracy of the trained network on each split with each set of test-time views, scored
    as the pipeline scores what it ships: in float32, whatever precision trained it."""
    network = saving.for_inference(model, ModelParams(tta_flip=False, tta_shift=0))
    out = {}
    for split, (pixels, labels) in splits.items():
        probs = inference.view_probabilities(network, pixels, shift=1)  # (10, N, 10)
        for name, picked in VIEW_SETS.items():
            out[f"{split} {name}"] = inference.accuracy(probs, labels, picked)
    return out


def teacher_probabilities(
    paths: list[Path], images: np.ndarray, cache: Path
) -> tuple[np.ndarray, Path, bool]:
    """The teachers' mean probabilities (N, 10) for `images` (each teacher's own views
    averaged), the cache file that holds them and whether they were read from it. The file is
    named by the teachers' and the images' bytes, so a changed model or split scores afresh and
    the teachers' order does not matter (the mean ignores it)."""
    teachers = [saving.load_model(path) for path in paths]  # first: a bad file fails here
    key = hashlib.sha256()
    for digest in sorted(atomic.file_sha256(path) for path in paths):
        key.update(digest.encode())
    key.update(hashlib.sha256(np.ascontiguousarray(images)).digest())
    file = cache / f"{key.hexdigest()[:32]}.npy"
    try:
        probs = np.load(file)
        if probs.shape == (len(images), NUM_CLASSES):
            print(f"teachers' probabilities: read from {file}", file=sys.stderr)
            return probs, file, True
    except (OSError, ValueError, EOFError):  # none yet, or damaged: score afresh, replace it
        pass
    print(
        f"scoring {len(images):,} training images with {len(teachers)} teacher(s), "
        f"kept in {file} for the next run",
        file=sys.stderr,
    )
    pixels = inputs.preprocess(images)
    probs = np.mean([t.predict(pixels, batch_size=500, verbose=0) for t in teachers], axis=0)
    probs = probs.astype(np.float32)
    buffer = io.BytesIO()
    np.save(buffer, probs)
    atomic.write_bytes(file, buffer.getvalue())
    return probs, file, False


def distillation_targets(
    probs: np.ndarray, labels: np.ndarray, weight: float, smoothing: float
) -> np.ndarray:
    """Soft targets (N, 10): `weight` x the teachers' probabilities `probs` plus (1 - `weight`)
    x the labels, one-hot and smoothed by `smoothing` as training smooths them."""
    hard = np.eye(NUM_CLASSES)[labels] * (1.0 - smoothing) + smoothing / NUM_CLASSES
    return (weight * probs + (1.0 - weight) * hard).astype(np.float32)


def swa_learning_rate(tail: int, fraction: float):
    """`train.learning_rate` for the recipe with a constant tail: the warm-up and cosine decay
    end `tail` epochs early, at `fraction` x the peak rate, which then holds to the end."""

    def schedule(p, steps_per_epoch: int, replicas: int = 1):
        rate = stage_learning_rate(p, steps_per_epoch, replicas)
        # Keras' cosine decay holds `alpha` x the peak once its decay steps are done.
        rate.decay_steps = (p.epochs - p.warmup - tail) * steps_per_epoch
        rate.alpha = fraction
        return rate

    return schedule


class WeightAverage(keras.callbacks.Callback):
    """The mean of the model's weights at the end of each of the last `tail` epochs."""

    def __init__(self, epochs: int, tail: int):
        super().__init__()
        self.first, self.count, self.sums = epochs - tail, 0, None

    def on_epoch_end(self, epoch, logs=None):
        if epoch < self.first:
            return
        weights = [np.asarray(w, dtype=np.float64) for w in self.model.get_weights()]
        self.sums = weights if self.sums is None else [a + w for a, w in zip(self.sums, weights)]
        self.count += 1

    def apply(self, images: np.ndarray, batch_size: int) -> None:
        """Set the averaged weights, then each BatchNorm's moving statistics to the mean of its
        batch statistics over `images` with those weights (the live ones' no longer fit)."""
        self.model.set_weights([(s / self.count).astype(np.float32) for s in self.sums])
        # The trained network (`train` wraps the views only when it saves) has its layers flat.
        norm = keras.layers.BatchNormalization
        norms = [layer for layer in self.model.layers if isinstance(layer, norm)]
        momentum = {layer: layer.momentum for layer in norms}
        for layer in norms:
            layer.moving_mean.assign(tf.zeros_like(layer.moving_mean))
            layer.moving_variance.assign(tf.zeros_like(layer.moving_variance))
        for i, start in enumerate(range(0, len(images), batch_size), start=1):
            for layer in norms:
                layer.momentum = (i - 1) / i  # a running mean: batch i weighs 1/i
            self.model(inputs.preprocess(images[start : start + batch_size]), training=True)
        for layer, value in momentum.items():
            layer.momentum = value


def settings(run: dict) -> str:
    """What a logged run changed: its `-S` settings (or its recipe) and its teacher, if any."""
    text = " ".join(run["sets"]) or run["recipe"]
    teachers = run.get("teacher") or []  # logs from before --teacher have no such key
    # Logs from before an ensemble could teach name one teacher, as a string.
    for teacher in [teachers] if isinstance(teachers, str) else teachers:
        text += f" --teacher {teacher}"
    if teachers:
        text += f" --teacher-weight {run['teacher_weight']}"
    if run.get("swa_epochs"):
        text += f" --swa-epochs {run['swa_epochs']} --swa-rate {run['swa_rate']}"
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
    parser.add_argument(
        "--teacher", type=Path, action="append", help="a trained .keras model to distil (repeat)"
    )
    parser.add_argument(
        "--teacher-weight", type=float, default=0.5, help="with --teacher: its share of the target"
    )
    parser.add_argument(
        "--teacher-cache",
        type=Path,
        default=Path(".cache/teacher-probabilities"),
        help="with --teacher: where the teachers' scores are kept for the next run",
    )
    parser.add_argument(
        "--swa-epochs", type=int, default=0, help="average the weights of the last K epochs"
    )
    parser.add_argument(
        "--swa-rate", type=float, default=0.1, help="with --swa-epochs: their rate / the peak"
    )
    parser.add_argument("--save", type=Path, help="keep the trained model as this .keras file")
    add_set_option(parser, on_top_of="the recipe")
    args = parser.parse_args()
    if not 0.0 <= args.teacher_weight <= 1.0:
        parser.error("--teacher-weight must be between 0 and 1")
    if args.swa_epochs < 0 or not 0.0 < args.swa_rate <= 1.0:
        parser.error("--swa-epochs must be 0 or more, --swa-rate above 0 and at most 1")
    if args.save and not args.save.parent.is_dir():
        parser.error(f"--save {args.save}: no directory {args.save.parent} to save it in")
    if args.teacher:
        try:  # now, not after scoring the teachers for half an hour
            args.teacher_cache.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            parser.error(f"--teacher-cache {args.teacher_cache}: cannot create it ({exc.strerror})")
    if args.report:
        if not args.log.is_file():
            raise SystemExit(f"{args.log}: no such log; name one with --log (runs append to it)")
        runs = [json.loads(line) for line in args.log.read_text().splitlines() if line.strip()]
        return report(runs, args.plot)
    if not args.name:
        parser.error("name the run (or --report)")
    params = recipe_with_sets(args.recipe, args.set)
    p = params.train
    if args.swa_epochs and (p.schedule != "cosine" or args.swa_epochs > p.epochs - p.warmup - 1):
        parser.error("--swa-epochs needs train.schedule cosine, its warm-up and a decay")
    probe = machine.speed_probe()
    runtime = device.setup(params.train)
    splits = {name: load_split(args.data / f"{name}.npz") for name in ("train", "val", "test")}
    train_split, val_split, teacher_seconds = splits["train"], splits["val"], 0.0
    cache_file, cached = None, False
    if args.teacher:
        start = time.perf_counter()
        images, labels = train_split
        probs, cache_file, cached = teacher_probabilities(args.teacher, images, args.teacher_cache)
        smoothing = params.train.label_smoothing
        train_split = images, distillation_targets(probs, labels, args.teacher_weight, smoothing)
        val_split = val_split[0], np.eye(NUM_CLASSES, dtype=np.float32)[val_split[1]]
        teacher_seconds = time.perf_counter() - start
        # Soft targets take the one-hot form of the stage's loss; the smoothing is in them.
        train.loss = lambda p: "categorical_crossentropy"
    clock, extra = EpochClock(), []
    if args.swa_epochs:
        train.learning_rate = swa_learning_rate(args.swa_epochs, args.swa_rate)
        extra.append(WeightAverage(p.epochs, args.swa_epochs))
    start = time.perf_counter()
    model, epochs = train.train(params, train_split, val_split, [clock, *extra])
    seconds, swa_scores = time.perf_counter() - start, {}
    if args.swa_epochs:
        # The last epoch's weights first, for the comparison; then the average, whose
        # statistics pass counts as training.
        swa_scores = score_views(model, {"val": splits["val"]})
        start = time.perf_counter()
        extra[0].apply(splits["train"][0], params.train.batch_size)
        seconds += time.perf_counter() - start
    record = {
        "name": args.name,
        "recipe": args.recipe,
        "sets": args.set,
        "parameters": model.count_params(),
        "epochs": epochs,
        "cores": len(machine.usable_cores()),
        "train_seconds": round(seconds, 1),
        "teacher": [str(path) for path in args.teacher or []],
        "teacher_weight": args.teacher_weight if args.teacher else 0.0,
        "teacher_seconds": round(teacher_seconds, 1),
        "teacher_cache": str(cache_file) if cache_file else None,
        "teacher_cached": cached,
        "swa_epochs": args.swa_epochs,
        "swa_rate": args.swa_rate if args.swa_epochs else 0.0,
        "live_scores": swa_scores,  # with --swa-epochs: the last epoch's weights, unaveraged
        "precision": runtime["precision"],
        "probe_s": round(probe, 2),
        "machine": machine.describe(),
        "scores": score_views(model, {k: splits[k] for k in ("val", "test")}),
        "epoch_seconds": clock.seconds,
        "val_accuracy": clock.val_accuracy,
        "at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if args.save:
        saving.save_model(saving.for_inference(model, params.model), args.save)
        record["saved"] = str(args.save)
    with args.log.open("a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k not in ("epoch_seconds",)}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
