"""Accuracy and wall time of each named recipe on the real data, as DVC experiments.

Runs `dvc exp run -n bench-<recipe>[-seed<N>] $(fmnist recipe <recipe>) [-S train.seed=<N>]`
for each recipe (and seed) in turn, each from the params.yaml of the checked-out commit (a
workspace experiment leaves its params behind, and a recipe sets only the keys it names: an
earlier `-S train.precision=float32` would otherwise carry over), and prints a table from
the experiments' own metrics, with the mean and standard deviation of each recipe run with
several seeds, the machine and its speed probe before and after. Each run trains on the full
dataset: minutes to tens of minutes per recipe on a laptop CPU. Run from the repository root:

    python3 benchmarks/recipe_runs.py default notebook writeup
    python3 benchmarks/recipe_runs.py writeup --seeds 42 7 1 2 3
    python3 benchmarks/recipe_runs.py default long --fresh --plot time_to_accuracy.png

`--fresh` runs every stage, `fetch` and `prepare` included (`dvc exp run -f`), as a fresh
clone's `dvc repro` does: the end-to-end column is then that job's time, without installs.
Otherwise stages whose inputs did not change are skipped. The stage column is the wall time
from each stage's start to the next one's (DVC's own work for the stage included). `--plot`
draws each run's validation accuracy (one view, the per-epoch log) against its training
seconds: the time-to-accuracy curves.

Where the workspace's params.yaml differs from HEAD's, it names the keys as it starts and does
not use them: pass them with `-S` to measure them. The workspace ends as DVC leaves it after an
experiment: holding the last run's params and outputs (`dvc exp show` lists them all; `dvc exp
apply` picks one). A rerun of params DVC has seen before trains again: the stages keep their run
records in git as plain outputs, which turns DVC's run cache off for them (docs/pipeline.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

import curves
import machine
from fmnist.errors import report_errors
from fmnist.git import git_show
from fmnist.params import flatten
from fmnist.tools import lineage
from fmnist.tools.recipe import add_set_option, load_recipes, set_arguments
from fmnist.training import history

PARAMS = Path("params.yaml")
LIVE_DIR = Path("metrics/train")  # the train stage's DVCLive log (dvc.yaml)
# What it prints as it starts a stage.
STAGE_START = re.compile(r"^Running stage '([\w-]+)'")
# What Keras prints (verbose=2) as training starts, and at the end of each epoch.
FIRST_EPOCH = re.compile(r"^Epoch 1/\d+$")
EPOCH_END = re.compile(r"^\d+/\d+ - \d+s - ")


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
    stages: dict[str, float]  # the stages that ran: seconds from each start to the next
    curve: tuple[list[float], list[float]]  # training seconds and val accuracy at each epoch


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


def committed_params(workspace: str) -> str:
    """HEAD's params.yaml, which every run starts from; names the settings the `workspace`'s
    params.yaml differs in, which the runs will not use."""
    committed = git_show(".", "HEAD", "./params.yaml")
    if committed is None:
        raise SystemExit("params.yaml is not committed: commit it, and run again")
    ours, head = (flatten(yaml.safe_load(text)) for text in (workspace, committed))
    changed = sorted(key for key in ours.keys() | head.keys() if ours.get(key) != head.get(key))
    if changed:
        print(
            f"the runs start from HEAD's params.yaml, not the workspace's, which differs in "
            f"{', '.join(changed)} (pass those with -S to measure them)"
        )
    return committed


def stage_seconds(starts: list[tuple[str, float]], end: float) -> dict[str, float]:
    """Each stage's seconds, from its start to the next stage's start (the last: to `end`)."""
    ends = [t for _, t in starts[1:]] + [end]
    return {name: round(stop - t, 1) for (name, t), stop in zip(starts, ends)}


def experiment(
    recipe: str, seed: int | None, table: dict, sets: list[str], fresh: bool = False
) -> Run:
    """Run one recipe (with `seed`, and the `-S` `sets` on top) as a named experiment; with
    `fresh`, every stage runs (`dvc exp run -f`)."""
    args = ["-f"] if fresh else []
    args += set_arguments(table[recipe])
    args += [] if seed is None else ["-S", f"train.seed={seed}"]
    for item in sets:
        args += ["-S", item]
    name = experiment_name(recipe, seed)
    start = time.perf_counter()
    proc = subprocess.Popen(
        ["dvc", "exp", "run", "-n", name, *args],
        stdout=subprocess.PIPE,
        text=True,
        # Each line as it is printed, so that the stage times are read when stages start.
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    starts, epoch_ends, first_epoch = [], [], None
    for line in proc.stdout:  # DVC's and the stages' progress, as it comes
        sys.stdout.write(line)
        now = time.perf_counter()
        if match := STAGE_START.match(line):
            starts.append((match[1], now))
        elif FIRST_EPOCH.match(line.strip()):
            first_epoch = now
        elif first_epoch is not None and EPOCH_END.match(line.strip()):
            epoch_ends.append(round(now - first_epoch, 1))
    if proc.wait():
        raise SystemExit(f"`dvc exp run -n {name}` failed (exit {proc.returncode}); see above")
    end = time.perf_counter()
    scores = json.loads(Path("metrics/eval.json").read_text())
    record = json.loads(Path(lineage.TRAIN_RECORD).read_text())
    speed = json.loads(Path(lineage.TRAIN_SPEED).read_text())
    log = history.read_history(LIVE_DIR)
    return Run(
        recipe=recipe,
        seed=yaml.safe_load(PARAMS.read_text())["train"]["seed"],  # the experiment's params
        parameters=record["parameters"],
        test=scores["test"]["accuracy"],
        val=scores["val"]["accuracy"],
        epochs=record["epochs_run"],
        train_seconds=speed["train_seconds"],
        seconds=end - start,
        stages=stage_seconds(starts, end),
        # Seconds from the first epoch's start to each epoch's end, as the stage printed them.
        curve=(epoch_ends, log["val/accuracy"].tolist()),
    )


def print_table(runs: list[Run]) -> None:
    print(
        "| recipe | seed | parameters | epochs | train s | end-to-end s | stages s "
        "| val accuracy | test accuracy |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        stages = ", ".join(f"{name} {sec:.0f}" for name, sec in r.stages.items())
        print(
            f"| {r.recipe} | {r.seed} | {r.parameters:,} | {r.epochs} | "
            f"{r.train_seconds:.0f} | {r.seconds:.0f} | {stages} | {r.val:.2%} | "
            f"{r.test:.2%} |"
        )
    for recipe in dict.fromkeys(r.recipe for r in runs):
        tests = [r.test for r in runs if r.recipe == recipe]
        if len(tests) > 1:
            vals = [r.val for r in runs if r.recipe == recipe]
            print(
                f"| {recipe}: mean ± sd of {len(tests)} | | | | | | | "
                f"{statistics.mean(vals):.2%} ± {statistics.stdev(vals):.2%} | "
                f"{statistics.mean(tests):.2%} ± {statistics.stdev(tests):.2%} |"
            )


def plot(runs: list[Run], path: Path) -> None:
    """The runs' time-to-accuracy curves as a PNG at `path`."""
    lines = {f"{r.recipe} (seed {r.seed})": r.curve for r in runs}
    for label, (seconds, accuracy) in lines.items():
        if len(seconds) != len(accuracy):
            raise SystemExit(
                f"{label}: {len(seconds)} epoch ends in the train stage's output against "
                f"{len(accuracy)} epochs in {LIVE_DIR}: no curve unless `train` runs (--fresh)"
            )
    path.write_bytes(curves.time_to_accuracy(lines))
    print(f"time-to-accuracy curves: {path}")


