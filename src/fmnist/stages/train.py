"""Stage `train`: fit the model named in params on the prepared data, logging with DVCLive.

Writes the model (`models/model.keras`), the per-epoch log (`metrics/train/`), the model's
numbers as a metric (`metrics/train.json`: parameters, epochs), the record of how the run made
it (`metrics/runs/train.json`: device, strategy, replicas, precision, versions, epochs) and its
time and speed (`metrics/runs/train_speed.json`; see `fmnist.training.device`). On several
devices or workers it trains with the `tf.distribute` strategy that `train.distribute` selects
(see `fmnist.training.distribute`); only the chief writes those outputs.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import tempfile
import time
from pathlib import Path

import keras
import tensorflow as tf

from fmnist import atomic, provenance
from fmnist.dataset import Split, load_split
from fmnist.errors import PipelineError, report_errors
from fmnist.model import architectures, saving, tta
from fmnist.params import Params, TrainParams, load_params, params_to_dict
from fmnist.serving.layout import PARAMS_FILE, load_package
from fmnist.training import device, distribute, history, inputs, resume

# Training steps per call into TensorFlow (Keras' `steps_per_execution`): the same steps in the
# same order, so the same weights to the bit, with less Python between steps, which pays where
# steps are short (docs/measurements.md). Under a tf.distribute strategy training keeps one step
# per call: Keras 3.15's multi-step loop fails under MultiWorkerMirroredStrategy ("You must feed
# a value for placeholder tensor ...").
STEPS_PER_EXECUTION = 50


def learning_rate(
    p: TrainParams, steps_per_epoch: int, replicas: int = 1
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The constant rate (plateau: callbacks cut it) or the warm-up + cosine schedule.

    The peak rate is `train.learning_rate`, scaled by the replicas when
    `train.scale_lr_with_replicas` is on.
    """
    peak = distribute.scaled_learning_rate(p.learning_rate, replicas, p.scale_lr_with_replicas)
    if p.schedule == "plateau":
        return peak
    warmup = p.warmup * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=peak / 100 if warmup else peak,
        decay_steps=(p.epochs - p.warmup) * steps_per_epoch,
        warmup_target=peak if warmup else None,
        warmup_steps=warmup,
    )


