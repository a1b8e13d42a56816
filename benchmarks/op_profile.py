"""Where training time goes: TensorFlow's profiler over one epoch, op time by kind of op.

Trains one of `throughput.py`'s methods for a warm-up epoch, then profiles the next and prints
a table: op time summed over TensorFlow's compute threads (with two cores, two ops can run at
once, so the column adds up to more than the wall time), by kernel, with forward and gradient
ops apart; then the slowest single ops.

    python3 benchmarks/op_profile.py --recipe default --method "pipeline, bfloat16"
    python3 benchmarks/op_profile.py --recipe default -S model.filters=[16,40,72] \\
        --method "pipeline, bfloat16, Keras BatchNorm"
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path

import machine  # first: TensorFlow starts with the stages' oneDNN setting

# isort: split
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

import throughput
from fmnist.dataset import load_split
from fmnist.errors import report_errors
from fmnist.training import device

TOP = 15  # rows of each table


def op_times(trace_dir: Path) -> tuple[float, dict[str, float]]:
    """(wall ms of the training calls, {op name: ms summed over the compute threads})."""
    space = xplane_pb2.XSpace()
    space.ParseFromString(next(trace_dir.rglob("*.xplane.pb")).read_bytes())
    host = next(plane for plane in space.planes if plane.name == "/host:CPU")
    names = {key: meta.name for key, meta in host.event_metadata.items()}
    wall, ops = 0.0, collections.Counter()
    for line in host.lines:
        for event in line.events:
            name, ms = names[event.metadata_id], event.duration_ps / 1e9
            if name.startswith("EagerLocalExecute: __inference_") and "step_on_iterator" in name:
                wall += ms  # Keras' compiled training function
            elif line.name.startswith("tf_Compute") and "/" in name:
                ops[name.split("StatefulPartitionedCall/")[-1]] += ms  # named graph ops only
    return wall, ops


def by_kind(ops: dict[str, float]) -> collections.Counter:
    """Op time by kernel (`name:Kernel`), gradient ops apart from forward ones."""
    kinds = collections.Counter()
    for name, ms in ops.items():
        kernel = name.rpartition(":")[2]
        kinds[f"gradient {kernel}" if name.startswith("gradient_tape") else kernel] += ms
    return kinds


def table(title: str, rows: collections.Counter, total: float) -> None:
    print(f"\n| {title} | ms | % of op time |\n|---|---|---|")
    for name, ms in rows.most_common(TOP):
        print(f"| {name} | {ms:,.1f} | {100 * ms / total:.1f} |")


@report_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    throughput.add_training_arguments(parser, recipe="default")
    parser.add_argument("--method", default="pipeline, bfloat16", choices=throughput.METHODS)
    args = parser.parse_args()
    params = throughput.recipe(args)
    images, labels = load_split(args.data / "train.npz")
    device.setup(params.train)
    fit = throughput.method(
        args.method, params.model, params.train, images[: args.images], labels[: args.images]
    )
    fit(1)  # trace and warm up
    with tempfile.TemporaryDirectory() as trace_dir:
        tf.profiler.experimental.start(trace_dir)
        fit(1)
        tf.profiler.experimental.stop()
        wall, ops = op_times(Path(trace_dir))
    total = sum(ops.values())
    print(f"machine: {machine.describe()}")
    print(
        f"recipe {args.recipe}: model {params.model.arch} {list(params.model.filters)}, batch "
        f"{params.train.batch_size}; method {args.method!r}; {args.images:,} images, one epoch"
    )
    print(f"training calls: {wall:,.0f} ms wall; ops: {total:,.0f} ms summed over threads")
    table("kernel", by_kind(ops), total)
    table("op", collections.Counter(ops), total)


if __name__ == "__main__":
    sys.exit(main())
