"""Promotion gates: a version moves dev -> staging -> prod in order, through checks.

    fmnist promote v1.2.0 dev
    fmnist promote v1.2.0 staging --approved-by "J. Doe" --reason "card and metrics reviewed"
    fmnist promote v1.2.0 prod

- In order: a version enters a stage only from the one before it in `.gto` (it must hold an
  active assignment there); the first stage takes any registered version.
- `staging` needs an approval: who and why, written into the stage tag's annotation as the
  lines `Approved-by: ...` and `Reason: ...` (so the approval travels with the tag).
- `prod` needs the version's test accuracy to be at most `max_accuracy_drop` below the current
  prod's (`dvc.yaml`, `artifacts: fashion-mnist-cnn: meta: promotion:`; default 0: never
  worse), its package to pass the integrity check (every file against its manifest, the whole
  against the version's dvc.lock) and its lineage to be complete (`fmnist lineage`'s checks).

`fmnist check-tag TAG` applies the same gates to a stage tag that already exists, against the
registry as it was before that tag: `.github/workflows/registry.yml` runs it on every pushed
stage tag, so a `gto assign` that bypassed this command is caught, and with `--reject` it is
withdrawn at once with an unassignment tag that says why.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from gto.constants import Action
from gto.exceptions import GTOException
from gto.tag import parse_name

from fmnist.errors import PipelineError, report_errors
from fmnist.git import git_show
from fmnist.serving.layout import IntegrityError
from fmnist.tools import lineage, registry

APPROVAL_STAGE = "staging"
RELEASE_STAGE = "prod"
APPROVED_BY = "Approved-by"
REASON = "Reason"
METRIC = "test.accuracy"
POLICY_KEY = f"artifacts.{registry.ARTIFACT}.meta.promotion.max_accuracy_drop"


class PromotionRefused(PipelineError):
    """A promotion breaks a gate; the message names every rule it breaks."""


@dataclass(frozen=True)
class Policy:
    """The stages in promotion order (`.gto`) and the prod gate's accuracy tolerance."""

    stages: tuple[str, ...]
    max_accuracy_drop: float = 0.0


def load_policy(repo: str | Path) -> Policy:
    """The policy of the work tree at `repo`: `.gto`'s stages and `dvc.yaml`'s tolerance."""
    root = Path(repo)
    try:
        gto_config = yaml.safe_load((root / ".gto").read_text()) or {}
        spec = yaml.safe_load((root / "dvc.yaml").read_text()) or {}
    except FileNotFoundError as exc:
        raise PipelineError(f"{exc.filename}: missing; run from the repository root") from None
    stages = tuple(gto_config.get("stages") or ())
    if APPROVAL_STAGE not in stages or RELEASE_STAGE not in stages:
        raise PipelineError(
            f"{root / '.gto'}: its stages {list(stages)} must include {APPROVAL_STAGE} and "
            f"{RELEASE_STAGE}, in promotion order"
        )
    artifact = (spec.get("artifacts") or {}).get(registry.ARTIFACT) or {}
    promotion = (artifact.get("meta") or {}).get("promotion") or {}
    drop = promotion.get("max_accuracy_drop", 0.0)
    if isinstance(drop, bool) or not isinstance(drop, int | float) or not 0 <= drop < 1:
        raise PipelineError(f"dvc.yaml {POLICY_KEY}: {drop!r} is not a number in [0, 1)")
    return Policy(stages, float(drop))


# --- the approval, in the tag's annotation ------------------------------------------------


def approval_message(version: str, stage: str, approver: str, reason: str) -> str:
    """The annotation of an approved assignment: a summary line, then who and why."""
    for label, value in ((APPROVED_BY, approver), (REASON, reason)):
        if not value or not value.strip() or "\n" in value:
            raise PipelineError(f"{label}: give one non-empty line")
    return (
        f"{registry.ARTIFACT} {version} -> {stage}\n\n"
        f"{APPROVED_BY}: {approver.strip()}\n{REASON}: {reason.strip()}\n"
    )


def parse_approval(message: str) -> tuple[str, str] | None:
    """(who, why) from a tag annotation, or None when it records no complete approval."""
    fields = dict(re.findall(r"^(Approved-by|Reason):[ \t]*(\S.*?)\s*$", message, re.M))
    if APPROVED_BY in fields and REASON in fields:
        return fields[APPROVED_BY], fields[REASON]
    return None


# --- the gates, as pure functions of the facts ---------------------------------------------


def order_problems(policy: Policy, version: str, stage: str, held: list[str]) -> list[str]:
    """Whether `version`, holding the stages `held`, may enter `stage` next."""
    if stage not in policy.stages:
        return [f"{stage!r} is not a stage; the stages are {', '.join(policy.stages)} (.gto)"]
    if stage in held:
        return [f"{version} is already in {stage}"]
    index = policy.stages.index(stage)
    if index and policy.stages[index - 1] not in held:
        before = policy.stages[index - 1]
        order = " -> ".join(policy.stages)
        return [
            f"{version} is not in {before}, so it cannot enter {stage} (stages go {order}): "
            f"`fmnist promote {version} {before}` first"
        ]
    return []