@keras.saving.register_keras_serializable(package="fmnist")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of integer labels smoothed towards uniform, as Keras'
    `CategoricalCrossentropy(label_smoothing=...)` computes it for one-hot labels."""

    def __init__(self, smoothing: float, name: str = "smoothed_sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smoothing = smoothing

    def call(self, y_true, y_pred):
        classes = keras.ops.shape(y_pred)[-1]
        one_hot = keras.ops.one_hot(keras.ops.reshape(y_true, [-1]), classes, dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, label_smoothing=self.smoothing
        )

    def get_config(self) -> dict:
        return {**super().get_config(), "smoothing": self.smoothing}


def loss(p: TrainParams) -> str | keras.losses.Loss:
    """Sparse categorical cross-entropy, as the seeds use; smoothed if `train.label_smoothing`."""
    if p.label_smoothing:
        return SmoothedSparseCrossentropy(p.label_smoothing)
    return "sparse_categorical_crossentropy"


def compile_model(
    model: keras.Model, p: TrainParams, steps_per_epoch: int, replicas: int = 1
) -> None:
    """Adam (AdamW with weight decay) and the `loss` above."""
    rate = learning_rate(p, steps_per_epoch, replicas)
    if p.weight_decay:
        optimizer = keras.optimizers.AdamW(learning_rate=rate, weight_decay=p.weight_decay)
        if not p.decay_norms_and_biases:
            # Keras matches these against each variable's own name, before the first step.
            optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    else:
        optimizer = keras.optimizers.Adam(learning_rate=rate)
    model.compile(
        optimizer=optimizer,
        loss=loss(p),
        metrics=["accuracy"],
        steps_per_execution=1 if tf.distribute.has_strategy() else STEPS_PER_EXECUTION,
    )


def schedule_callbacks(p: TrainParams) -> list[keras.callbacks.Callback]:
    """EarlyStopping and ReduceLROnPlateau as params configure them (patience 0: off)."""
    callbacks = []
    es, lr = p.early_stopping, p.reduce_lr
    if es.patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=es.monitor,
                patience=es.patience,
                restore_best_weights=es.restore_best_weights,
                verbose=1,
            )
        )
    if lr.patience:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=lr.monitor,
                factor=lr.factor,
                patience=lr.patience,
                min_lr=lr.min_lr,
                verbose=1,
            )
        )
    return callbacks


def warm_start(model: keras.Model, parent_dir: Path, params: Params, ref: str) -> None:
    """Give the built `model` the weights of the network in the parent package at `parent_dir`
    (the `parent` stage fetched it for `train.init_from` = `ref`); a network of another
    architecture fails, naming the params that differ."""
    parent, meta = load_package(parent_dir)
    weights = tta.network(parent).get_weights()
    shapes = [w.shape for w in model.get_weights()]
    if [w.shape for w in weights] != shapes:
        theirs = meta[PARAMS_FILE].get("model", {})
        ours = params_to_dict(params.model)
        differ = [f"model.{k}: {theirs.get(k)!r} there, {v!r} here"
                  for k, v in ours.items() if theirs.get(k) != v]  # fmt: skip
        raise PipelineError(
            f"train.init_from: {ref} has another architecture than model.* here "
            f"({'; '.join(differ) or 'layer shapes differ'}): set the same model params, or "
            'train.init_from: "" to train from scratch'
        )
    model.set_weights(weights)


def train(
    params: Params,
    train_split: Split,
    val_split: Split,
    extra_callbacks: list | None = None,
    strategy: tf.distribute.Strategy | None = None,
    checkpoint: resume.Checkpoint | None = None,
    parent_dir: Path | None = None,
) -> tuple[keras.Model, int]:
    """Build, compile and fit the model under `strategy` (default: TensorFlow's default one).

    Returns the model and the number of epochs it has trained. With a `checkpoint`, the state
    after each epoch is saved, and training continues from the state it was given, if any.
    With a `parent_dir` (a warm start), training starts from that package's weights.
    """
    p = params.train
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    batch = distribute.global_batch_size(p.batch_size, replicas)
    steps = inputs.steps_per_epoch(len(train_split[1]), batch)
    # Variables created in the scope are mirrored on every replica and kept in sync.
    with strategy.scope():
        model = architectures.build(params.model, replicas)
        if parent_dir is not None:
            warm_start(model, parent_dir, params, p.init_from)
        compile_model(model, p, steps, replicas)
    counter = inputs.EpochCounter()
    augment = p.augment if p.augment.enabled else None
    train_ds = inputs.training_dataset(*train_split, batch, p.seed, counter.epoch, augment)
    train_ds = distribute.shard_by_data(train_ds)
    val_ds = distribute.shard_by_data(inputs.dataset(*val_split, batch))
    schedule = schedule_callbacks(p)
    # The counter first: the epoch's batches are drawn after it has published the epoch.
    callbacks = [counter, *schedule, *(extra_callbacks or [])]
    done = first = 0
    if checkpoint is not None:
        checkpoint.track(schedule)
        callbacks.append(checkpoint)  # last: it saves what the others did in the epoch
        done = checkpoint.epochs_done
        first = p.epochs if checkpoint.stopped else done
    fit = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=p.epochs,
        initial_epoch=first,
        callbacks=callbacks,
        shuffle=False,  # the dataset shuffles itself, by (seed, epoch)
        verbose=2,
    )
    return model, done + len(fit.history.get("loss", []))


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", type=Path, default=Path("data/prepared"))
    parser.add_argument("--model", type=Path, default=Path("models/model.keras"))
    parser.add_argument("--live-dir", type=Path, default=Path("metrics/train"))
    parser.add_argument(
        "--metrics",
        type=Path,
        default=Path("metrics/train.json"),
        help="the model's numbers (parameters, epochs), a DVC metric",
    )
    parser.add_argument(
        "--record",
        type=Path,
        default=Path("metrics/runs/train.json"),
        help="the record of how the run made the model: device, precision, versions",
    )
    parser.add_argument(
        "--speed",
        type=Path,
        default=Path("metrics/runs/train_speed.json"),
        help="the run's time and speed, apart: they change on every run",
    )
    parser.add_argument(
        "--provenance",
        type=Path,
        default=Path("metrics/provenance/train.json"),
        help="the params and code this run used (fmnist.provenance)",
    )
    parser.add_argument(
        "--parent",
        type=Path,
        default=Path("models/parent"),
        help="the package the `parent` stage fetched for train.init_from (warm start)",
    )
    # Outside DVC's outputs, which DVC deletes before the stage runs (git-ignored).
    parser.add_argument("--backup-dir", type=Path, default=Path(".cache/train-backup"))
    parser.add_argument(
        "--worker-dir",
        type=Path,
        help="where a non-chief worker writes its copy of the outputs (default: a temporary "
        "directory, removed at the end)",
    )
    args = parser.parse_args(argv)
    params = load_params(args.params)
    # The strategy before any other TensorFlow op: a multi-worker one configures the runtime.
    strategy, cluster, placement = distribute.setup(params.train.distribute)
    train_split, val_split = load_split(args.data / "train.npz"), load_split(args.data / "val.npz")
    runtime = {**device.setup(params.train), **placement}
    parent = parent_record(args.parent, params.train.init_from)
    print(
        f"train: {params.model.arch} on {runtime['device']}, precision {runtime['precision']}, "
        f"strategy {runtime['distribute']} ({runtime['replicas']} replicas)"
    )
    data_files = [args.data / "train.npz", args.data / "val.npz"]
    fingerprint = resume.fingerprint(params, data_files)
    run = functools.partial(
        fit_and_write, params, strategy, train_split, val_split, runtime, args.parent, parent
    )
    if cluster.is_chief:
        status = run(
            args.model,
            args.live_dir,
            args.metrics,
            args.record,
            args.speed,
            args.backup_dir / fingerprint,
        )
        provenance.write(args.provenance, "train", params)
        return status
    # Every worker runs the same steps, saving included, in lockstep; only the chief's are kept.
    with contextlib.ExitStack() as stack:
        scratch = args.worker_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="fmnist-worker-"))
        )
        return run(
            scratch / "model.keras",
            scratch / "train",
            scratch / "train.json",
            scratch / "runs" / "train.json",
            scratch / "runs" / "train_speed.json",
            scratch / "backup",
        )


def parent_record(parent_dir: Path, init_from: str) -> dict:
    """The `parent` stage's record of what it fetched (`models/parent.json` for the package in
    `models/parent/`); it must be for the `train.init_from` of these params."""
    if not init_from:
        return {"init_from": ""}
    record_path = parent_dir.with_suffix(".json")
    record = atomic.read_json(record_path, "parent")
    if record.get("init_from") != init_from:
        raise PipelineError(
            f"{record_path} is for train.init_from {record.get('init_from')!r}, the params "
            f"say {init_from!r}: run `dvc repro parent`"
        )
    return record


def fit_and_write(
    params: Params,
    strategy: tf.distribute.Strategy,
    train_split: Split,
    val_split: Split,
    runtime: dict,
    parent_dir: Path,
    parent: dict,
    model_path: Path,
    live_dir: Path,
    metrics_path: Path,
    record_path: Path,
    speed_path: Path,
    backup: Path,
) -> int:
    """Train with a DVCLive log in `live_dir`, resuming from `backup` if a killed run left one;
    write the model, its numbers, the run's record and its speed."""
    saved = resume.load(backup)
    if saved is not None:
        # DVC deleted the log with the other outputs. The backup holds it as of its epoch,
        # consistent with the weights; `persist: true` in dvc.yaml would instead keep whatever
        # log was there, including one from an earlier, finished run.
        resume.restore_log(saved, live_dir)
        print(f"train: resuming after epoch {saved.epochs_done} from {backup}")
    live = history.open_log(live_dir, resume=saved is not None)
    if saved is not None:
        live.step = saved.epochs_done  # DVCLive cannot tell "one step logged" from "none"
    checkpoint = resume.Checkpoint(backup, live_dir, saved)
    start = time.perf_counter()
    model, epochs = train(
        params,
        train_split,
        val_split,
        [history.EpochLogger(live)],
        strategy,
        checkpoint,
        parent_dir if parent["init_from"] else None,
    )
    seconds = time.perf_counter() - start
    live.end()

    saving.save_model(saving.for_inference(model, params.model), model_path)
    resumed_at = 0 if saved is None else saved.epochs_done
    p, replicas = params.train, runtime["replicas"]
    record = device.training_record(
        runtime,
        global_batch_size=distribute.global_batch_size(p.batch_size, replicas),
        learning_rate=distribute.scaled_learning_rate(
            p.learning_rate, replicas, p.scale_lr_with_replicas
        ),
        parameters=model.count_params(),
        epochs_run=epochs,
        resumed_after_epoch=resumed_at,
    )
    atomic.write_json(metrics_path, device.model_metrics(record))
    # The registered version the weights started from (train.init_from), or None.
    record["parent"] = parent if parent["init_from"] else None
    atomic.write_json(record_path, record)
    speed = device.speed_record(seconds, (epochs - resumed_at) * len(train_split[1]))
    atomic.write_json(speed_path, speed)
    atomic.remove(backup)  # with a write a kill cut short
    print(f"train: {epochs} epochs in {seconds:.0f} s; model written to {model_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
