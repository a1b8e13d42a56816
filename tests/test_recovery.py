"""Failures that say how to get back: DVC removes a stage's outputs before running it, and a
failing stage's error line ends with the commands that restore them."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys

import pytest
import yaml

import helpers
from fmnist import errors, launch
from fmnist.errors import DataError, report_errors
from fmnist.stages import __main__ as entry
from helpers import ROOT, dvc, git

SPEC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PREPARE_CACHED = ["data/prepared"]
PREPARE_IN_GIT = [
    "metrics/provenance/prepare.json",
    "metrics/data.json",
    "metrics/figures/samples.png",
    "metrics/dataset.json",
]


@pytest.fixture
def no_hint():
    yield
    errors.set_hint("")


def test_stage_outputs_split_what_dvc_caches_from_what_git_keeps():
    assert entry.stage_outputs(SPEC, "prepare") == (PREPARE_CACHED, PREPARE_IN_GIT)
    assert entry.stage_outputs(SPEC, "fetch") == (["data/raw"], ["metrics/provenance/fetch.json"])
    assert entry.stage_outputs(SPEC, "nope") == ([], [])


def test_the_hint_names_only_what_git_can_restore(tmp_path):
    git("init", "-q", cwd=tmp_path)
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "metrics/figures").mkdir(parents=True)
    (tmp_path / "metrics/data.json").write_text("{}")
    (tmp_path / "metrics/figures/samples.png").write_bytes(b"png")
    git("add", "-A", cwd=tmp_path)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run", cwd=tmp_path)
    (tmp_path / "metrics/dataset.json").write_text("{}")  # never committed
    assert entry.restore_hint("prepare", tmp_path) == ""  # no dvc.lock: no run to get back
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"stages": {"fetch": {}, "prepare": {}}}))
    assert entry.restore_hint("prepare", tmp_path) == (
        "DVC removed this stage's outputs before running it; to get the last run's back: "
        "`dvc checkout prepare` (data/prepared, as dvc.lock records them), then "
        "`git checkout HEAD -- metrics/data.json metrics/figures/samples.png` (as last committed)"
    )
    assert entry.restore_hint("fetch", tmp_path).endswith(
        "`dvc checkout fetch` (data/raw, as dvc.lock records them)"
    )
    assert entry.restore_hint("prepare", tmp_path / "absent") == ""  # no dvc.yaml: no hint


def test_an_error_line_ends_with_the_hint(capsys, no_hint):
    @report_errors
    def failing(argv):
        raise DataError("data/raw: missing")

    assert failing([]) == 1
    assert capsys.readouterr().err == "error: data/raw: missing\n"  # no hint set: none shown
    errors.set_hint("to get it back: `dvc checkout fetch`")
    assert failing([]) == 1
    assert (
        capsys.readouterr().err
        == "error: data/raw: missing. to get it back: `dvc checkout fetch`\n"
    )

    def interrupted(argv):
        raise KeyboardInterrupt

    assert launch.run(interrupted, [], "train") == 130
    assert capsys.readouterr().err.splitlines()[-1] == (
        "train: interrupted (Ctrl-C); nothing was half-written. "
        "to get it back: `dvc checkout fetch`"
    )


def test_a_stage_run_by_hand_gives_no_hint(tmp_path):
    # Outside DVC nothing removed the outputs: the stage's own writes are atomic.
    proc = helpers.run(
        [sys.executable, "-m", "fmnist.stages", "prepare", "--params", str(ROOT / "params.yaml")]
        + ["--raw", str(tmp_path / "absent")],
        cwd=tmp_path,
        check=False,
        env={"DVC_STAGE": ""},
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "DVC removed" not in proc.stderr


def files_under(repo, paths: list[str]) -> dict[str, str]:
    """md5 of every file at or under `paths`."""
    out = {}
    for path in paths:
        target = repo / path
        found = [target] if target.is_file() else sorted(target.rglob("*"))
        for file in found:
            if file.is_file():
                out[str(file.relative_to(repo))] = hashlib.md5(file.read_bytes()).hexdigest()
    return out


@pytest.mark.slow
def test_a_failed_stage_names_the_commands_that_restore_its_outputs(reproduced_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(reproduced_repo, repo, symlinks=True)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "a good run", cwd=repo)
    outputs = PREPARE_CACHED + PREPARE_IN_GIT
    before = files_under(repo, outputs)
    assert len(before) == 8  # 3 splits, a manifest; provenance, class counts, dataset; a figure
    lock_before = (repo / "dvc.lock").read_text()

    # Valid params, but too few validation images for a stratified split of 10 classes.
    helpers.set_params(repo / "params.yaml", {"prepare.val_fraction": 0.01})
    failed = dvc("repro", "prepare", cwd=repo, check=False)
    assert failed.returncode != 0
    line = next(x for x in failed.stderr.splitlines() if x.startswith("error: "))
    assert "cannot make a stratified split with prepare.val_fraction 0.01" in line
    assert "DVC removed this stage's outputs before running it" in line
    assert files_under(repo, outputs) == {}  # DVC removed all of them, git-kept ones too
    assert (repo / "dvc.lock").read_text() == lock_before

    commands = re.findall(r"`([^`]+)`", line.split("DVC removed")[1])
    assert commands == [
        "dvc checkout prepare",
        "git checkout HEAD -- " + " ".join(PREPARE_IN_GIT),
    ]
    for command in commands:
        subprocess.run(command, shell=True, cwd=repo, check=True, capture_output=True)
    assert files_under(repo, outputs) == before
    git("checkout", "HEAD", "--", "params.yaml", cwd=repo)
    assert "up to date" in dvc("status", cwd=repo).stdout
    assert json.loads((repo / "metrics/dataset.json").read_text())["canonical"] is False
