"""The registry read through GTO, and the promotion gates, on small git repos with GTO tags
(no training, no DVC remote: the prod gate's package checks run in tests/test_release.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from fmnist.errors import PipelineError
from fmnist.tools import lineage, promote, registry
from fmnist.tools.promote import Policy, PromotionRefused
from helpers import ROOT, git

NAME = registry.ARTIFACT
POLICY = Policy(("dev", "staging", "prod"), 0.0)


# --- the gates as pure functions ------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "held", "problem"),
    [
        ("dev", [], None),
        ("staging", ["dev"], None),
        ("prod", ["dev", "staging"], None),
        ("staging", [], "v1.0.0 is not in dev, so it cannot enter staging"),
        ("prod", ["dev"], "v1.0.0 is not in staging, so it cannot enter prod"),
        ("prod", ["dev", "staging", "prod"], "v1.0.0 is already in prod"),
        ("production", ["dev"], "'production' is not a stage; the stages are dev, staging"),
    ],
)
def test_stages_go_in_order(stage, held, problem):
    found = promote.order_problems(POLICY, "v1.0.0", stage, held)
    assert found == [] if problem is None else problem in found[0]


def test_the_approval_lives_in_the_annotation_and_is_read_back():
    message = promote.approval_message("v1.0.0", "staging", "J. Doe", "card reviewed")
    assert promote.parse_approval(message) == ("J. Doe", "card reviewed")
    assert promote.approval_problems("staging", message) == []
    assert promote.approval_problems("dev", "no approval needed") == []
    (problem,) = promote.approval_problems("staging", "Approved-by: J. Doe\n")  # no reason
    assert "staging needs an approval" in problem
    assert promote.parse_approval("Approved-by:   \nReason: x") is None  # nobody
    with pytest.raises(PipelineError, match="Reason: give one non-empty line"):
        promote.approval_message("v1.0.0", "staging", "J. Doe", "two\nlines")


@pytest.mark.parametrize(
    ("accuracy", "prod", "tolerance", "problem"),
    [
        (0.90, None, 0.0, None),  # nothing in prod yet
        (0.90, ("v1.0.0", 0.90), 0.0, None),  # equal is not worse
        (0.95, ("v1.0.0", 0.90), 0.0, None),
        (0.899, ("v1.0.0", 0.90), 0.0, "test.accuracy 0.8990 of v1.1.0 is 0.0010 below"),
        (0.899, ("v1.0.0", 0.90), 0.002, None),  # within the configured tolerance
        (0.897, ("v1.0.0", 0.90), 0.002, "allowed drop 0.002"),
        (None, ("v1.0.0", 0.90), 0.0, "v1.1.0 has no test.accuracy"),
    ],
)
def test_prod_needs_an_accuracy_no_worse_than_prod_by_more_than_the_tolerance(
    accuracy, prod, tolerance, problem
):
    found = promote.accuracy_problems(Policy(POLICY.stages, tolerance), "v1.1.0", accuracy, prod)
    assert found == [] if problem is None else problem in found[0]


def test_the_policy_comes_from_gto_and_dvc_yaml(tmp_path):
    assert promote.load_policy(ROOT) == Policy(("dev", "staging", "prod"), 0.0)
    shutil.copy(ROOT / ".gto", tmp_path / ".gto")
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    meta = spec["artifacts"][NAME]["meta"]
    meta["promotion"]["max_accuracy_drop"] = 0.005
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(spec))
    assert promote.load_policy(tmp_path).max_accuracy_drop == 0.005
    for bad in (-0.1, 1.5, "0.01", True):
        meta["promotion"]["max_accuracy_drop"] = bad
        (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(spec))
        with pytest.raises(PipelineError, match="max_accuracy_drop: .* is not a number"):
            promote.load_policy(tmp_path)
    (tmp_path / ".gto").write_text("stages: [dev, prod]\n")
    with pytest.raises(PipelineError, match="must include staging and prod"):
        promote.load_policy(tmp_path)


# --- a registry of GTO tags -----------------------------------------------------------------


class Registry:
    """A git repo with the project's .gto and dvc.yaml, commits with a test accuracy each, and
    GTO's tags written with explicit, increasing times (GTO orders events by tag time)."""

    def __init__(self, path: Path):
        self.path = path
        self.clock = 0
        path.mkdir()
        git("init", "-q", cwd=path)
        for key, value in (("user.email", "t@example.com"), ("user.name", "t")):
            git("config", key, value, cwd=path)
        shutil.copy(ROOT / ".gto", path / ".gto")
        shutil.copy(ROOT / "dvc.yaml", path / "dvc.yaml")

    def commit(self, accuracy: float) -> str:
        metrics = self.path / "metrics"
        metrics.mkdir(exist_ok=True)
        (metrics / "eval.json").write_text(json.dumps({"test": {"accuracy": accuracy}}))
        git("add", "-A", cwd=self.path)
        git("commit", "-qm", f"model {accuracy}", cwd=self.path)
        return git("rev-parse", "HEAD", cwd=self.path).strip()

    def tag(self, name: str, rev: str, message: str = "") -> None:
        self.clock += 10
        env = {"GIT_COMMITTER_DATE": f"2020-01-01T00:{self.clock // 60:02d}:{self.clock % 60:02d}Z"}
        subprocess.run(
            ["git", "tag", "-a", name, rev, "-m", message or name],
            cwd=self.path,
            check=True,
            env={**__import__("os").environ, **env},
        )


