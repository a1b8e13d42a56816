"""The one reader of dvc.yaml / dvc.lock and the one git runner: clear errors, no tracebacks."""

from __future__ import annotations

import pytest
import yaml

from fmnist import dvcfiles
from fmnist import git as fgit
from fmnist.errors import PipelineError
from helpers import ROOT, git


@pytest.fixture
def repo(tmp_path):
    git("init", "-q", cwd=tmp_path)
    git("config", "user.email", "t@example.com", cwd=tmp_path)
    git("config", "user.name", "t", cwd=tmp_path)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"a": {"cmd": "echo  a\n b"}}}))
    git("add", ".", cwd=tmp_path)
    git("commit", "-qm", "spec only", cwd=tmp_path)
    return tmp_path


def test_stage_commands_follow_dvc_yaml_on_one_line():
    commands = dvcfiles.stage_commands(dvcfiles.read_spec(ROOT / "dvc.yaml"))
    assert list(commands)[:2] == ["params", "fetch"]
    assert commands["fetch"].startswith("PYTHONPATH=src python3 -m fmnist.stages fetch")
    assert "\n" not in commands["train"]


def test_a_rev_without_dvc_lock_is_named(repo):
    with pytest.raises(PipelineError, match=r"HEAD has no dvc.lock: .*`dvc repro`"):
        dvcfiles.committed(repo, "HEAD")


def test_a_corrupt_dvc_lock_is_one_error_naming_it(repo):
    (repo / "dvc.lock").write_text("stages: [unclosed\n")
    git("add", ".", cwd=repo)
    git("commit", "-qm", "broken lock", cwd=repo)
    with pytest.raises(PipelineError, match=r"^dvc.lock at HEAD: not valid YAML \(.*line"):
        dvcfiles.committed(repo, "HEAD")


def test_a_committed_lock_and_spec_are_read(repo):
    lock = {"stages": {"a": {"outs": [{"path": "out", "hash": "md5", "md5": "ab12"}]}}}
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock))
    git("add", ".", cwd=repo)
    git("commit", "-qm", "lock", cwd=repo)
    read_lock, spec = dvcfiles.committed(repo, "HEAD")
    assert [o.path for o in dvcfiles.lock_outputs(read_lock, spec)] == ["out"]
    assert dvcfiles.stage_commands(spec) == {"a": "echo a b"}


def test_git_failures_and_unknown_revs_are_pipeline_errors(repo):
    assert fgit.commit_of(repo, "no-such-branch") is None
    with pytest.raises(PipelineError, match="'no-such-branch' is not a commit"):
        fgit.resolve_rev(repo, "no-such-branch")
    with pytest.raises(PipelineError, match="git tag --bogus failed in"):
        fgit.git(repo, "tag", "--bogus")
    assert fgit.git_show(repo, "HEAD", "absent.txt") is None
    assert fgit.git_show(repo, "HEAD", "dvc.yaml", binary=True).startswith(b"stages:")
    assert fgit.is_repo(repo) and not fgit.is_repo(repo.parent)


def test_a_missing_git_is_one_clear_error(repo, monkeypatch):
    monkeypatch.setenv("PATH", str(repo))  # no git here
    with pytest.raises(PipelineError, match="git is not installed"):
        fgit.git(repo, "status")
    assert fgit.git_commit(repo) == {"commit": None, "dirty": None}