def approval_problems(stage: str, message: str) -> list[str]:
    """Whether an assignment to `stage` records the approval it needs."""
    if stage == APPROVAL_STAGE and parse_approval(message) is None:
        return [
            f"{stage} needs an approval recorded in the tag: "
            f'--approved-by "NAME" --reason "WHY" (annotation lines {APPROVED_BY}: and {REASON}:)'
        ]
    return []


def accuracy_problems(
    policy: Policy, version: str, accuracy: float | None, prod: tuple[str, float | None] | None
) -> list[str]:
    """Whether `version`'s test accuracy may replace the current prod's (`prod`: its version
    and accuracy, or None when nothing is in prod)."""
    if accuracy is None:
        return [f"{version} has no {METRIC} in its committed metrics/eval.json"]
    if prod is None:
        return []
    prod_version, prod_accuracy = prod
    if prod_accuracy is None:
        return [f"the current prod {prod_version} has no {METRIC} to compare with"]
    drop = prod_accuracy - accuracy
    if drop > policy.max_accuracy_drop + 1e-12:
        return [
            f"{METRIC} {accuracy:.4f} of {version} is {drop:.4f} below the {prod_accuracy:.4f} "
            f"of prod {prod_version} (allowed drop {policy.max_accuracy_drop:g}: {POLICY_KEY})"
        ]
    return []


# --- the facts, from git, GTO and the DVC remote -------------------------------------------


def test_accuracy(repo: str | Path, commit: str) -> float | None:
    """The test accuracy committed at `commit` (metrics/eval.json), or None."""
    text = git_show(repo, commit, "metrics/eval.json")
    try:
        value = json.loads(text)["test"]["accuracy"] if text else None
    except (json.JSONDecodeError, KeyError, TypeError):
        return None
    return float(value) if isinstance(value, int | float) else None


@dataclass(frozen=True)
class Verdict:
    """What the gates found for one assignment: the version, its commit, broken rules, and
    the facts checked (for the tag's annotation)."""

    version: str
    commit: str
    problems: list[str]
    notes: list[str]


def release_checks(
    repo: str | Path, version: str, commit: str, remote: str | None = None
) -> tuple[list[str], list[str]]:
    """The prod gate's integrity and lineage checks: (problems, notes)."""
    problems = lineage.lineage_problems(repo, commit)
    try:
        with registry.fetched(repo, version=version, commit=commit, remote=remote) as package:
            problems += lineage.package_problems(repo, commit, package)
    except IntegrityError as exc:
        return [f"integrity: {exc}", *problems], []
    notes = ["package verified against its manifest and dvc.lock"]
    return problems, notes if problems else [*notes, "lineage complete"]


def judge(
    repo: str | Path,
    version: str,
    stage: str,
    message: str,
    before_tag: str | None = None,
    remote: str | None = None,
) -> Verdict:
    """Apply every gate to assigning `stage` to `version` with the annotation `message`, on the
    registry as it is (or as it was before the tag `before_tag`)."""
    policy = load_policy(repo)
    with registry.open_registry(repo) as reg:
        artifact = registry.find_artifact(registry.registry_state(reg, before_tag), repo)
        if before_tag is not None:  # the version the tag's commit holds
            found = artifact.find_version(commit_hexsha=reg.scm.get_tag(before_tag).target)
            if found is None:
                raise PipelineError(f"{before_tag}: its commit holds no registered version")
            version = found.version
        resolved = registry.resolve_in(artifact, repo, version=version)
        held = registry.active_stages(artifact.find_version(name=resolved.version))
        current = registry.stage_version(artifact, RELEASE_STAGE)
    problems = order_problems(policy, resolved.version, stage, held)
    problems += approval_problems(stage, message)
    notes = []
    if stage == RELEASE_STAGE:
        accuracy = test_accuracy(repo, resolved.commit)
        prod = None
        if current is not None and current.version != resolved.version:
            prod = (current.version, test_accuracy(repo, current.commit_hexsha))
        problems += accuracy_problems(policy, resolved.version, accuracy, prod)
        if accuracy is not None:
            against = f"prod {prod[0]}: {prod[1]:.4f}" if prod and prod[1] is not None else None
            notes.append(
                f"{METRIC} {accuracy:.4f}"
                + (f" ({against}; allowed drop {policy.max_accuracy_drop:g})" if against else "")
            )
        found, checked = release_checks(repo, resolved.version, resolved.commit, remote)
        problems += found
        notes += checked
    return Verdict(resolved.version, resolved.commit, problems, notes)


