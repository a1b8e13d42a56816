"""Training speed of candidate networks, side by side in one process, rounds alternated.

Each candidate is a layer spec: `cN` a 3x3 convolution with N filters, no bias, then the fused
BatchNorm and ReLU training uses (`architectures.FusedBatchNormalization`); `p` a 2x2 max
pooling; `cNp` the convolution, the pooling, then BatchNorm and ReLU on the smaller map. The
head is always global average pooling and the softmax classifier. Every candidate trains on
the same images through the training input pipeline (augmentation as params.yaml sets it),
compiled as training compiles it, at the batch size given with `@B` (default 128). `@B/R`
splits the CPU into R logical devices and trains with `MirroredStrategy` over them, B/R images
per replica: data parallelism inside one process, whose replicas' ops the runtime may run side by
side (with `TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=2`, one core each):

    python3 benchmarks/arch_speed.py "c16 c16 p c48 c48 p c64 c64" "c16 p c48 c48 p c64 c64"
    python3 benchmarks/arch_speed.py "c16 c16 p c48 c48 p c64 c64@256" --rounds 5
    TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=2 python3 benchmarks/arch_speed.py \
        "c16 c16 p c48 c48 p c64 c64" "c16 c16 p c48 c48 p c64 c64@128/2"

Prints parameters, forward multiply-adds, images/s (median of the rounds) and the ratio to
the first candidate per round (median and range), by the wall clock and per CPU second of this
process (all its threads): ratios taken minutes apart in one process hold on a shared machine
where absolute figures do not, and the CPU seconds count the work when other processes take
turns on the cores.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

import machine  # first: TensorFlow starts with the stages' oneDNN setting

# isort: split
import keras
import tensorflow as tf
from keras import layers

from fmnist.dataset import IMAGE_SHAPE, NUM_CLASSES, load_split
from fmnist.errors import report_errors
from fmnist.model.architectures import FusedBatchNormalization
from fmnist.params import load_params
from fmnist.stages import train
from fmnist.training import device, inputs

SPEC = re.compile(r"(?P<layers>[^@]*)(?:@(?P<batch>\d+)(?:/(?P<replicas>\d+))?)?")
LAYER = re.compile(r"p|c[1-9]\d*p?")


def parse_spec(spec: str) -> tuple[str, int, int]:
    """(layers, global batch, replicas) of a candidate `LAYERS[@B[/R]]`; ValueError names what
    is wrong."""
    match = SPEC.fullmatch(spec)
    if not match:
        raise ValueError(f"{spec!r}: expected LAYERS, LAYERS@BATCH or LAYERS@BATCH/REPLICAS")
    tokens = match["layers"].split()
    unknown = [token for token in tokens if not LAYER.fullmatch(token)]
    if not tokens or unknown:
        found = f"unknown layer {unknown[0]!r}" if unknown else "no layers"
        raise ValueError(f"{spec!r}: {found} (cN, cNp or p, N >= 1)")
    batch, replicas = int(match["batch"] or 128), int(match["replicas"] or 1)
    if batch < 1 or replicas < 1 or batch % replicas:
        raise ValueError(f"{spec!r}: the batch must be a positive multiple of the replicas")
    return match["layers"], batch, replicas


def network(layer_spec: str) -> keras.Model:
    """The network a layer spec describes (see the module docstring)."""
    body = []
    for token in layer_spec.split():
        if token == "p":
            body.append(layers.MaxPooling2D(2))
        else:
            pooled = token.endswith("p")  # pooling between the convolution and its BatchNorm
            body += [
                layers.Conv2D(int(token[1:].rstrip("p")), 3, padding="same", use_bias=False),
                *([layers.MaxPooling2D(2)] if pooled else []),
                FusedBatchNormalization(),
                layers.ReLU(),
            ]
    return keras.Sequential(
        [
            keras.Input(shape=IMAGE_SHAPE),
            *body,
            layers.GlobalAveragePooling2D(),
            layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32"),
        ]
    )


def ratio_cell(rates: list[float], first: list[float]) -> str:
    """The per-round ratios of `rates` to `first`: "median (min-max)"."""
    ratios = [a / b for a, b in zip(rates, first)]
    return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"


@report_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="+", help='layer specs, e.g. "c16 p c32 p c64@256"')
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=12_800, help="training images per round")
    parser.add_argument("--data", type=Path, default=Path("data/prepared"))
    args = parser.parse_args()
    if args.rounds < 1 or args.images < 1:
        parser.error("--rounds and --images must be at least 1")
    try:
        specs = {spec: parse_spec(spec) for spec in args.specs}
    except ValueError as exc:
        parser.error(str(exc))
    params = load_params()
    most = max(replicas for _, _, replicas in specs.values())
    if most > 1:  # before TensorFlow's runtime starts
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * most
        )
    device.setup(params.train)
    images, labels = load_split(args.data / "train.npz")
    images, labels = images[: args.images], labels[: args.images]
    runs = {}
    for spec, (text, batch, replicas) in specs.items():
        strategy = tf.distribute.get_strategy()
        if replicas > 1:
            cpus = [f"/cpu:{i}" for i in range(replicas)]
            strategy = tf.distribute.MirroredStrategy(cpus)
        with strategy.scope():
            model = network(text)
            steps = inputs.steps_per_epoch(len(labels), batch)
            train.compile_model(model, params.train, steps)
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        ds = inputs.training_dataset(images, labels, batch, 0, epoch, params.train.augment)
        model.fit(ds, epochs=1, verbose=0)  # trace and warm up
        runs[spec] = (model, ds, [], [])
    print(f"machine: {machine.describe()}")
    for r in range(args.rounds):
        for model, ds, rates, cpu_rates in runs.values():
            start, cpu_start = time.perf_counter(), time.process_time()
            model.fit(ds, epochs=1, verbose=0)
            rates.append(len(labels) / (time.perf_counter() - start))
            cpu_rates.append(len(labels) / (time.process_time() - cpu_start))
        print(f"round {r + 1}: " + ", ".join(f"{runs[s][2][-1]:,.0f}" for s in runs))
    first, cpu_first = runs[args.specs[0]][2:]
    print(
        "\n| network | replicas | parameters | forward MMACs | images/s (median) "
        "| × the first, per round | images per CPU second (median) | × the first, per round |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for spec, (model, _, rates, cpu_rates) in runs.items():
        print(
            f"| `{spec}` | {model.distribute_strategy.num_replicas_in_sync} | "
            f"{model.count_params():,} | {machine.forward_flops(model) / 2e6:.2f} | "
            f"{statistics.median(rates):,.0f} | {ratio_cell(rates, first)} | "
            f"{statistics.median(cpu_rates):,.0f} | {ratio_cell(cpu_rates, cpu_first)} |"
        )
    print(f"\nspeed probe after: {machine.speed_probe():.2f} s")


if __name__ == "__main__":
    sys.exit(main())
