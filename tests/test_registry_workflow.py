"""The registry gate workflow: valid against GitHub's schema (offline), triggered by every stage
tag, judging it with the default branch's code and rules, and withdrawing a tag that fails."""

from __future__ import annotations

import fnmatch
import shlex

import pytest
import yaml

import helpers
from fmnist import cli
from fmnist.tools import promote, registry
from test_workflow import check_workflow

WORKFLOW = helpers.ROOT / ".github" / "workflows" / "registry.yml"
NAME = registry.ARTIFACT


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


@pytest.fixture(scope="module")
def steps(workflow) -> list[dict]:
    (job,) = workflow["jobs"].values()
    return job["steps"]


def test_the_workflow_matches_githubs_schema():
    proc = check_workflow(WORKFLOW)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("tag", "runs"),
    [
        (f"{NAME}#prod#3", True),  # an assignment
        (f"{NAME}#staging#12", True),
        (f"{NAME}#prod!#4", True),  # an unassignment: checked, and passes (check-tag says so)
        (f"{NAME}@v1.2.0", False),  # a registration
        ("other-model#prod#1", False),
    ],
)
def test_it_runs_on_every_stage_tag_of_the_model(workflow, tag, runs):
    # PyYAML reads the key `on` as True (YAML 1.1); GitHub's tag filters are fnmatch-like.
    patterns = workflow[True]["push"]["tags"]
    assert any(fnmatch.fnmatchcase(tag, p) for p in patterns) is runs
    assert "branches" not in workflow[True]["push"]


def test_it_judges_with_the_default_branch_and_every_tag(steps):
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["ref"] == "${{ github.event.repository.default_branch }}"
    assert checkout["with"]["fetch-depth"] == 0


def test_it_may_push_the_withdrawal_and_reads_the_remote_with_a_secret(workflow, steps):
    assert workflow["permissions"] == {"contents": "write"}
    assert workflow["concurrency"]["cancel-in-progress"] is False  # every tag is judged
    auth = next(s for s in steps if s.get("uses", "").startswith("google-github-actions/auth@"))
    assert auth["with"]["credentials_json"] == "${{ secrets.GCP_SA_KEY }}"


def test_the_check_calls_a_real_command_with_the_tag_from_the_environment(steps, monkeypatch):
    (step,) = [s for s in steps if s.get("run", "").startswith("fmnist ")]
    # The tag name is user input: through the environment, never spliced into the script.
    assert step["env"]["TAG"] == "${{ github.ref_name }}"
    assert "${{" not in step["run"]
    name, *args = shlex.split(step["run"])[1:]
    assert name == "check-tag" and name in cli.COMMANDS
    seen = {}

    def fake_check_tag(repo, tag, reject, push, remote):
        seen.update(repo=repo, tag=tag, reject=reject, push=push, remote=remote)
        return promote.Verdict("v1.0.0", "0" * 40, [], ["passes"])

    monkeypatch.setattr(promote, "check_tag", fake_check_tag)
    assert promote.check_tag_main([a.replace("$TAG", f"{NAME}#prod#3") for a in args]) == 0
    assert seen == {
        "repo": ".",
        "tag": f"{NAME}#prod#3",
        "reject": True,
        "push": True,
        "remote": "gcs",
    }
    assert "['remote \"gcs\"']" in (helpers.ROOT / ".dvc" / "config").read_text()
