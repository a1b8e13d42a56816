"""Training throughput: the pipeline's input path vs the seed notebook's plain `fit` on NumPy.

Same model, batch size and images; timed epochs alternate between the two so that machine
noise hits both alike. Prints images/s (median of the rounds), the ratio, and the achieved
fraction of the machine's fp32 peak (training ≈ 3 × the forward pass's FLOPs).

    python3 benchmarks/throughput.py --data data/prepared --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import keras
import tensorflow as tf

import machine
from fmnist import device, inputs, models, train
from fmnist.dataset import load_split
from fmnist.params import ModelParams, TrainParams


def timed_epoch(fit) -> float:
    start = time.perf_counter()
    fit()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/prepared"))
    parser.add_argument("--arch", default="gap_cnn")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--images", type=int, default=19_200, help="images per timed epoch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", default="float32")
    args = parser.parse_args()

    images, labels = load_split(args.data / "train.npz")
    images, labels = images[: args.images], labels[: args.images]
    p = TrainParams(batch_size=args.batch, precision=args.precision)
    device.setup(p)
    steps = inputs.steps_per_epoch(len(labels), args.batch)

    def compiled() -> keras.Model:
        model = models.build(ModelParams(arch=args.arch))
        train.compile_model(model, p, steps)
        return model

    # The notebook: float64 arrays of pixel / 255, Keras' own batching and shuffling.
    plain_model, plain_x = compiled(), (images / 255.0).reshape(-1, 28, 28, 1)
    plain = lambda: plain_model.fit(plain_x, labels, batch_size=args.batch, epochs=1, verbose=0)  # noqa: E731
    # The pipeline: uint8 in memory, epoch-seeded order, batches scaled in tf.data.
    counter = inputs.EpochCounter()
    pipe_model = compiled()
    pipe_ds = inputs.training_dataset(images, labels, args.batch, 42, counter.epoch)
    pipeline = lambda: pipe_model.fit(pipe_ds, epochs=1, verbose=0, callbacks=[counter])  # noqa: E731

    plain(), pipeline()  # trace and warm up both
    seconds = {"plain fit (NumPy)": [], "pipeline (tf.data)": []}
    for _ in range(args.rounds):
        seconds["plain fit (NumPy)"].append(timed_epoch(plain))
        seconds["pipeline (tf.data)"].append(timed_epoch(pipeline))

    flops = 3 * machine.forward_flops(pipe_model)
    peak, peak_how = machine.fp32_peak_gflops()
    print(f"machine: {machine.describe()}")
    print(
        f"model {args.arch} ({pipe_model.count_params():,} params), batch {args.batch}, "
        f"{len(labels):,} images per epoch, {args.rounds} rounds, precision {args.precision}"
    )
    print(
        f"training FLOPs per image ≈ {flops / 1e6:.1f} M; fp32 peak = {peak_how}"
        + (f" = {peak:.0f} GFLOP/s" if peak else "")
    )
    print()
    header = ("method", "images/s (median)", "min-max", "GFLOP/s", "% fp32 peak")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("-" * (len(h) + 2) for h in header) + "|")
    rates = {}
    for name, times in seconds.items():
        rate = [len(labels) / t for t in times]
        rates[name] = statistics.median(rate)
        gflops = rates[name] * flops / 1e9
        share = f"{100 * gflops / peak:.1f}" if peak else "n/a"
        print(
            f"| {name:<20} | {rates[name]:>17,.0f} | {min(rate):>6,.0f}-{max(rate):<6,.0f} | "
            f"{gflops:>7.1f} | {share:>11} |"
        )
    ratio = rates["pipeline (tf.data)"] / rates["plain fit (NumPy)"]
    print(f"\npipeline / plain fit = {ratio:.2f}x")
    tf.keras.backend.clear_session()


if __name__ == "__main__":
    main()
