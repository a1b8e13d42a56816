"""End to end: the real `dvc` commands on a tiny synthetic dataset in a temporary git repo."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
from pathlib import Path

import pytest
import yaml

import helpers
from fmnist import environment, launch
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
    record = json.loads((repo / "metrics/runs/train.json").read_text())
    assert record["epochs_run"] == 2 and record["device"].startswith("CPU")
    # The metric is the model's numbers only; where and how fast it trained is the record's.
    model_numbers = json.loads((repo / "metrics/train.json").read_text())
    assert model_numbers == {"parameters": record["parameters"], "epochs_run": 2}
    # The stage's entry point turns oneDNN on (on x86-64) unless the environment says otherwise.
    on_by_default = "1" if platform.machine() in ("x86_64", "AMD64") else "0"
    setting = os.environ.get(launch.ONEDNN_VARIABLE, on_by_default)
    assert record["onednn"] is (setting.lower() in ("1", "true"))
    # The environment, and every `auto` setting as what it resolved to.
    assert set(environment.ENVIRONMENT_FIELDS) <= set(record)
    assert record["precision"] in ("float32", "mixed_bfloat16") and record["distribute"] == "none"
    installed = environment.installed()
    assert [record[name] for name in ("tensorflow", "keras", "numpy", "dvc")] == [
        installed[name] for name in ("tensorflow", "keras", "numpy", "dvc")
    ]
    stamp = environment.read_stamp(Path(sys.prefix)) or {}  # None outside a locked environment
    assert record["lock_sha256"] == stamp.get("lock_sha256")
    lineage = json.loads((repo / "models/package/metadata/lineage.json").read_text())
    assert lineage["training"]["precision"] == record["precision"]
    assert lineage["training"]["lock_sha256"] == record["lock_sha256"]
    packaging = json.loads((repo / "metrics/runs/package.json").read_text())["packaging"]
    assert packaging["lock_sha256"] == record["lock_sha256"]
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


def test_plots_show_draws_each_intended_plot_once(reproduced_repo):
    shown = json.loads(dvc("plots", "show", "--json", cwd=reproduced_repo).stdout)["data"]
    spec = yaml.safe_load((reproduced_repo / "dvc.yaml").read_text())
    intended = [p if isinstance(p, str) else next(iter(p)) for p in spec["plots"]]
    assert sorted(shown) == sorted(intended)  # the curves, the confusion matrix, F1, the PNGs
    assert all(len(renders) == 1 for renders in shown.values())
    for title, (render,) in shown.items():
        if title.endswith(".png"):
            assert render["type"] == "image"
        else:  # a chart with its data, not an empty frame
            assert render["type"] == "vega" and render["content"]["data"]["values"], title


def test_metrics_show_lists_what_a_reviewer_needs(reproduced_repo):
    (shown,) = json.loads(dvc("metrics", "show", "--json", cwd=reproduced_repo).stdout).values()
    files = shown["data"]
    assert set(files) == {
        "metrics/eval.json",
        "metrics/train.json",
        "metrics/train/metrics.json",
        "metrics/dataset.json",
    }
    assert set(files["metrics/train.json"]["data"]) == {"parameters", "epochs_run"}
    assert files["metrics/eval.json"]["data"]["test"]["accuracy"] > 0.3


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
    assert f"{empty} holds neither the IDX files" in proc.stderr
    assert "DVC removed" not in proc.stderr  # a first run: nothing to get back
    assert not (repo / "data" / "raw").exists()
    cache = repo / ".dvc" / "cache"
    assert not cache.exists() or not any(p.is_file() for p in cache.rglob("*"))
