"""Accuracy and wall time of each named recipe on the real data, as DVC experiments.

Runs `dvc exp run -n bench-<recipe>[-seed<N>] $(fmnist recipe <recipe>) [-S train.seed=<N>]`
for each recipe (and seed) in turn, each from the same params.yaml (a workspace experiment
leaves its params behind, and a recipe sets only the keys it names), and prints a table from
the experiments' own metrics, with the mean and standard deviation of each recipe run with
several seeds. Each run trains on the full dataset: tens of minutes per recipe on a laptop CPU.
Run from the repository root:

    python3 benchmarks/recipe_runs.py default notebook writeup
    python3 benchmarks/recipe_runs.py writeup --seeds 42 7 1 2 3

The workspace ends as DVC leaves it after an experiment: holding the last run's params and
outputs (`dvc exp show` lists them all; `dvc exp apply` picks one). A rerun of params DVC has
seen before trains again: the stages keep their run records in git as plain outputs, which
turns DVC's run cache off for them (docs/pipeline.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

import machine
from fmnist.tools.recipe import add_set_option, load_recipes, set_arguments

PARAMS = Path("params.yaml")


@dataclass(frozen=True)
class Run:
    recipe: str
    seed: int  # train.seed, as the run's params.yaml had it
    parameters: int
    test: float
    val: float
    epochs: int
    train_seconds: float
    seconds: float  # the whole `dvc exp run`


def experiment_name(recipe: str, seed: int | None) -> str:
    return f"bench-{recipe}" + ("" if seed is None else f"-seed{seed}")


def check_names_are_free(names: list[str]) -> None:
    """Fail before any run if an experiment of this commit already has one of `names` (DVC
    would refuse that run only when its turn comes)."""
    listed = subprocess.run(
        ["dvc", "exp", "list", "--name-only"], stdout=subprocess.PIPE, text=True, check=True
    )
    taken = sorted(set(names) & set(listed.stdout.split()))
    if taken:
        raise SystemExit(
            f"experiments {', '.join(taken)} already exist on this commit: remove them first "
            f"(dvc exp remove {' '.join(taken)}), or commit, and run again"
        )


def experiment(recipe: str, seed: int | None, table: dict, sets: list[str]) -> Run:
    """Run one recipe (with `seed`, and the `-S` `sets` on top) as a named experiment."""
    args = set_arguments(table[recipe])
    args += [] if seed is None else ["-S", f"train.seed={seed}"]
    for item in sets:
        args += ["-S", item]
    name = experiment_name(recipe, seed)
    start = time.perf_counter()
    proc = subprocess.Popen(
        ["dvc", "exp", "run", "-n", name, *args], stdout=subprocess.PIPE, text=True
    )
    printed = []
    for line in proc.stdout:  # DVC's and the stages' progress, as it comes
        sys.stdout.write(line)
        printed.append(line)
    if proc.wait():
        raise SystemExit(f"`dvc exp run -n {name}` failed (exit {proc.returncode}); see above")
    seconds = time.perf_counter() - start
    scores = json.loads(Path("metrics/eval.json").read_text())
    record = json.loads(Path("metrics/runs/train.json").read_text())
    return Run(
        recipe=recipe,
        seed=yaml.safe_load(PARAMS.read_text())["train"]["seed"],  # the experiment's params
        parameters=record["parameters"],
        test=scores["test"]["accuracy"],
        val=scores["val"]["accuracy"],
        epochs=record["epochs_run"],
        train_seconds=record["train_seconds"],
        seconds=seconds,
    )


def print_table(runs: list[Run]) -> None:
    print(
        "| recipe | seed | parameters | test accuracy | val accuracy | epochs | train min "
        "| dvc exp run min |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in runs:
        print(
            f"| {r.recipe} | {r.seed} | {r.parameters:,} | {r.test:.2%} | {r.val:.2%} | "
            f"{r.epochs} | {r.train_seconds / 60:.1f} | {r.seconds / 60:.1f} |"
        )
    for recipe in dict.fromkeys(r.recipe for r in runs):
        tests = [r.test for r in runs if r.recipe == recipe]
        if len(tests) > 1:
            vals = [r.val for r in runs if r.recipe == recipe]
            print(
                f"| {recipe}: mean ± sd of {len(tests)} | | | "
                f"{statistics.mean(tests):.2%} ± {statistics.stdev(tests):.2%} | "
                f"{statistics.mean(vals):.2%} ± {statistics.stdev(vals):.2%} | | | |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="recipes to run (see `fmnist recipe`)")
    parser.add_argument(
        "--seeds", type=int, nargs="+", help="train.seed of each run (default: the recipe's)"
    )
    add_set_option(parser, on_top_of="every recipe")
    args = parser.parse_args()
    table = load_recipes()
    unknown = [name for name in args.names if name not in table]
    if unknown:
        raise SystemExit(f"unknown recipe(s) {', '.join(unknown)}; `fmnist recipe` lists them")
    seeds = args.seeds or [None]
    check_names_are_free([experiment_name(name, seed) for name in args.names for seed in seeds])
    base = PARAMS.read_text()
    runs = []
    try:
        for name in args.names:
            for seed in seeds:
                PARAMS.write_text(base)  # every run starts from the same params
                runs.append(experiment(name, seed, table, args.set))
    except BaseException:
        PARAMS.write_text(base)  # a failed or stopped run leaves the params as they were
        raise
    print(f"\nmachine: {machine.describe()}\n")
    print_table(runs)


if __name__ == "__main__":
    sys.exit(main())
