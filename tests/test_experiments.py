"""Experiments on tiny data: a queued sweep run by DVC, and what a reviewer sees of two of them.

One sweep (three learning rates on the tiny data) runs per module; the tests read it. Only
`test_exp_apply_promotes_the_winner_into_the_workspace` changes a repo, and it does so on a copy.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import helpers
from helpers import dvc, git, run

pytestmark = pytest.mark.slow

# The middle rate is the base commit's (helpers.TINY_PARAMS): DVC restores that point from the
# run cache instead of training it again, so the sweep trains two models.
RATES = (0.003, 0.01, 0.03)
ACCURACY = "metrics/eval.json:test.accuracy"
# A queued run that has not finished within this long is stuck (a safety net, not an assertion).
QUEUE_TIMEOUT_S = 1800


def queue_states(repo: Path) -> dict[str, str]:
    """Name -> state (Queued, Running, Success, Failed, ...) of each task in `dvc queue status`."""
    lines = dvc("queue", "status", cwd=repo).stdout.splitlines()
    # Columns: Task, Name, Created (one or two words), Status; then a "Worker status" line.
    rows = [line.split() for line in lines[1:] if line.strip() and not line.startswith("Worker")]
    return {row[1]: row[-1] for row in rows}


def wait_for_queue(repo: Path, tasks: int) -> dict[str, str]:
    """Poll the queue until all `tasks` have finished; return those states. Waiting for the
    finished states, not for the end of "Queued" and "Running", because a poll can catch a
    task between states (seen in CI: a later poll still listed it as running)."""
    deadline = time.monotonic() + QUEUE_TIMEOUT_S
    while True:
        states = queue_states(repo)
        if len(states) >= tasks and set(states.values()) <= {"Success", "Failed", "Killed"}:
            return states
        assert time.monotonic() < deadline, f"the queue did not finish: {states}"
        time.sleep(5)


@pytest.fixture(scope="module")
def swept(reproduced_repo, tmp_path_factory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A copy of the reproduced repo on which a queued sweep of three learning rates ran."""
    repo = tmp_path_factory.mktemp("swept") / "repo"
    shutil.copytree(reproduced_repo, repo, symlinks=True)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "reproduced", cwd=repo)
    grid = "train.learning_rate=" + ",".join(map(str, RATES))  # DVC's (Hydra's) choice sweep
    queued = dvc("exp", "run", "--queue", "-S", grid, cwd=repo).stdout
    assert queued.count("Queued experiment") == len(RATES)
    # The worker `queue start` leaves running inherits its stdout: a pipe would never close.
    with open(repo.parent / "queue-start.log", "w") as log:
        start = [sys.executable, "-m", "dvc", "queue", "start", "-j", "1"]
        subprocess.run(start, cwd=repo, stdout=log, stderr=subprocess.STDOUT, check=True)
    yield repo, wait_for_queue(repo, len(RATES))
    dvc("queue", "stop", cwd=repo, check=False)  # leave no idle worker behind


def experiments(repo: Path) -> dict[str, dict]:
    """Name -> {"lr", "epochs", "accuracy"} of each experiment of HEAD, from `dvc exp show`."""
    found = {}
    for name, data in helpers.experiments_of_head(repo).items():
        params = data["params"]["params.yaml"]["data"]["train"]
        scores = data["metrics"]["metrics/eval.json"]["data"]["test"]
        found[name] = {
            "lr": params["learning_rate"],
            "epochs": params["epochs"],
            "accuracy": scores["accuracy"],
        }
    return found


def head_ref_dir(repo: Path) -> str:
    """Where DVC keeps the experiments of HEAD: refs/exps/<sha[:2]>/<sha[2:]>/<name>."""
    head = git("rev-parse", "HEAD", cwd=repo).strip()
    return f"{head[:2]}/{head[2:]}"


def by_rate(repo: Path) -> dict[float, str]:
    return {exp["lr"]: name for name, exp in experiments(repo).items()}


def test_a_queued_sweep_runs_every_point_to_completion(swept):
    repo, states = swept
    failed = {name: state for name, state in states.items() if state != "Success"}
    logs = [dvc("queue", "logs", name, cwd=repo, check=False).stdout for name in failed]
    assert len(states) == len(RATES) and not failed, "\n".join(logs)
    found = experiments(repo)
    assert sorted(exp["lr"] for exp in found.values()) == sorted(RATES)
    assert all(0 <= exp["accuracy"] <= 1 for exp in found.values())


def test_exp_show_sorts_the_sweep_by_a_metric(swept):
    repo, _ = swept
    shown = dvc(
        "exp", "show", "--csv", "--sort-by", ACCURACY, "--sort-order", "desc",
        "--drop", ".*", "--keep", "Experiment|test.accuracy|train.learning_rate",
        cwd=repo,
    ).stdout  # fmt: skip
    rows = [row for row in csv.DictReader(io.StringIO(shown)) if row["Experiment"]]
    assert {row["Experiment"] for row in rows} == set(experiments(repo))
    accuracies = [float(row["test.accuracy"]) for row in rows]
    assert accuracies == sorted(accuracies, reverse=True)


