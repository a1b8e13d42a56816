"""Inference speed of a packaged SavedModel: latency at batch 1 (p50/p95), throughput at a
large batch. Uses the same measurement as the `package` stage, with more runs.

    python3 benchmarks/inference.py models/package --runs 500
"""

from __future__ import annotations

import argparse
from pathlib import Path

import machine
from fmnist.params import PackageParams
from fmnist.serving.signatures import load_serving_fn, measure_speed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path, nargs="?", default=Path("models/package"))
    parser.add_argument("--runs", type=int, default=500, help="batch-1 calls")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=20, help="large-batch calls")
    args = parser.parse_args()
    p = PackageParams(
        latency_runs=args.runs, throughput_batch_size=args.batch, throughput_runs=args.batches
    )
    speed = measure_speed(load_serving_fn(args.package), p)
    print(f"machine: {machine.describe()}")
    print(f"package: {args.package}\n")
    print("| latency p50 (ms) | latency p95 (ms) | batch | images/s |")
    print("|---|---|---|---|")
    print(
        f"| {speed['latency_ms_p50']} | {speed['latency_ms_p95']} | {args.batch} | "
        f"{speed['throughput_images_per_s']:,.0f} |"
    )


if __name__ == "__main__":
    main()
