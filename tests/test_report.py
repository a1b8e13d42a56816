"""`fmnist report`: the pure parts on tiny inputs, and the command on a tiny repo without training.

The report on a real pipeline (a sweep's experiments) is tested in tests/test_experiments.py.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import helpers
from fmnist.dataset import CLASS_NAMES
from fmnist.errors import PipelineError
from fmnist.tools import report

PNG = b"\x89PNG\r\n\x1a\n"


def per_class(f1: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"class": CLASS_NAMES, "f1": f1, "support": 10})


# DVC hashes: md5 hex digests, `.dir` for a directory.
RAW, PREPARED = "a" * 32 + ".dir", "b" * 32 + ".dir"
M1, M2 = "1" * 32, "2" * 32


def lock(model_md5: str) -> bytes:
    """A valid `dvc.lock` with the data and model outputs (DVC validates it in `dvc status`)."""
    outs = {"fetch": ("data/raw", RAW), "prepare": ("data/prepared", PREPARED)}
    outs["train"] = ("models/model.keras", model_md5)
    stages = {
        stage: {"cmd": "true", "outs": [{"path": path, "hash": "md5", "md5": md5, "size": 1}]}
        for stage, (path, md5) in outs.items()
    }
    return yaml.safe_dump({"schema": "2.0", "stages": stages}).encode()


def snap(title: str, model_md5: str, f1: list[float] | None, figures: bool = True):
    return report.Snapshot(
        title=title,
        versions=report.lock_versions(lock(model_md5)),
        per_class=None if f1 is None else per_class(f1),
        figures={
            path: PNG + title.encode() if figures else None for path in report.FIGURES.values()
        },
    )


def test_lock_versions_reads_the_md5_of_data_and_model():
    assert report.lock_versions(lock(M1)) == {
        "data/raw": RAW,
        "data/prepared": PREPARED,
        "models/model.keras": M1,
    }
    assert set(report.lock_versions(None).values()) == {None}  # a side without dvc.lock


def test_per_class_changes_keeps_moves_at_or_above_the_threshold_worst_first():
    base = per_class([0.5] * 10)
    new = per_class([0.5, 0.7, 0.2, 0.51, 0.45, 0.5, 0.5, 0.5, 0.5, 0.5])
    moved = report.per_class_changes(base, new, threshold=0.05)
    assert list(moved["class"]) == [CLASS_NAMES[2], CLASS_NAMES[4], CLASS_NAMES[1]]
    assert moved["change"].round(6).tolist() == [-0.3, -0.05, 0.2]
    assert report.per_class_changes(base, None, 0.05) is None


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [(0.5, 0.6, "+0.1 (+20.0%)"), (0, 2, "+2"), (None, 0.6, "—"), ("a", "b", "—")],
)
def test_fmt_change(old, new, expected):
    assert report.fmt_change(old, new) == expected


def test_render_shows_diffs_per_class_images_and_versions():
    metrics_diff = {
        "metrics/train.json": {"train_seconds": {"old": 2.0, "new": 3.0, "diff": 1.0}},
        "metrics/eval.json": {"test.accuracy": {"old": 0.8, "new": 0.9, "diff": 0.1}},
    }
    params_diff = {"params.yaml": {"train.epochs": {"old": 1, "new": 2, "diff": 1}}}
    base = snap("main (abc1234)", M1, [0.5] * 10)
    new = snap("workspace", M2, [0.5] * 9 + [0.9])
    text, assets = report.render(base, new, metrics_diff, params_diff, 0.01, "r_assets")

    assert "- **test.accuracy**: 0.8 → 0.9, +0.1 (+12.5%)" in text
    assert "- **params changed**: `train.epochs`" in text
    assert "- **versions changed**: model" in text
    # eval.json first: model quality before the run record.
    assert text.index("`test.accuracy` | 0.8 | 0.9 |") < text.index("`train_seconds`")
    assert "| `params.yaml` | `train.epochs` | 1 | 2 |" in text
    assert f"| {CLASS_NAMES[9]} | 0.500 | 0.900 | +0.400 |" in text
    assert text.count("| same |") == 2 and f"`{M1}` | `{M2}` | **changed** |" in text
    assert set(assets) == {
        "base-confusion_matrix.png",
        "new-confusion_matrix.png",
        "base-training_curves.png",
        "new-training_curves.png",
    }
    assert "(r_assets/base-confusion_matrix.png)" in text
    assert assets["new-confusion_matrix.png"].endswith(b"workspace")


def test_render_names_a_custom_dataset_version():
    custom = {
        "canonical": False,
        "train": {"examples": 305, "added": 5, "removed": 0, "relabelled": 3},
        "test": {"examples": 100, "added": 0, "removed": 0, "relabelled": 0},
    }
    base = dataclasses.replace(snap("main", M1, None), dataset={"canonical": True})
    new = dataclasses.replace(snap("workspace", M1, None), dataset=custom)
    text, _ = report.render(base, new, {}, {}, 0.01, "a")
    assert (
        "| dataset | `metrics/dataset.json` | canonical Fashion-MNIST | custom, against "
        "canonical Fashion-MNIST: train 305 examples (+5 added, 3 relabelled), test 100 "
        "examples (unchanged) | **changed** |"
    ) in text


def test_render_says_what_a_side_lacks_and_warns_of_a_stale_workspace():
    base = snap("main", M1, None, figures=False)
    new = snap("workspace", M1, [0.5] * 10)
    text, assets = report.render(base, new, {}, {}, 0.01, "a", stale=["train"])
    assert "No metric changed." in text and "No param changed." in text
    assert "main has no `metrics/per_class.csv`" in text
    assert "no `metrics/figures/confusion_matrix.png`" in text
    assert "not reproduced (`dvc status`: train changed)" in text
    assert "versions changed**: none" in text
    assert set(assets) == {"new-confusion_matrix.png", "new-training_curves.png"}


# A tiny repo with the files the report reads, written by hand: real git and dvc, no training.
DVC_YAML = {"metrics": ["metrics/eval.json"], "params": ["params.yaml"]}


def commit_side(repo: Path, accuracy: float, epochs: int, model_md5: str, f1: list[float]):
    (repo / "metrics" / "figures").mkdir(parents=True, exist_ok=True)
    (repo / "params.yaml").write_text(yaml.safe_dump({"train": {"epochs": epochs}}))
    (repo / "metrics/eval.json").write_text(json.dumps({"test": {"accuracy": accuracy}}))
    per_class(f1).to_csv(repo / report.PER_CLASS, index=False)
    (repo / "dvc.lock").write_bytes(lock(model_md5))
    for path in report.FIGURES.values():
        (repo / path).write_bytes(PNG + model_md5.encode())
    helpers.git("add", "-A", cwd=repo)
    helpers.git("commit", "-qm", f"epochs {epochs}", cwd=repo)


@pytest.fixture
def two_commits(tmp_path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    helpers.git("init", "-q", cwd=repo)
    helpers.git("config", "user.email", "test@example.com", cwd=repo)
    helpers.git("config", "user.name", "test", cwd=repo)
    helpers.dvc("init", "-q", cwd=repo)
    (repo / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML))
    commit_side(repo, 0.5, 1, M1, [0.5] * 10)
    helpers.git("tag", "base", cwd=repo)
    commit_side(repo, 0.75, 3, M2, [0.9] + [0.5] * 9)
    return repo


def fmnist(*args: str, cwd: Path, check: bool = True):
    return helpers.run([sys.executable, "-m", "fmnist.cli", *args], cwd=cwd, check=check)


@pytest.mark.slow  # runs git and dvc
def test_report_command_writes_markdown_and_images(two_commits):
    repo = two_commits
    fmnist("report", "--base", "base", "--rev", "HEAD", "-o", "out/review.md", cwd=repo)
    text = (repo / "out/review.md").read_text()
    assert "**HEAD (" in text and "compared with **base (" in text
    assert "| `metrics/eval.json` | `test.accuracy` | 0.5 | 0.75 | +0.25 (+50.0%) |" in text
    assert "| `params.yaml` | `train.epochs` | 1 | 3 |" in text
    assert f"| {CLASS_NAMES[0]} | 0.500 | 0.900 | +0.400 |" in text
    assets = repo / "out/review_assets"
    assert (
        assets / "base-confusion_matrix.png"
    ).read_bytes() == PNG + M1.encode()  # via `git show`
    assert (assets / "new-confusion_matrix.png").read_bytes() == PNG + M2.encode()
    assert "(review_assets/base-confusion_matrix.png)" in text


@pytest.mark.slow  # runs git and dvc
def test_report_on_the_workspace_sees_uncommitted_changes(two_commits):
    repo = two_commits
    (repo / "params.yaml").write_text(yaml.safe_dump({"train": {"epochs": 7}}))
    fmnist("report", "--base", "HEAD", "-o", "report.md", cwd=repo)
    text = (repo / "report.md").read_text()
    assert "**workspace** compared with **HEAD (" in text
    assert "| `params.yaml` | `train.epochs` | 3 | 7 |" in text


@pytest.mark.slow  # runs git and dvc
def test_an_experiment_name_is_a_rev(two_commits):
    repo = two_commits
    head = helpers.git("rev-parse", "HEAD", cwd=repo).strip()
    helpers.git("update-ref", f"refs/exps/ab/{head}/tall-lion", "base", cwd=repo)
    side = report.resolve("tall-lion", repo)
    assert side.commit == helpers.git("rev-parse", "base", cwd=repo).strip()
    helpers.git("update-ref", f"refs/exps/cd/{head}/tall-lion", "HEAD", cwd=repo)
    with pytest.raises(PipelineError, match="ambiguous"):
        report.resolve("tall-lion", repo)


@pytest.mark.slow  # runs git and dvc
def test_an_unknown_rev_fails_with_one_line_and_writes_nothing(two_commits):
    proc = fmnist("report", "--base", "mian", "-o", "report.md", cwd=two_commits, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "error: unknown revision 'mian': not a git commit, branch or tag, nor an experiment"
    )
    assert not (two_commits / "report.md").exists()
    assert not (two_commits / "report_assets").exists()


@pytest.mark.slow  # runs git
def test_outside_a_git_repository_it_says_so(tmp_path):
    proc = fmnist("report", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "is not in a git repository" in proc.stderr
    assert not (tmp_path / "report.md").exists()