@pytest.fixture
def reg(tmp_path) -> Registry:
    """v1.0.0 (accuracy 0.90) through dev, staging and prod; v1.1.0 (0.80) assigned to prod by
    hand (bypassing the gates), then unassigned from prod with `gto deprecate ... prod`."""
    r = Registry(tmp_path / "repo")
    first = r.commit(0.90)
    r.tag(f"{NAME}@v1.0.0", first)
    r.tag(f"{NAME}#dev#1", first)
    r.tag(f"{NAME}#staging#2", first, "x\n\nApproved-by: J. Doe\nReason: reviewed\n")
    r.tag(f"{NAME}#prod#3", first)
    second = r.commit(0.80)
    r.tag(f"{NAME}@v1.1.0", second)
    r.tag(f"{NAME}#prod#4", second)
    r.tag(f"{NAME}#prod!#5", second)  # what `gto deprecate NAME v1.1.0 prod` writes
    r.first, r.second = first, second
    return r


def test_a_stage_follows_gto_so_an_unassignment_hands_prod_back(reg):
    assert registry.resolve(reg.path, stage="prod") == registry.Resolved(
        "v1.0.0", reg.first, "prod"
    )
    assert registry.resolve(reg.path).version == "v1.1.0"  # the latest registered version
    assert registry.resolve(reg.path, version=f"{NAME}@v1.1.0").commit == reg.second


def test_dvc_artifacts_get_stage_follows_the_newest_tag_instead(reg):
    """Why the docs do not recommend `dvc artifacts get --stage`: the tag it picks for prod is
    the unassignment's, which points at the withdrawn version."""
    from dvc.repo import Repo

    Repo.init(reg.path)
    with Repo(reg.path) as repo:
        assert repo.artifacts.get_rev(NAME, stage="prod") == reg.second


def test_a_deregistered_version_leaves_its_stages_and_cannot_be_fetched(reg):
    reg.tag(f"{NAME}@v1.0.0!#6", reg.first)  # `gto deprecate NAME v1.0.0`: deregistered
    with pytest.raises(PipelineError, match="no version of fashion-mnist-cnn is in stage prod"):
        registry.resolve(reg.path, stage="prod")
    with pytest.raises(PipelineError, match="v1.0.0 was deregistered"):
        registry.resolve(reg.path, version="v1.0.0")
    with pytest.raises(PipelineError, match="v9.0.0 is not registered"):
        registry.resolve(reg.path, version="v9.0.0")


def test_a_deprecated_artifact_and_an_empty_registry_are_refused(reg, tmp_path):
    reg.tag(f"{NAME}@deprecated", reg.second)
    with pytest.raises(PipelineError, match="fashion-mnist-cnn is deprecated"):
        registry.resolve(reg.path, stage="prod")
    empty = Registry(tmp_path / "empty")
    empty.commit(0.5)
    with pytest.raises(PipelineError, match="no version of fashion-mnist-cnn is registered"):
        registry.resolve(empty.path)