@pytest.fixture(scope="module")
def branches(swept) -> tuple[Path, str, str]:
    """The lowest- and highest-rate experiments promoted to branches with `dvc exp branch`."""
    repo, _ = swept
    names = by_rate(repo)
    dvc("exp", "branch", names[RATES[0]], "lr-low", cwd=repo)
    dvc("exp", "branch", names[RATES[-1]], "lr-high", cwd=repo)
    return repo, "lr-low", "lr-high"


def test_params_diff_shows_exactly_the_one_param_that_differs(branches):
    repo, low, high = branches
    diff = json.loads(dvc("params", "diff", low, high, "--json", cwd=repo).stdout)
    assert list(diff) == ["params.yaml"]
    assert list(diff["params.yaml"]) == ["train.learning_rate"]
    change = diff["params.yaml"]["train.learning_rate"]
    assert (change["old"], change["new"]) == (RATES[0], RATES[-1])


def test_metrics_diff_shows_the_change_and_only_what_changed(branches):
    repo, low, high = branches
    diff = json.loads(dvc("metrics", "diff", low, high, "--json", cwd=repo).stdout)
    # Only the model's metrics: the run records (device, time, the rate used) are not metrics.
    assert set(diff) <= {"metrics/eval.json", "metrics/train.json", "metrics/train/metrics.json"}
    assert set(diff.get("metrics/train.json", {})) <= {"parameters", "epochs_run"}
    used = [
        json.loads(git("show", f"{rev}:metrics/runs/train.json", cwd=repo)) for rev in (low, high)
    ]
    assert [r["learning_rate"] for r in used] == pytest.approx([RATES[0], RATES[-1]])
    scores = diff["metrics/eval.json"]
    assert "test.loss" in scores  # ten times the learning rate: another model
    for side, rev in (("old", low), ("new", high)):
        stored = json.loads(git("show", f"{rev}:metrics/eval.json", cwd=repo))
        for key, change in scores.items():
            split, metric = key.split(".")
            assert change[side] == pytest.approx(stored[split][metric])


def test_plots_diff_draws_both_sides(branches):
    repo, low, high = branches
    plots = json.loads(dvc("plots", "diff", low, high, "--json", cwd=repo).stdout)["data"]
    for title in (
        "Confusion matrix (test set)",
        "Per-class F1 (test set)",
        "Training curves (loss)",
    ):
        (plot,) = plots[title]
        assert plot["revisions"] == [low, high]
    images = plots["metrics/figures/confusion_matrix.png"]
    assert [image["revisions"] for image in images] == [[low], [high]]


def fmnist_report(repo: Path, *args: str) -> str:
    run([sys.executable, "-m", "fmnist.cli", "report", *args, "-o", "review/report.md"], cwd=repo)
    return (repo / "review/report.md").read_text()


def test_report_between_two_experiments_has_both_diffs_and_the_images(swept):
    repo, _ = swept
    names = by_rate(repo)
    low, high = names[RATES[0]], names[RATES[-1]]
    text = fmnist_report(repo, "--base", low, "--rev", high)  # experiment names as revs
    assert f"**{high} (" in text and f"compared with **{low} (" in text
    assert f"| `params.yaml` | `train.learning_rate` | {RATES[0]} | {RATES[-1]} |" in text
    assert "| `metrics/eval.json` | `test.loss` |" in text
    assert "- **versions changed**: model" in text  # same data, another model
    for side in ("base", "new"):
        link = f"report_assets/{side}-confusion_matrix.png"
        assert f"]({link})" in text
        assert (repo / "review" / link).read_bytes().startswith(b"\x89PNG")
    base_png = (repo / "review/report_assets/base-confusion_matrix.png").read_bytes()
    low_commit = git("rev-parse", f"refs/exps/{head_ref_dir(repo)}/{low}", cwd=repo).strip()
    show = ["git", "show", f"{low_commit}:metrics/figures/confusion_matrix.png"]
    assert base_png == subprocess.run(show, cwd=repo, capture_output=True, check=True).stdout


def test_exp_apply_promotes_an_experiment_into_the_workspace(swept, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(swept[0], repo, symlinks=True)
    chosen = by_rate(repo)[RATES[0]]
    dvc("exp", "apply", chosen, cwd=repo)
    scores = json.loads((repo / "metrics/eval.json").read_text())
    assert scores["test"]["accuracy"] == pytest.approx(experiments(repo)[chosen]["accuracy"])
    text = fmnist_report(repo, "--base", "HEAD")  # what a PR with this experiment will show
    assert "**workspace** compared with **HEAD (" in text
    assert "not reproduced" not in text  # `exp apply` restores the outputs with the params
    base_rate = helpers.TINY_PARAMS["train.learning_rate"]
    assert f"| `params.yaml` | `train.learning_rate` | {base_rate} | {RATES[0]} |" in text
