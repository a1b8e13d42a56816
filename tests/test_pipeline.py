"""End to end: the real `dvc` commands on a tiny synthetic dataset in a temporary git repo."""

from __future__ import annotations

import json
import os
import platform
import shutil

import pytest

import helpers
from fmnist import launch
from helpers import dvc, git

pytestmark = pytest.mark.slow

STAGES = ("params", "fetch", "prepare", "parent", "train", "evaluate", "package")


def ran(output: str) -> list[str]:
    return [s for s in STAGES if f"Running stage '{s}'" in output]


@pytest.fixture
def repo_copy(reproduced_repo, tmp_path):
    """A private copy of the reproduced repo (git, DVC cache and all) to change freely."""
    copy = tmp_path / "copy"
    shutil.copytree(reproduced_repo, copy, symlinks=True)
    return copy


def test_repro_runs_every_stage_and_writes_every_output(reproduced_repo):
    repo = reproduced_repo
    lock = (repo / "dvc.lock").read_text()
    assert all(f"  {stage}:" in lock for stage in STAGES)
    for path in (
        "data/raw/train-images-idx3-ubyte",
        "data/prepared/val.npz",
        "models/model.keras",
        "models/package/model.keras",
        "models/package/metadata/lineage.json",
        "models/package/saved_model.pb",
        "metrics/figures/confusion_matrix.png",
        "metrics/figures/feature_maps.png",
        "metrics/train/plots/metrics/val/accuracy.tsv",
        "metrics/predictions.csv",
    ):
        assert (repo / path).is_file(), path
    scores = json.loads((repo / "metrics/eval.json").read_text())
    assert scores["test"]["accuracy"] > 0.3  # ten classes: chance is 0.1
    record = json.loads((repo / "metrics/train.json").read_text())
    assert record["epochs_run"] == 2 and record["device"].startswith("CPU")
    # The stage's entry point turns oneDNN on (on x86-64) unless the environment says otherwise.
    on_by_default = "1" if platform.machine() in ("x86_64", "AMD64") else "0"
    setting = os.environ.get(launch.ONEDNN_VARIABLE, on_by_default)
    assert record["onednn"] is (setting.lower() in ("1", "true"))
    stats = json.loads((repo / "metrics/data.json").read_text())
    assert stats["train"]["examples"] + stats["val"]["examples"] == 300


def test_second_repro_runs_nothing(reproduced_repo):
    out = dvc("repro", cwd=reproduced_repo).stdout
    assert ran(out) == [] and "up to date" in out
    assert "changed" not in dvc("status", cwd=reproduced_repo).stdout


def test_metrics_and_plots_show(reproduced_repo, tmp_path):
    shown = dvc("metrics", "show", "--json", cwd=reproduced_repo).stdout
    assert "metrics/eval.json" in shown and "accuracy" in shown
    out = tmp_path / "plots"
    dvc("plots", "show", "-o", str(out), cwd=reproduced_repo)
    html = (out / "index.html").read_text()
    assert "Confusion matrix (test set)" in html and "Per-class F1" in html


def test_an_evaluate_param_reruns_only_evaluate_and_what_follows(repo_copy):
    git("add", "-A", cwd=repo_copy)
    git("commit", "-qm", "reproduced", cwd=repo_copy)
    helpers.set_params(repo_copy / "params.yaml", {"evaluate.misclassified": 3})
    assert ran(dvc("repro", cwd=repo_copy).stdout) == ["params", "evaluate", "package"]


def test_exp_run_sets_a_param_and_exp_show_lists_it(repo_copy):
    git("add", "-A", cwd=repo_copy)
    git("commit", "-qm", "reproduced", cwd=repo_copy)
    out = dvc("exp", "run", "-S", "train.epochs=1", cwd=repo_copy).stdout
    assert ran(out) == ["params", "train", "evaluate", "package"]
    table = json.loads(dvc("exp", "show", "--json", cwd=repo_copy).stdout)
    text = json.dumps(table)
    assert '"epochs": 1' in text and "metrics/eval.json" in text
    assert json.loads((repo_copy / "metrics/train.json").read_text())["epochs_run"] == 1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # DVC refuses a new key by itself; with `+` (or a hand edit) it is added, and we refuse it.
        ("train.learning_rte=0.01", "Could not override 'train.learning_rte'"),
        (
            "+train.learning_rte=0.01",
            "unknown key 'train.learning_rte' (did you mean 'train.learning_rate'?)",
        ),
        ("train.epochs=abc", "'train.epochs': expected an integer, got 'abc'"),
        ("model.arch=resnet", "'model.arch': 'resnet' (str) is not one of gap_cnn, bn_cnn, dense"),
    ],
)
def test_bad_params_fail_fast_naming_the_key_and_change_nothing(repo_copy, override, message):
    git("add", "-A", cwd=repo_copy)
    git("commit", "-qm", "reproduced", cwd=repo_copy)
    model_before = (repo_copy / "models/model.keras").read_bytes()
    proc = dvc("exp", "run", "-S", override, cwd=repo_copy, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert "Epoch 1" not in proc.stdout  # failed before any training
    assert (repo_copy / "models/model.keras").read_bytes() == model_before


def test_missing_data_fails_clearly_and_caches_nothing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    repo = helpers.make_tiny_repo(tmp_path / "repo", empty)
    proc = dvc("repro", cwd=repo, check=False)
    assert proc.returncode != 0
    assert "Fashion-MNIST was not found" in proc.stderr and str(empty) in proc.stderr
    assert not (repo / "data" / "raw").exists()
    cache = repo / ".dvc" / "cache"
    assert not cache.exists() or not any(p.is_file() for p in cache.rglob("*"))