def test_the_state_before_a_tag_leaves_out_that_tag_and_newer_ones(reg):
    with registry.open_registry(reg.path) as r:
        before = registry.find_artifact(registry.registry_state(r, f"{NAME}#prod#4"), reg.path)
        now = registry.find_artifact(registry.registry_state(r), reg.path)
    assert registry.stage_version(before, "prod").version == "v1.0.0"
    assert registry.active_stages(before.find_version(name="v1.1.0")) == []
    assert registry.stage_version(now, "prod").version == "v1.0.0"  # handed back


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("v1.1.0", "v1.1.0"),
        (f"{NAME}@v1.0.0", "v1.0.0"),
        ("prod", "v1.0.0"),
        (f"{NAME}#prod", "v1.0.0"),
    ],
)
def test_lineage_names_versions_and_stages(reg, name, version):
    commit, resolved = lineage.resolve_name(reg.path, name)
    assert resolved == version
    assert commit == (reg.first if version == "v1.0.0" else reg.second)


def test_lineage_names_commits_and_branches_and_refuses_an_ambiguous_stage(reg):
    assert lineage.resolve_name(reg.path, reg.first[:10]) == (reg.first, None)
    git("branch", "prod", reg.second, cwd=reg.path)
    assert lineage.resolve_name(reg.path, "refs/heads/prod") == (reg.second, None)
    with pytest.raises(PipelineError, match="'prod' is both a registry stage and a git branch"):
        lineage.resolve_name(reg.path, "prod")
    assert lineage.resolve_name(reg.path, f"{NAME}#prod")[0] == reg.first
    with pytest.raises(PipelineError, match="'nope' is not a commit"):
        lineage.resolve_name(reg.path, "nope")


def tags(repo: Path) -> dict[str, str]:
    """Every tag and its annotation."""
    out = git("tag", "-l", "--format=%(refname:short)%00%(contents)%00", cwd=repo)
    items = out.split("\0")
    return {items[i].strip(): items[i + 1] for i in range(0, len(items) - 1, 2)}


def test_promote_goes_in_order_and_records_the_approval(reg):
    third = reg.commit(0.95)
    reg.tag(f"{NAME}@v1.2.0", third)
    with pytest.raises(PromotionRefused, match="v1.2.0 is not in dev, so it cannot enter staging"):
        promote.promote(reg.path, "v1.2.0", "staging", "J. Doe", "reviewed")
    promote.promote(reg.path, "v1.2.0", "dev")
    with pytest.raises(PromotionRefused, match="staging needs an approval"):
        promote.promote(reg.path, "v1.2.0", "staging")
    promote.promote(reg.path, "v1.2.0", "staging", "J. Doe <j@example.com>", "card reviewed")
    (staging,) = [
        t for t in tags(reg.path) if t.startswith(f"{NAME}#staging#") and t != f"{NAME}#staging#2"
    ]
    assert promote.parse_approval(tags(reg.path)[staging]) == (
        "J. Doe <j@example.com>",
        "card reviewed",
    )
    assert registry.resolve(reg.path, stage="staging").version == "v1.2.0"


def test_check_tag_rejects_a_hand_made_assignment_and_withdraws_it(reg):
    third = reg.commit(0.95)
    reg.tag(f"{NAME}@v1.2.0", third)
    reg.tag(f"{NAME}#staging#6", third, "no approval, and never in dev")
    with pytest.raises(PromotionRefused) as refused:
        promote.check_tag(reg.path, f"{NAME}#staging#6")
    assert "not in dev" in str(refused.value) and "needs an approval" in str(refused.value)
    assert registry.resolve(reg.path, stage="staging").version == "v1.2.0"  # not yet withdrawn
    with pytest.raises(PromotionRefused, match=r"\(withdrawn: unassigned\)"):
        promote.check_tag(reg.path, f"{NAME}#staging#6", reject=True)
    assert registry.resolve(reg.path, stage="staging").version == "v1.0.0"
    withdrawal = [t for t in tags(reg.path) if t.startswith(f"{NAME}#staging!#")]
    assert withdrawal and "Rejected fashion-mnist-cnn#staging#6" in tags(reg.path)[withdrawal[0]]


def test_check_tag_passes_valid_history_and_what_is_not_an_assignment(reg):
    assert promote.check_tag(reg.path, f"{NAME}#staging#2").problems == []
    for tag in (f"{NAME}@v1.0.0", f"{NAME}#prod!#5"):
        assert promote.check_tag(reg.path, tag).notes == [
            "not a stage assignment: nothing to check"
        ]
    with pytest.raises(PipelineError, match="not a GTO tag"):
        promote.check_tag(reg.path, "v1.0.0")
