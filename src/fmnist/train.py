"""Stage `train`: fit the model named in params on the prepared data, logging with DVCLive.

Writes the model (`models/model.keras`), the per-epoch log (`metrics/train/`) and a record of
the run (`metrics/train.json`: device, precision, TensorFlow version, epochs, time, speed).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import keras

from fmnist import atomic, device, history, inputs, models, resume
from fmnist.dataset import Split, load_split
from fmnist.errors import report_errors
from fmnist.params import Params, TrainParams, load_params


def compile_model(model: keras.Model, p: TrainParams) -> None:
    """Adam and sparse categorical cross-entropy, as both seeds use."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=p.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
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


def train(
    params: Params,
    train_split: Split,
    val_split: Split,
    extra_callbacks: list | None = None,
    checkpoint: resume.Checkpoint | None = None,
) -> tuple[keras.Model, int]:
    """Build, compile and fit the model; return it with the number of epochs it has trained.

    With a `checkpoint`, the state after each epoch is saved, and training continues from the
    state it was given, if any.
    """
    p = params.train
    model = models.build(params.model)
    compile_model(model, p)
    schedule = schedule_callbacks(p)
    callbacks = [*schedule, *(extra_callbacks or [])]
    done, first = 0, 0
    if checkpoint is not None:
        checkpoint.track(schedule)
        callbacks.append(checkpoint)  # last: it saves what the others did in the epoch
        done = checkpoint.epochs_done
        first = p.epochs if checkpoint.stopped else done
    train_ds, steps = inputs.training_dataset(
        *train_split, p.batch_size, p.seed, range(first, p.epochs), p.augment
    )
    val_ds = inputs.dataset(*val_split, p.batch_size)
    fit = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=p.epochs,
        initial_epoch=first,
        steps_per_epoch=steps,
        callbacks=callbacks,
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
    parser.add_argument("--record", type=Path, default=Path("metrics/train.json"))
    # Outside DVC's outputs, which DVC deletes before the stage runs (git-ignored).
    parser.add_argument("--backup-dir", type=Path, default=Path(".cache/train-backup"))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    train_split, val_split = load_split(args.data / "train.npz"), load_split(args.data / "val.npz")
    runtime = device.setup(params.train)
    print(f"train: {params.model.arch} on {runtime['device']}, precision {runtime['precision']}")

    data_files = [args.data / "train.npz", args.data / "val.npz"]
    backup = args.backup_dir / resume.fingerprint(params, data_files)
    saved = resume.load(backup)
    if saved is not None:
        # DVC deleted the log with the other outputs. The backup holds it as of its epoch,
        # consistent with the weights; `persist: true` in dvc.yaml would instead keep whatever
        # log was there, including one from an earlier, finished run.
        resume.restore_log(saved, args.live_dir)
        print(f"train: resuming after epoch {saved.epochs_done} from {backup}")
    live = history.open_log(args.live_dir, resume=saved is not None)
    if saved is not None:
        live.step = saved.epochs_done  # DVCLive cannot tell "one step logged" from "none"
    start = time.perf_counter()
    checkpoint = resume.Checkpoint(backup, args.live_dir, saved)
    model, epochs = train(params, train_split, val_split, [history.EpochLogger(live)], checkpoint)
    seconds = time.perf_counter() - start
    live.end()

    models.save_model(model, args.model)
    resumed_at = 0 if saved is None else saved.epochs_done
    record = {
        **runtime,
        "parameters": model.count_params(),
        "epochs_run": epochs,
        "resumed_after_epoch": resumed_at,
        # Time and speed of this process only (a resumed run's epochs after the resume).
        "train_seconds": round(seconds, 1),
        "images_per_second": round((epochs - resumed_at) * len(train_split[1]) / seconds, 1),
    }
    atomic.write_json(args.record, record)
    shutil.rmtree(backup, ignore_errors=True)
    print(f"train: {epochs} epochs in {seconds:.0f} s; model written to {args.model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
