"""Training throughput: the pipeline's input path vs the seed notebook's plain `fit` on NumPy.

Same model, batch size and images for every method. Each timed run is one `fit` call of
several epochs, as training really runs (Keras makes a new input iterator every epoch, and
what happens between epochs counts). Each method runs with TensorFlow's oneDNN kernels off and
on (`--onednn`), a setting TensorFlow reads once per process: each round runs a new process
per setting, which times every method once. Rounds, settings and methods alternate so that
machine noise hits all alike. Prints images/s (median of the rounds), the ratio to plain `fit`
in TensorFlow's own oneDNN setting for this CPU (the notebook as it runs; in the other setting
when `--onednn` names only that one), both of the medians and round by round (the median of
the rounds' ratios, and their range), and the achieved fraction of the machine's peak in the
precision the method computes in, fp32 or bfloat16 (training ≈ 3 × the forward pass's FLOPs;
see `machine.flops_per_cycle`), nominal and as a share of a large matrix product measured on
the machine (`machine.gemm_gflops`).

    python3 benchmarks/throughput.py --recipe notebook --rounds 2
    python3 benchmarks/throughput.py --recipe default -S model.filters=[16,40,72] --onednn on

Methods:
  plain fit (NumPy)      the notebook: float64 arrays of pixel / 255, Keras' own batching, one
                         training step per call into TensorFlow
  pipeline, autotuned    this project's tf.data pipeline with tf.data's autotuning (TF default)
  pipeline               the pipeline as training runs it: fixed prefetch depth, no autotuning,
                         `train.STEPS_PER_EXECUTION` steps per call (all pipeline methods)
  pipeline, unaugmented  the same without the recipe's augmentation: what the random
                         transforms cost a training step
  pipeline + XLA         the same, compiled with XLA (`jit_compile=True`)
  pipeline, bfloat16     the same under mixed_bfloat16 (fast on CPUs with AMX or AVX-512 BF16)
  pipeline, bfloat16, Keras BatchNorm
                         the same with Keras' own BatchNormalization instead of the fused one
                         that training uses (`architectures.FusedBatchNormalization`; models with
                         BatchNorm only)

each with TensorFlow's oneDNN kernels off and on (the pipeline turns them on on x86-64).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import machine  # first: TensorFlow starts with the stages' oneDNN setting

# isort: split
import keras
import numpy as np

from fmnist import launch
from fmnist.dataset import IMAGE_SHAPE, load_split
from fmnist.errors import report_errors
from fmnist.model import architectures, saving
from fmnist.params import (
    ModelParams,
    Params,
    TrainParams,
)
from fmnist.stages import train
from fmnist.tools.recipe import add_set_option, recipe_with_sets
from fmnist.training import device, inputs

PLAIN = "plain fit (NumPy)"
KERAS_BN = "pipeline, bfloat16, Keras BatchNorm"
UNAUGMENTED = "pipeline, unaugmented"
METHODS = (
    PLAIN,
    "pipeline, autotuned",
    "pipeline",
    UNAUGMENTED,
    "pipeline + XLA",
    "pipeline, bfloat16",
    KERAS_BN,
)
ONEDNN = {"off": "0", "on": "1"}  # --onednn setting: TF_ENABLE_ONEDNN_OPTS


def compiled(
    m: ModelParams, p: TrainParams, steps: int, precision: str, jit: bool, keras_bn: bool
) -> keras.Model:
    """The model under `precision`, compiled as training compiles it (optionally with XLA, or
    with Keras' own BatchNormalization layers)."""
    with saving.dtype_policy(precision):
        model = architectures.build(m)
        if keras_bn:
            model = saving.keras_copy(model)
    train.compile_model(model, p, steps)
    model.jit_compile = jit
    return model


def precision(name: str) -> str:
    """What the method computes in: "bfloat16" (Keras' mixed_bfloat16 policy, whose
    convolutions and matrix products, nearly all the FLOPs, run in bfloat16) or "float32"."""
    return "bfloat16" if "bfloat16" in name else "float32"


def notebook_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 images as the seed notebook feeds them to `fit`: float64 pixel / 255,
    (N, 28, 28, 1)."""
    return (images / 255.0).reshape(-1, *IMAGE_SHAPE)


def method(
    name: str, m: ModelParams, p: TrainParams, images: np.ndarray, labels: np.ndarray
) -> Callable[[int], None]:
    """A function that trains a fresh model of the method for `epochs` epochs in one `fit`."""
    steps = inputs.steps_per_epoch(len(labels), p.batch_size)
    policy = "mixed_bfloat16" if precision(name) == "bfloat16" else "float32"
    model = compiled(m, p, steps, policy, jit="XLA" in name, keras_bn=name == KERAS_BN)
    done = 0

    if name == PLAIN:
        model.steps_per_execution = 1  # the notebook's `compile`: one step per call
        x = notebook_pixels(images)

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
    augment = p.augment if p.augment.enabled and name != UNAUGMENTED else None
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


def add_training_arguments(
    parser: argparse.ArgumentParser, recipe: str, images: int | None = 12_800
) -> None:
    """The arguments that `recipe()` and `method()` need: data, recipe, overrides, images
    (`images` per epoch by default; None: the whole training split)."""
    parser.add_argument("--data", type=Path, default=Path("data/prepared"))
    parser.add_argument(
        "--recipe", default=recipe, help="model, batch and augmentation (see `fmnist recipe`)"
    )
    add_set_option(parser, on_top_of="the recipe")
    parser.add_argument(
        "--images", type=int, default=images, help=f"images per epoch (default: {images or 'all'})"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_training_arguments(parser, recipe="notebook")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per timed fit")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument(
        "--onednn", nargs="+", default=list(ONEDNN), choices=ONEDNN, help="kernel settings"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def recipe(args: argparse.Namespace) -> Params:
    """The recipe's params with `--set` on top, trained in float32 (the bfloat16 methods set
    their own policy)."""
    params = recipe_with_sets(args.recipe, args.set)
    return dataclasses.replace(params, train=dataclasses.replace(params.train, precision="float32"))


def worker(args: argparse.Namespace) -> None:
    """One round in this process's kernel setting: each method warmed up, then timed once.
    Prints the seconds per method as JSON, last line of stdout."""
    params = recipe(args)
    images, labels = load_split(args.data / "train.npz")
    images, labels = images[: args.images], labels[: args.images]
    device.setup(params.train)
    fits = {name: method(name, params.model, params.train, images, labels) for name in args.methods}
    for fit in fits.values():
        fit(1)  # trace and warm up
    seconds = {}
    for name, fit in fits.items():
        start = time.perf_counter()
        fit(args.epochs)
        seconds[name] = time.perf_counter() - start
    print(json.dumps({"onednn": device.onednn_enabled(), "seconds": seconds}))


def run_worker(setting: str) -> dict:
    """A worker round in a new Python whose TensorFlow starts with oneDNN `setting`."""
    env = {**os.environ, launch.ONEDNN_VARIABLE: ONEDNN[setting], "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, __file__, *sys.argv[1:], "--worker"]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["onednn"] != (setting == "on"):
        raise RuntimeError(f"oneDNN {setting}: {launch.ONEDNN_VARIABLE} did not take effect")
    return result["seconds"]


def tensorflows_own_onednn_setting() -> str:
    """What TensorFlow itself picks on this CPU: in a new Python with the variable unset."""
    env = {k: v for k, v in os.environ.items() if k != launch.ONEDNN_VARIABLE}
    ask = "from fmnist.training import device\nprint(device.onednn_enabled())"
    out = subprocess.run(
        [sys.executable, "-c", ask], env=env, stdout=subprocess.PIPE, text=True, check=True
    )
    return "on" if out.stdout.split()[-1] == "True" else "off"


@report_errors
def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    params = recipe(args)
    p = params.train
    tf_default = tensorflows_own_onednn_setting()
    probe_before = machine.speed_probe()
    # Rounds alternate between the settings (and, inside a worker, between the methods), so
    # that machine noise hits all alike.
    seconds: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for setting in args.onednn:
            for name, t in run_worker(setting).items():
                seconds.setdefault((name, setting), []).append(t)

    flops = 3 * machine.forward_flops(architectures.build(params.model))
    kinds = ("float32", "bfloat16")
    peaks = {kind: machine.peak_gflops(kind) for kind in kinds}
    gemms = {kind: machine.gemm_gflops(kind) for kind in kinds}
    print(f"machine: {machine.describe()} (before the runs: {probe_before:.2f} s)")
    print(
        f"recipe {args.recipe}: model {params.model.arch} {list(params.model.filters)}, batch "
        f"{p.batch_size}, augmentation {'on' if p.augment.enabled else 'off'}; "
        f"{args.images:,} images × {args.epochs} epochs per timed fit, {args.rounds} rounds"
    )
    print(
        f"training FLOPs per image ≈ {flops / 1e6:.1f} M; peaks: "
        + "; ".join(
            f"{kind} {how}" + (f" = {peak:.0f} GFLOP/s" if peak else "")
            for kind, (peak, how) in peaks.items()
        )
        + "; a 2048² GEMM measured here: "
        + "; ".join(f"{kind} {rate:.0f} GFLOP/s" for kind, rate in gemms.items())
    )
    pipeline_setting = os.environ.get(launch.ONEDNN_VARIABLE, "unset")
    print(
        f"oneDNN kernels: TensorFlow's own setting on this CPU: {tf_default}; the pipeline's: "
        f"{launch.ONEDNN_VARIABLE}={pipeline_setting} (what the stages inherit from here)"
    )
    print()
    # The notebook as it runs: plain fit in TensorFlow's own setting (or in the one that ran).
    setting = tf_default if (PLAIN, tf_default) in seconds else args.onednn[0]
    reference_key = (PLAIN, setting)
    reference_name = f"{PLAIN}, oneDNN {setting}"
    header = ("method", "oneDNN", "images/s (median)", "min-max", f"× {reference_name}")
    header += ("× per round: median (min-max)", "GFLOP/s", "% of the peak (its precision)")
    header += ("% of the GEMM",)
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("-" * (len(h) + 2) for h in header) + "|")
    # rates[key][r] is round r's: a ratio within a round compares runs minutes apart, not
    # the whole benchmark apart, so it is the one less exposed to the host's changes of speed.
    rates = {key: [args.images * args.epochs / t for t in times] for key, times in seconds.items()}
    reference = rates.get(reference_key)
    for (name, setting), rate in rates.items():
        median = statistics.median(rate)
        gflops = median * flops / 1e9
        peak, _ = peaks[precision(name)]
        share = f"{100 * gflops / peak:.1f} ({precision(name)})" if peak else "n/a"
        of_gemm = 100 * gflops / gemms[precision(name)]
        ratio = per_round = "n/a"
        if reference:
            ratio = f"{median / statistics.median(reference):.2f}"
            rounds = [r / ref for r, ref in zip(rate, reference, strict=True)]
            per_round = f"{statistics.median(rounds):.2f} ({min(rounds):.2f}-{max(rounds):.2f})"
        print(
            f"| {name:<19} | {setting:>6} | {median:>17,.0f} | "
            f"{min(rate):>6,.0f}-{max(rate):<6,.0f} | {ratio:>{len(header[4])}} | "
            f"{per_round:>{len(header[5])}} | {gflops:>7.1f} | {share:>{len(header[7])}} | "
            f"{of_gemm:>{len(header[8])}.1f} |"
        )


if __name__ == "__main__":
    sys.exit(main())
