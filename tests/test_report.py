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


# A run record as the train stage writes it: the environment (the fields the report compares)
# and others.
RUN = {**helpers.TRAINING_ENVIRONMENT, "train_seconds": 465.1}


def snap(
    title: str,
    model_md5: str,
    f1: list[float] | None,
    figures: bool = True,
    scores: dict | None = None,
    run: dict | None = RUN,
):
    return report.Snapshot(
        title=title,
        versions=report.lock_versions(lock(model_md5)),
        per_class=None if f1 is None else per_class(f1),
        figures={
            path: PNG + title.encode() if figures else None for path in report.FIGURES.values()
        },
        scores=scores,
        run=run,
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
    [
        (0.5, 0.6, "+0.1 (+20%)"),
        (0.1632, 0.16315, "-5e-05 (-0.031%)"),  # a small change stays visible
        (0, 2, "+2"),
        (None, 0.6, "—"),
        ("a", "b", "—"),
    ],
)
def test_fmt_change(old, new, expected):
    assert report.fmt_change(old, new) == expected


TEN_THOUSAND = {"test": {"examples": 10000}, "val": {"examples": 6000}}


@pytest.mark.parametrize(
    ("key", "old", "new", "base_scores", "expected"),
    [
        ("test.accuracy", 0.9438, 0.9450, TEN_THOUSAND, "+0.12 pp (+12 of 10,000 test images)"),
        ("test.accuracy", 0.9450, 0.9438, TEN_THOUSAND, "-0.12 pp (-12 of 10,000 test images)"),
        ("val.accuracy", 0.9, 0.9005, TEN_THOUSAND, "+0.05 pp (+3 of 6,000 validation images)"),
        # Scored on different test sets: the images would not be the same images.
        ("test.accuracy", 0.9438, 0.9450, {"test": {"examples": 9000}}, "+0.12 pp"),
        ("test.accuracy", 0.9438, 0.9450, None, "+0.12 pp"),
        ("test.f1_macro", 0.9436, 0.9401, TEN_THOUSAND, "-0.35 pp"),  # not a count of images
        ("test.accuracy", None, 0.9, TEN_THOUSAND, "—"),
    ],
)
def test_rates_change_in_points_and_accuracies_in_images(key, old, new, base_scores, expected):
    assert report.fmt_points(key, old, new, base_scores, TEN_THOUSAND) == expected


def test_the_training_setup_is_compared_field_by_field():
    changed = {**RUN, "precision": "float32", "tensorflow": "2.20.0", "train_seconds": 1.0}
    assert report.setup_changes(RUN, changed) == [
        "precision `mixed_bfloat16` → `float32`",
        "TensorFlow `2.21.0` → `2.20.0`",
    ]  # time and speed are not the setup
    assert report.setup_changes(RUN, {**RUN, "train_seconds": 9.9}) == []
    assert report.setup_changes(None, RUN) is None


def test_render_shows_diffs_per_class_images_and_versions():
    metrics_diff = {
        "metrics/train.json": {"train_seconds": {"old": 2.0, "new": 3.0, "diff": 1.0}},
        "metrics/eval.json": {"test.accuracy": {"old": 0.8, "new": 0.9, "diff": 0.1}},
    }
    params_diff = {"params.yaml": {"train.epochs": {"old": 1, "new": 2, "diff": 1}}}
    base = snap("main (abc1234)", M1, [0.5] * 10, scores=TEN_THOUSAND)
    new = snap("workspace", M2, [0.5] * 9 + [0.9], scores=TEN_THOUSAND)
    text, assets = report.render(base, new, metrics_diff, params_diff, 0.01, "r_assets")

    summary = "- **test.accuracy**: 80.00% → 90.00%, +10.00 pp (+1,000 of 10,000 test images)"
    assert summary in text
    assert "- **params changed**: `train.epochs`" in text
    assert "- **training setup**: the same (precision mixed_bfloat16, device CPU" in text
    assert "- **versions changed**: model" in text
    # eval.json first: model quality before the other files.
    row = "| `metrics/eval.json` | `test.accuracy` | 80.00% | 90.00% | +10.00 pp (+1,000 of"
    assert text.index(row) < text.index("`train_seconds`")
    assert "| `params.yaml` | `train.epochs` | 1 | 2 |" in text
    assert f"| {CLASS_NAMES[9]} | 0.500 | 0.900 | +0.400 |" in text
    versions = text.split("## Data and model versions")[1].split("## Training environment")[0]
    assert versions.count("| same |") == 2 and f"`{M1}` | `{M2}` | **changed** |" in versions
    assert set(assets) == {
        "base-confusion_matrix.png",
        "new-confusion_matrix.png",
        "base-training_curves.png",
        "new-training_curves.png",
    }
    assert "(r_assets/base-confusion_matrix.png)" in text
    assert assets["new-confusion_matrix.png"].endswith(b"workspace")


