"""Where commands run: `fmnist` at the repository root or it says where that is; what DVC does
from a subdirectory (docs/data.md says the same)."""

from __future__ import annotations

import shutil

import pytest

from fmnist import cli
from helpers import dvc


@pytest.fixture
def project(tmp_path):
    """A directory that looks like a DVC project to `fmnist` (dvc.yaml, .dvc/), and its src/."""
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "src" / "fmnist").mkdir(parents=True)
    return tmp_path


def test_from_a_subdirectory_fmnist_says_where_the_root_is(project, monkeypatch, capsys):
    monkeypatch.chdir(project / "src" / "fmnist")
    assert cli.main(["lineage"]) == 2
    assert capsys.readouterr().err == (
        f"error: run `fmnist lineage` at the repository root, {project}, where dvc.yaml is "
        "(its paths are relative to it, as DVC's are): cd ../..\n"
    )


def test_at_the_root_and_outside_any_project_fmnist_runs(project, tmp_path, monkeypatch, capsys):
    (project / "params.yaml").write_text("fetch: {}\n")
    monkeypatch.chdir(project)
    assert cli.main(["params"]) == 1  # it ran: the params file is incomplete
    assert "missing key 'fetch.dataset'" in capsys.readouterr().err
    assert cli.project_root(project / "src") == project
    elsewhere = project / "src"
    shutil.rmtree(project / ".dvc")  # no longer a project: nothing to say about a root
    monkeypatch.chdir(elsewhere)
    assert cli.project_root(elsewhere) is None
    assert cli.main(["params"]) == 1
    assert "params.yaml: file not found" in capsys.readouterr().err


@pytest.mark.slow
def test_dvc_from_a_subdirectory_does_what_the_docs_say(reproduced_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(reproduced_repo, repo, symlinks=True)
    src = repo / "src"
    # `dvc repro` without a target reads the dvc.yaml of the current directory ...
    failed = dvc("repro", cwd=src, check=False)
    assert failed.returncode != 0 and f"'{src / 'dvc.yaml'}' does not exist" in failed.stderr
    # ... given the pipeline's file, or for status and metrics, it works from anywhere.
    assert "didn't change, skipping" in dvc("repro", "../dvc.yaml", cwd=src).stdout
    assert "up to date" in dvc("status", cwd=src).stdout
    assert "test.accuracy" in dvc("metrics", "show", cwd=src).stdout