@report_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="recipes to run (see `fmnist recipe`)")
    parser.add_argument(
        "--seeds", type=int, nargs="+", help="train.seed of each run (default: the recipe's)"
    )
    parser.add_argument(
        "--fresh", action="store_true", help="run every stage, as a fresh clone's dvc repro"
    )
    parser.add_argument("--plot", type=Path, help="write the time-to-accuracy curves here (PNG)")
    add_set_option(parser, on_top_of="every recipe")
    args = parser.parse_args()
    table = load_recipes()
    unknown = [name for name in args.names if name not in table]
    if unknown:
        raise SystemExit(f"unknown recipe(s) {', '.join(unknown)}; `fmnist recipe` lists them")
    seeds = args.seeds or [None]
    check_names_are_free([experiment_name(name, seed) for name in args.names for seed in seeds])
    workspace = PARAMS.read_text()
    base = committed_params(workspace)
    probe = machine.speed_probe()
    runs = []
    try:
        for name in args.names:
            for seed in seeds:
                PARAMS.write_text(base)  # every run starts from the same params
                runs.append(experiment(name, seed, table, args.set, args.fresh))
    except BaseException:
        PARAMS.write_text(workspace)  # a failed or stopped run leaves the params as they were
        raise
    print(f"\nmachine: {machine.describe()}; speed probe before the runs {probe:.2f} s\n")
    print_table(runs)
    if args.plot:
        plot(runs, args.plot)


if __name__ == "__main__":
    sys.exit(main())