def test_two_runs_that_differ_only_in_environment_are_told_apart():
    other = {**RUN, "tensorflow": "2.22.0", "precision": "float32", "lock_sha256": "9" * 64}
    base = snap("main", M1, [0.5] * 10)
    new = snap("workspace", M2, [0.5] * 10, run=other)
    text, _ = report.render(base, new, {}, {}, 0.01, "a")
    assert "- **params changed**: none" in text
    assert (
        "- **training setup changed**: precision `mixed_bfloat16` → `float32`; TensorFlow "
        f"`2.21.0` → `2.22.0`; lock_sha256 `{'8' * 64}` → `{'9' * 64}` "
        "(this alone can move the metrics)"
    ) in text
    table = text.split("## Training environment")[1]
    assert "| `tensorflow` | 2.21.0 | 2.22.0 | **changed** |" in table
    assert "| `keras` | 3.15.1 | 3.15.1 | same |" in table
    assert "| `onednn` | True | True | same |" in table


def test_a_record_from_before_the_environment_was_recorded_says_so():
    old = {"precision": "mixed_bfloat16", "tensorflow": "2.21.0"}  # no lock, no numpy
    assert report.read_json_blob(b"{not json") is None
    base = snap("main", M1, [0.5] * 10, run=old)
    new = snap("workspace", M1, [0.5] * 10)
    text, _ = report.render(base, new, {}, {}, 0.01, "a")
    table = text.split("## Training environment")[1]
    assert "| `numpy` | (not recorded) | 2.4.6 | **changed** |" in table
    assert "| `precision` | mixed_bfloat16 | mixed_bfloat16 | same |" in table


def test_render_flags_a_changed_training_setup():
    base = snap("main", M1, [0.5] * 10)
    new = snap("workspace", M1, [0.5] * 10, run={**RUN, "precision": "float32"})
    text, _ = report.render(base, new, {}, {}, 0.01, "a")
    assert (
        "- **training setup changed**: precision `mixed_bfloat16` → `float32` "
        "(this alone can move the metrics)"
    ) in text


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
    base = snap("main", M1, None, figures=False, run=None)
    new = snap("workspace", M1, [0.5] * 10, scores={"test": {"accuracy": 0.5}})
    text, assets = report.render(base, new, {}, {}, 0.01, "a", stale=["train"])
    assert "- **test.accuracy**: unchanged (50.00%)" in text
    assert "- **training setup**: unknown (main has no `metrics/runs/train.json`)" in text
    assert "No metric changed." in text and "No param changed." in text
    assert "main has no `metrics/per_class.csv`" in text
    assert "no `metrics/figures/confusion_matrix.png`" in text
    assert "not reproduced (`dvc status`: train changed)" in text
    assert "versions changed**: none" in text
    assert set(assets) == {"new-confusion_matrix.png", "new-training_curves.png"}


# A tiny repo with the files the report reads, written by hand: real git and dvc, no training.
DVC_YAML = {"metrics": ["metrics/eval.json"], "params": ["params.yaml"]}


