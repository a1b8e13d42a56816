"""Training throughput: the pipeline's input path vs the seed notebook's plain `fit` on NumPy.

Same model, batch size and images for every method. Each timed run is one `fit` call of
several epochs, as training really runs (Keras makes a new input iterator every epoch, and
what happens between epochs counts). Runs alternate between the methods so that machine noise
hits all alike. Prints images/s (median of the rounds), the ratio to plain `fit`, and the
achieved fraction of the machine's fp32 peak (training ≈ 3 × the forward pass's FLOPs).

    python3 benchmarks/throughput.py --recipe notebook --rounds 2

Methods:
  plain fit (NumPy)      the notebook: float64 arrays of pixel / 255, Keras' own batching
  pipeline, autotuned    this project's tf.data pipeline with tf.data's autotuning (TF default)
  pipeline               the pipeline as training runs it: fixed prefetch depth, no autotuning
  pipeline + XLA         the same, compiled with XLA (`jit_compile=True`)
  pipeline, bfloat16     the same under mixed_bfloat16 (fast only on CPUs with AMX)
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import machine
from fmnist import device, inputs, models, recipes, train
from fmnist.dataset import load_split
from fmnist.params import ModelParams, TrainParams, load_params, params_to_dict

PLAIN = "plain fit (NumPy)"
METHODS = (PLAIN, "pipeline, autotuned", "pipeline", "pipeline + XLA", "pipeline, bfloat16")


def compiled(m: ModelParams, p: TrainParams, steps: int, precision: str, jit: bool) -> keras.Model:
    """The model under `precision`, compiled as training compiles it (optionally with XLA)."""
    keras.mixed_precision.set_global_policy(precision)
    try:
        model = models.build(m)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    train.compile_model(model, p, steps)
    model.jit_compile = jit
    return model


def method(
    name: str, m: ModelParams, p: TrainParams, images: np.ndarray, labels: np.ndarray
) -> Callable[[int], None]:
    """A function that trains a fresh model of the method for `epochs` epochs in one `fit`."""
    steps = inputs.steps_per_epoch(len(labels), p.batch_size)
    precision = "mixed_bfloat16" if "bfloat16" in name else "float32"
    model = compiled(m, p, steps, precision, jit="XLA" in name)
    done = 0

    if name == PLAIN:
        x = (images / 255.0).reshape(-1, 28, 28, 1)

        def fit(epochs: int) -> None:
            nonlocal done
            model.fit(
                x,
                labels,
                batch_size=p.batch_size,
                initial_epoch=done,
                epochs=done + epochs,
                verbose=0,
            )
            done += epochs

        return fit

    counter = inputs.EpochCounter()
    augment = p.augment if p.augment.enabled else None
    ds = inputs.training_dataset(
        images, labels, p.batch_size, p.seed, counter.epoch, augment, autotune="autotuned" in name
    )

    def fit(epochs: int) -> None:
        nonlocal done
        model.fit(
            ds,
            initial_epoch=done,
            epochs=done + epochs,
            verbose=0,
            callbacks=[counter],
            shuffle=False,
        )
        done += epochs

    return fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/prepared"))
    parser.add_argument(
        "--recipe", default="notebook", help="model, batch and augmentation (see `fmnist recipe`)"
    )
    parser.add_argument("--images", type=int, default=12_800, help="images per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per timed fit")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = parser.parse_args()

    params = recipes.recipe_params(
        args.recipe, recipes.load_recipes(), params_to_dict(load_params("params.yaml"))
    )
    p = dataclasses.replace(params.train, precision="float32")
    images, labels = load_split(args.data / "train.npz")
    images, labels = images[: args.images], labels[: args.images]
    device.setup(p)
    probe_before = machine.speed_probe()
    fits = {name: method(name, params.model, p, images, labels) for name in args.methods}
    for fit in fits.values():
        fit(1)  # trace and warm up
    seconds: dict[str, list[float]] = {name: [] for name in fits}
    for _ in range(args.rounds):
        for name, fit in fits.items():
            start = time.perf_counter()
            fit(args.epochs)
            seconds[name].append(time.perf_counter() - start)

    flops = 3 * machine.forward_flops(models.build(params.model))
    peak, peak_how = machine.fp32_peak_gflops()
    print(f"machine: {machine.describe()} (before the runs: {probe_before:.2f} s)")
    print(
        f"recipe {args.recipe}: model {params.model.arch} {list(params.model.filters)}, batch "
        f"{p.batch_size}, augmentation {'on' if p.augment.enabled else 'off'}; "
        f"{len(labels):,} images × {args.epochs} epochs per timed fit, {args.rounds} rounds"
    )
    print(
        f"training FLOPs per image ≈ {flops / 1e6:.1f} M; fp32 peak = {peak_how}"
        + (f" = {peak:.0f} GFLOP/s" if peak else "")
    )
    print()
    header = ("method", "images/s (median)", "min-max", f"× {PLAIN}", "GFLOP/s", "% fp32 peak")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("-" * (len(h) + 2) for h in header) + "|")
    rates = {
        name: [len(labels) * args.epochs / t for t in times] for name, times in seconds.items()
    }
    reference = statistics.median(rates[PLAIN]) if PLAIN in rates else None
    for name, rate in rates.items():
        median = statistics.median(rate)
        gflops = median * flops / 1e9
        share = f"{100 * gflops / peak:.1f}" if peak else "n/a"
        ratio = f"{median / reference:.2f}" if reference else "n/a"
        print(
            f"| {name:<19} | {median:>17,.0f} | {min(rate):>6,.0f}-{max(rate):<6,.0f} | "
            f"{ratio:>{len(PLAIN) + 2}} | {gflops:>7.1f} | {share:>11} |"
        )
    tf.keras.backend.clear_session()


if __name__ == "__main__":
    main()
