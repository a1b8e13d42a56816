"""The PR workflow: valid against GitHub's schema (offline), and it runs the review flow."""

from __future__ import annotations

import shlex
import subprocess
import sys

import pytest
import yaml

import helpers
from fmnist import cli
from fmnist.tools import report

WORKFLOW = helpers.ROOT / ".github" / "workflows" / "pr.yml"


def check_workflow(path) -> subprocess.CompletedProcess:
    """Validate a workflow file with check-jsonschema's bundled GitHub-workflow schema."""
    cmd = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows"]
    return helpers.run([*cmd, str(path)], cwd=helpers.ROOT, check=False)


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


@pytest.fixture(scope="module")
def steps(workflow) -> list[dict]:
    """The steps of the job that reproduces and reports."""
    return workflow["jobs"]["report"]["steps"]


@pytest.fixture(scope="module")
def check_steps(workflow) -> list[dict]:
    """The steps of the job that lints and runs the fast tests."""
    return workflow["jobs"]["checks"]["steps"]


def runs(steps: list[dict]) -> list[str]:
    return [step["run"] for step in steps if "run" in step]


def test_the_workflow_matches_githubs_schema():
    proc = check_workflow(WORKFLOW)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_schema_check_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "pr.yml"
    # `runs-on` misspelled: GitHub would reject the file.
    broken.write_text(WORKFLOW.read_text().replace("runs-on:", "run-on:"))
    proc = check_workflow(broken)
    assert proc.returncode != 0 and "run-on" in proc.stdout + proc.stderr


def test_it_runs_on_pull_requests_with_full_history(workflow, steps):
    # PyYAML reads the key `on` as True (YAML 1.1).
    assert "pull_request" in workflow[True]
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0  # origin/main must be there to compare with
    assert workflow["permissions"]["pull-requests"] == "write"


def test_credentials_come_from_a_secret(steps):
    auth = next(s for s in steps if s.get("uses", "").startswith("google-github-actions/auth@"))
    assert auth["with"]["credentials_json"] == "${{ secrets.GCP_SA_KEY }}"
    text = WORKFLOW.read_text()
    assert "private" + "_key" not in text and "BEGIN PRIVATE" not in text


def test_it_pulls_reproduces_reports_and_comments_in_that_order(steps):
    commands = runs(steps)
    order = [
        next(i for i, c in enumerate(commands) if c.startswith(prefix))
        for prefix in (
            "make venv",
            "dvc pull -r gcs --allow-missing",
            "dvc repro",
            "fmnist report --base origin/main -o report.md",
            "cml comment update",
        )
    ]
    assert order == sorted(order)
    assert any(s.get("uses", "").startswith("iterative/setup-cml@") for s in steps)
    # The steps after it run in the environment built from the lock.
    assert '"$PWD/.venv/bin" >> "$GITHUB_PATH"' in commands[order[0]]
    assert not any("pip install" in c for c in commands)


def test_the_report_step_calls_a_real_command_with_valid_arguments(steps):
    (command,) = [c for c in runs(steps) if c.startswith("fmnist ")]
    name, *args = shlex.split(command)[1:]
    assert name in cli.COMMANDS
    parsed = report.parser().parse_args(args)
    assert (parsed.base, parsed.rev, parsed.out) == ("origin/main", report.WORKSPACE, "report.md")


def test_lint_and_the_fast_tests_run_before_anything_is_reproduced(workflow, check_steps):
    commands = runs(check_steps)
    assert commands.index("make lint") < commands.index("make test-fast")
    assert not any("pip install" in c for c in commands)  # make builds .venv from the lock
    # The report job, which pulls, reproduces and trains, waits for them.
    assert workflow["jobs"]["report"]["needs"] == "checks"
    assert not any(c.startswith(("dvc ", "fmnist ")) for c in commands)


def test_the_make_targets_ci_runs_exist_and_the_fast_tier_skips_slow_tests():
    assert {"lint", "test-fast"} <= helpers.make_targets()
    dry = subprocess.run(
        ["make", "-n", "test-fast"], cwd=helpers.ROOT, capture_output=True, text=True
    )
    assert dry.returncode == 0, dry.stderr
    assert '-m pytest -m "not slow"' in dry.stdout