def commit_side(
    repo: Path,
    accuracy: float,
    epochs: int,
    model_md5: str,
    f1: list[float],
    precision: str = "mixed_bfloat16",
    run: dict = RUN,
):
    (repo / "metrics" / "runs").mkdir(parents=True, exist_ok=True)
    (repo / "metrics" / "figures").mkdir(parents=True, exist_ok=True)
    (repo / "params.yaml").write_text(yaml.safe_dump({"train": {"epochs": epochs}}))
    scores = {"test": {"accuracy": accuracy, "examples": 4}}
    (repo / "metrics/eval.json").write_text(json.dumps(scores))
    (repo / report.RUN_RECORD).write_text(json.dumps({**run, "precision": precision}))
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
    commit_side(repo, 0.5, 1, M1, [0.5] * 10, "mixed_bfloat16")
    helpers.git("tag", "base", cwd=repo)
    commit_side(repo, 0.75, 3, M2, [0.9] + [0.5] * 9, "float32")
    return repo


def fmnist(*args: str, cwd: Path, check: bool = True):
    return helpers.run([sys.executable, "-m", "fmnist.cli", *args], cwd=cwd, check=check)


@pytest.mark.slow  # runs git and dvc
def test_report_command_writes_markdown_and_images(two_commits):
    repo = two_commits
    fmnist("report", "--base", "base", "--rev", "HEAD", "-o", "out/review.md", cwd=repo)
    text = (repo / "out/review.md").read_text()
    assert "**HEAD (" in text and "compared with **base (" in text
    assert "- **test.accuracy**: 50.00% → 75.00%, +25.00 pp (+1 of 4 test images)" in text
    assert "- **training setup changed**: precision `mixed_bfloat16` → `float32`" in text
    row = "| `metrics/eval.json` | `test.accuracy` | 50.00% | 75.00% | +25.00 pp (+1 of 4 test"
    assert row in text
    assert "| `params.yaml` | `train.epochs` | 1 | 3 |" in text
    assert f"| {CLASS_NAMES[0]} | 0.500 | 0.900 | +0.400 |" in text
    assets = repo / "out/review_assets"
    assert (
        assets / "base-confusion_matrix.png"
    ).read_bytes() == PNG + M1.encode()  # via `git show`
    assert (assets / "new-confusion_matrix.png").read_bytes() == PNG + M2.encode()
    assert "(review_assets/base-confusion_matrix.png)" in text


@pytest.mark.slow  # runs git and dvc
def test_the_command_tells_apart_commits_that_differ_only_in_environment(two_commits):
    repo = two_commits
    on_intel = {**RUN, "device": "CPU (Intel Xeon, 2 cores)"}
    commit_side(repo, 0.75, 3, M1, [0.9] + [0.5] * 9, "mixed_bfloat16", run=on_intel)
    fmnist("report", "--base", "HEAD~1", "--rev", "HEAD", "-o", "r.md", cwd=repo)
    text = (repo / "r.md").read_text()
    assert "- **params changed**: none" in text
    assert "device `CPU (AMD EPYC, 2 cores)` → `CPU (Intel Xeon, 2 cores)`" in text
    assert "precision `float32` → `mixed_bfloat16`" in text


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


def test_the_summary_docs_review_md_shows_is_what_the_report_writes():
    base = snap("main", M1, [0.5] * 10, scores=TEN_THOUSAND)
    new = snap(
        "workspace", M2, [0.5] * 10, scores=TEN_THOUSAND, run={**RUN, "precision": "float32"}
    )
    metrics_diff = {"metrics/eval.json": {"test.accuracy": {"old": 0.9438, "new": 0.945}}}
    params_diff = {"params.yaml": {"train.epochs": {"old": 30, "new": 50}}}
    lines = report.summary(base, new, metrics_diff, params_diff)
    documented = (helpers.ROOT / "docs" / "review.md").read_text()
    for line in lines:
        assert line in documented, line
