"""Stage `train`: fit the model named in params on the prepared data, logging with DVCLive.

Writes the model (`models/model.keras`), the per-epoch log (`metrics/train/`) and a record of
the run (`metrics/train.json`: device, precision, TensorFlow version, epochs, time, speed).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import keras

from fmnist import atomic, device, history, inputs, models
from fmnist.dataset import Split, load_split
from fmnist.errors import report_errors
from fmnist.params import Params, TrainParams, load_params


def learning_rate(
    p: TrainParams, steps_per_epoch: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The constant rate (plateau: callbacks cut it) or the warm-up + cosine schedule."""
    if p.schedule == "plateau":
        return p.learning_rate
    warmup = p.warmup_epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=p.learning_rate / 100 if warmup else p.learning_rate,
        decay_steps=(p.epochs - p.warmup_epochs) * steps_per_epoch,
        warmup_target=p.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def compile_model(model: keras.Model, p: TrainParams, steps_per_epoch: int) -> None:
    """Adam (AdamW with weight decay) and sparse categorical cross-entropy, as the seeds use."""
    rate = learning_rate(p, steps_per_epoch)
    if p.weight_decay:
        optimizer = keras.optimizers.AdamW(learning_rate=rate, weight_decay=p.weight_decay)
    else:
        optimizer = keras.optimizers.Adam(learning_rate=rate)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])


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


def train(
    params: Params, train_split: Split, val_split: Split, extra_callbacks: list | None = None
) -> tuple[keras.Model, keras.callbacks.History]:
    """Build, compile and fit the model; return it with its Keras history."""
    p = params.train
    steps = inputs.steps_per_epoch(len(train_split[1]), p.batch_size)
    model = models.build(params.model)
    compile_model(model, p, steps)
    counter = inputs.EpochCounter()
    augment = p.augment if p.augment.enabled else None
    train_ds = inputs.training_dataset(*train_split, p.batch_size, p.seed, counter.epoch, augment)
    val_ds = inputs.dataset(*val_split, p.batch_size)
    fit = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=p.epochs,
        # The counter first: the epoch's batches are drawn after it has published the epoch.
        callbacks=[counter, *schedule_callbacks(p), *(extra_callbacks or [])],
        verbose=2,
    )
    return model, fit


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", type=Path, default=Path("data/prepared"))
    parser.add_argument("--model", type=Path, default=Path("models/model.keras"))
    parser.add_argument("--live-dir", type=Path, default=Path("metrics/train"))
    parser.add_argument("--record", type=Path, default=Path("metrics/train.json"))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    train_split, val_split = load_split(args.data / "train.npz"), load_split(args.data / "val.npz")
    runtime = device.setup(params.train)
    print(f"train: {params.model.arch} on {runtime['device']}, precision {runtime['precision']}")

    live = history.open_log(args.live_dir)
    start = time.perf_counter()
    model, fit = train(params, train_split, val_split, [history.EpochLogger(live)])
    seconds = time.perf_counter() - start
    live.end()

    models.save_model(model, args.model)
    epochs = len(fit.history["loss"])
    record = {
        **runtime,
        "parameters": model.count_params(),
        "epochs_run": epochs,
        "train_seconds": round(seconds, 1),
        "images_per_second": round(epochs * len(train_split[1]) / seconds, 1),
    }
    atomic.write_json(args.record, record)
    print(f"train: {epochs} epochs in {seconds:.0f} s; model written to {args.model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
