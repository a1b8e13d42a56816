"""A tuning study on the real data, and what it found against the default params.

Runs (or resumes) `fmnist tune` with the given options, then prints one row per trial from the
study's storage (params, the objective, minutes) and the comparison that matters: the
baseline trial (the workspace's own params, trained under the same budget) against the best
trial, on the validation metric the study optimises. Every trial is a DVC experiment, so
`dvc exp show` holds the same numbers. Run from the repository root, e.g.:

    python3 benchmarks/tune_study.py --study bench-12x5 --trials 12 -S train.epochs=5

With `--full`, the baseline and the best params are then trained at the workspace's full
length, or `--full-epochs N` (`dvc exp run --temp -n STUDY-eN-baseline|best ... evaluate`), and
their validation and test accuracy reported: chosen on validation, reported on test. With
`--committed-baseline`, the baseline's row is the committed run's (`metrics/` of HEAD, which
trained the workspace's params at their full length) instead of a second training of the same
params: `dvc status` must show the pipeline up to date.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import optuna
import yaml

import machine
from fmnist import git
from fmnist.errors import report_errors
from fmnist.tools import lineage, tune
from fmnist.tools.recipe import add_set_option, parse_set_options, set_arguments


def trial_rows(study: optuna.Study, config: tune.TuneConfig) -> list[str]:
    """A Markdown table of the study's trials."""
    keys = [d.key for d in config.space]
    lines = [
        "| trial | experiment | " + " | ".join(keys) + f" | {config.metric_key} | min |",
        "|---" * (len(keys) + 4) + "|",
    ]
    for t in study.trials:
        value = f"{t.value:.4f}" if t.value is not None else t.state.name.lower()
        mark = " (baseline)" if t.user_attrs.get("baseline") else ""
        params = [tune._short(tune.decode(t.params[k])) if k in t.params else "" for k in keys]
        lines.append(
            f"| {t.number}{mark} | {t.user_attrs.get('experiment', '')} | "
            + " | ".join(params)
            + f" | {value} | {t.user_attrs.get('minutes', '')} |"
        )
    return lines


def accuracies(scores: dict, record: dict, speed: dict) -> dict:
    """A row of the full-length table from a run's metrics/eval.json, its run record and its
    time."""
    return {
        "val": scores["val"]["accuracy"],
        "test": scores["test"]["accuracy"],
        "epochs": record["epochs_run"],
        "train_minutes": speed["train_seconds"] / 60,
    }


def full_run(name: str, overrides: dict) -> dict:
    """The whole pipeline as experiment `name` (a temporary-directory run: the workspace is
    left alone) with `overrides`; its validation and test accuracy."""
    cmd = [sys.executable, "-m", "dvc", "exp", "run", "--temp", "-n", name]
    cmd += [*set_arguments(overrides), "evaluate"]
    subprocess.run(cmd, check=True)
    rev = tune.experiment_rev(git.git_commit(".")["commit"], name)
    return accuracies(
        json.loads(tune.read_at(rev, "metrics/eval.json")),
        json.loads(tune.read_at(rev, lineage.TRAIN_RECORD)),
        json.loads(tune.read_at(rev, lineage.TRAIN_SPEED)),
    )


def finished_trials(storage: str, name: str) -> int:
    """How many trials of study `name` have finished (0 when there is no such study)."""
    try:
        study = optuna.load_study(study_name=name, storage=tune.open_storage(storage))
    except KeyError:  # no study of that name yet
        return 0
    return sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def committed_run() -> dict:
    """The validation and test accuracy of the committed run of the workspace's params."""
    status = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"], capture_output=True, text=True
    )
    if status.returncode != 0 or json.loads(status.stdout or "{}"):
        raise SystemExit(
            "--committed-baseline: the pipeline is not up to date with params.yaml and the code "
            "(`dvc status`); run `dvc repro` or leave the option out"
        )
    return accuracies(
        json.loads(Path("metrics/eval.json").read_text()),
        json.loads(Path(lineage.TRAIN_RECORD).read_text()),
        json.loads(Path(lineage.TRAIN_SPEED).read_text()),
    )


@report_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=tune.CONFIG_FILE)
    parser.add_argument("--study")
    parser.add_argument("--trials", type=int)
    parser.add_argument("--storage", default=tune.DEFAULT_STORAGE)
    parser.add_argument("--full", action="store_true", help="then train both at full length")
    parser.add_argument(
        "--full-epochs", type=int, help="with --full: this many epochs (default: params.yaml's)"
    )
    parser.add_argument(
        "--committed-baseline",
        action="store_true",
        help="with --full: the baseline is the committed run of params.yaml (metrics/)",
    )
    add_set_option(parser, on_top_of="tune.yaml's `set`")
    args = parser.parse_args()
    command = [sys.executable, "-m", "fmnist.cli", "tune", "--config", args.config]
    command += ["--storage", args.storage]
    command += ["--study", args.study] if args.study else []
    command += ["--trials", str(args.trials)] if args.trials else []
    for item in args.set:
        command += ["-S", item]
    config = tune.load_config(args.config)
    name = args.study or config.study
    # A finished study is only read: `fmnist tune` would refuse it on a later commit (its trials
    # ran on the commit it started on), though nothing is left to run.
    to_run = finished_trials(args.storage, name) < (args.trials or config.trials)
    if to_run and subprocess.run(command).returncode != 0:
        raise SystemExit(f"fmnist tune failed (its error is above): {' '.join(command[2:])}")
    study = optuna.load_study(study_name=name, storage=args.storage)
    print(f"\nmachine: {machine.describe()}\n")
    print(f"study {name}: objective {config.metric} ({config.direction}); "
          f"fixed: {json.dumps({**config.fixed, **parse_set_options(args.set)})}\n")  # fmt: skip
    print("\n".join(trial_rows(study, config)))
    done = [t for t in study.trials if t.value is not None]
    baseline = [t for t in done if t.user_attrs.get("baseline")]
    best = study.best_trial
    print(f"\nbest: trial {best.number} ({best.user_attrs['experiment']}) {best.value:.4f}")
    if baseline:
        gain = best.value - baseline[0].value
        print(f"baseline: trial {baseline[0].number} {baseline[0].value:.4f} ({gain:+.4f})")
    if not args.full:
        return
    base = yaml.safe_load(Path("params.yaml").read_text())
    epochs = args.full_epochs or base["train"]["epochs"]
    length = {"train.epochs": epochs}
    best_params = {d.key: tune.decode(best.params[d.key]) for d in config.space}
    if args.committed_baseline:
        if epochs != base["train"]["epochs"]:
            raise SystemExit(
                f"--committed-baseline: the committed run trained {base['train']['epochs']} "
                f"epochs, not {epochs}; leave out --full-epochs or --committed-baseline"
            )
        baseline = ("baseline (workspace params, the committed run)", committed_run())
    else:
        baseline = ("baseline (workspace params)", full_run(f"{name}-e{epochs}-baseline", length))
    best_run = full_run(f"{name}-e{epochs}-best", {**best_params, **length})
    rows = dict([baseline, ("best trial's params", best_run)])
    print(f"\n{epochs} epochs, machine: {machine.describe()}\n")
    print("| params | epochs | val accuracy | test accuracy | train min |")
    print("|---|---|---|---|---|")
    for label, r in rows.items():
        print(f"| {label} | {r['epochs']} | {r['val']:.2%} | {r['test']:.2%} | "
              f"{r['train_minutes']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
