"""Accuracy and wall time of each named recipe on the real data, as DVC experiments.

Runs `dvc exp run -n bench-<recipe> $(fmnist recipe <recipe>)` for each recipe in turn (each
trains on the full dataset: tens of minutes per recipe on a laptop CPU) and prints a table from
the experiments' own metrics. Run from the repository root:

    python3 benchmarks/recipes.py default notebook writeup
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import machine
from fmnist import recipes


def run_recipe(name: str, table: dict) -> float:
    """Run one recipe as a named experiment; return its wall time in seconds."""
    args = recipes.set_arguments(table[name])
    start = time.perf_counter()
    subprocess.run(["dvc", "exp", "run", "-n", f"bench-{name}", *args], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="recipes to run (see `fmnist recipe`)")
    args = parser.parse_args()
    table = recipes.load_recipes()
    rows = []
    for name in args.names:
        seconds = run_recipe(name, table)
        scores = json.loads(Path("metrics/eval.json").read_text())
        record = json.loads(Path("metrics/train.json").read_text())
        rows.append((name, record, scores["test"]["accuracy"], seconds))
    print(f"\nmachine: {machine.describe()}\n")
    print("| recipe | parameters | test accuracy | epochs | train min | dvc exp run min |")
    print("|---|---|---|---|---|---|")
    for name, record, accuracy, seconds in rows:
        print(
            f"| {name} | {record['parameters']:,} | {accuracy:.4f} | {record['epochs_run']} | "
            f"{record['train_seconds'] / 60:.1f} | {seconds / 60:.1f} |"
        )


if __name__ == "__main__":
    sys.exit(main())