def promote(
    repo: str | Path,
    version: str,
    stage: str,
    approver: str | None = None,
    reason: str | None = None,
    push: bool = False,
    remote: str | None = None,
) -> Verdict:
    """Assign `stage` to `version` with GTO once every gate passes; `PromotionRefused` if not."""
    version = registry.version_name(version)
    if approver and reason:
        message = approval_message(version, stage, approver, reason)
    else:  # the gate names what an approval lacks where one is needed
        message = f"{registry.ARTIFACT} {version} -> {stage}\n"
    verdict = judge(repo, version, stage, message, remote=remote)
    if verdict.problems:
        raise PromotionRefused(
            f"refusing to promote {version} to {stage}: " + "; ".join(verdict.problems)
        )
    if verdict.notes:
        message += "\n" + "".join(f"Checked: {note}\n" for note in verdict.notes)
    with registry.open_registry(repo) as reg:
        try:
            reg.assign(
                registry.ARTIFACT,
                stage,
                version=version,
                message=message,
                simple=False,
                push=push,
            )
        except GTOException as exc:
            raise PipelineError(f"cannot assign {stage} to {version}: {exc}") from None
    return verdict


def check_tag(
    repo: str | Path,
    tag: str,
    reject: bool = False,
    push: bool = False,
    remote: str | None = None,
) -> Verdict:
    """Judge an existing stage tag against the registry before it. With `reject`, withdraw a
    tag that breaks a gate (GTO unassignment, annotated with why); then raise
    `PromotionRefused`. Tags that are not assignments (registrations, unassignments,
    deprecations) pass: withdrawing is always allowed."""
    try:
        parsed = parse_name(tag)
    except GTOException:
        raise PipelineError(f"{tag}: not a GTO tag") from None
    if parsed.get("name") != registry.ARTIFACT or parsed.get("action") != Action.ASSIGN:
        return Verdict("", "", [], ["not a stage assignment: nothing to check"])
    stage = parsed["stage"]
    with registry.open_registry(repo) as reg:
        found = reg.scm.get_tag(tag)
        if found is None or not hasattr(found, "message"):
            raise PipelineError(f"{tag}: no such annotated tag in {repo}")
        message = found.message
    verdict = judge(repo, "", stage, message, before_tag=tag, remote=remote)
    if not verdict.problems:
        return verdict
    reasons = "; ".join(verdict.problems)
    if reject:
        with registry.open_registry(repo) as reg:
            reg.unassign(
                registry.ARTIFACT,
                stage,
                version=verdict.version,
                message=f"Rejected {tag} (fmnist check-tag): {reasons}",
                simple=False,
                push=push,
            )
    withdrawn = " (withdrawn: unassigned)" if reject else ""
    raise PromotionRefused(f"{tag} breaks the promotion rules{withdrawn}: {reasons}")


# --- commands -------------------------------------------------------------------------------


@report_errors
def main(argv: list[str] | None = None) -> int:
    """`fmnist promote VERSION STAGE`."""
    parser = argparse.ArgumentParser(
        prog="fmnist promote",
        description="Assign a stage to a version once the promotion gates pass: stages in "
        "order (.gto), an approval for staging, and for prod: test accuracy, integrity, "
        "lineage.",
    )
    parser.add_argument("version", help="v1.2.0 or fashion-mnist-cnn@v1.2.0")
    parser.add_argument("stage", help="the next stage of the version (dev, staging, prod)")
    parser.add_argument("--approved-by", help="who approves (required for staging)")
    parser.add_argument("--reason", help="why it is approved (required for staging)")
    parser.add_argument("--repo", default=".", help="the git repo (default: here)")
    parser.add_argument("--push", action="store_true", help="push the stage tag to origin")
    parser.add_argument("--remote", help="the DVC remote to download from (default: the repo's)")
    args = parser.parse_args(argv)
    verdict = promote(
        args.repo, args.version, args.stage, args.approved_by, args.reason, args.push, args.remote
    )
    checked = f"; {'; '.join(verdict.notes)}" if verdict.notes else ""
    share = "" if args.push else " (share it: git push origin --tags)"
    print(f"{registry.ARTIFACT} {verdict.version} is in {args.stage}{checked}{share}")
    return 0


@report_errors
def check_tag_main(argv: list[str] | None = None) -> int:
    """`fmnist check-tag TAG`: the promotion gates for a stage tag that exists (CI)."""
    parser = argparse.ArgumentParser(
        prog="fmnist check-tag",
        description="Check a GTO stage tag against the promotion rules, as the registry was "
        "before it; exit 1 naming every rule it breaks.",
    )
    parser.add_argument("tag", help="e.g. fashion-mnist-cnn#prod#3")
    parser.add_argument("--repo", default=".", help="the git repo (default: here)")
    parser.add_argument(
        "--reject",
        action="store_true",
        help="withdraw a tag that breaks a rule: create the unassignment tag saying why",
    )
    parser.add_argument("--push", action="store_true", help="push that unassignment tag")
    parser.add_argument("--remote", help="the DVC remote to download from (default: the repo's)")
    args = parser.parse_args(argv)
    verdict = check_tag(args.repo, args.tag, args.reject, args.push, args.remote)
    print(f"{args.tag}: {'; '.join(verdict.notes) or 'passes the promotion rules'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
