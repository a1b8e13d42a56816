"""The model registry: GTO git tags over the `artifacts:` entry of `dvc.yaml`.

A version is the tag `fashion-mnist-cnn@vX.Y.Z` on the commit whose `dvc.lock` pins the
package; a stage is the tag `fashion-mnist-cnn#STAGE#N` (see `.gto` for the allowed stages).
This module proposes the next version number and fetches a registered package.

The version rule (the seed write-up's): major when the architecture changes, minor when a
hyperparameter changes, patch for everything else (code, data, evaluation, packaging).

`fmnist next-version` prints the proposed version, e.g. for
`gto register fashion-mnist-cnn --version $(fmnist next-version)`.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fmnist.errors import ParamsError, PipelineError, report_errors
from fmnist.params import params_from_dict, params_to_dict

# The name of the model in `dvc.yaml` `artifacts:` and in its GTO tags.
ARTIFACT = "fashion-mnist-cnn"
FIRST_VERSION = (1, 0, 0)
LEVELS = ("patch", "minor", "major")

# Params (or groups, by prefix) that change how the same network is trained: a minor version.
HYPERPARAMETER_KEYS = ("model.dropout", "model.conv_dropout", "train", "prepare")
# Every other key of this group shapes the network itself (arch, filters, kernel size, ...,
# and any architecture key added later): a major version.
ARCHITECTURE_GROUP = "model"

Version = tuple[int, int, int]
_MISSING = "<absent>"


def parse_version(text: str) -> Version:
    """`v1.2.3` -> (1, 2, 3); raise `PipelineError` for anything else."""
    match = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", text)
    if not match:
        raise PipelineError(f"{text!r} is not a version of the form vMAJOR.MINOR.PATCH")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def format_version(version: Version) -> str:
    """(1, 2, 3) -> `v1.2.3`."""
    return "v{}.{}.{}".format(*version)


def registered_versions(tags: list[str], artifact: str = ARTIFACT) -> dict[Version, str]:
    """The versions registered by GTO among git `tags`: version -> tag.

    Stage tags (`NAME#prod#1`) and deprecation tags (`NAME@v1.0.0!#2`) are not versions.
    """
    out = {}
    for tag in tags:
        name, _, version = tag.strip().partition("@")
        if name == artifact and re.fullmatch(r"v\d+\.\d+\.\d+", version):
            out[parse_version(version)] = tag.strip()
    return out


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as {dotted key: leaf value}."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return out


def normalised(params: dict) -> dict:
    """`params` through the schema (so `1e-07` and `1.0e-07` compare equal) when it fits it.

    The params of an old version may not fit today's schema; they are compared as they are.
    """
    try:
        return params_to_dict(params_from_dict(params))
    except ParamsError:
        return params


def changed_params(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose value differs (or exists on one side only): key -> (old, new)."""
    a, b = flatten(normalised(old)), flatten(normalised(new))
    return {
        key: (a.get(key, _MISSING), b.get(key, _MISSING))
        for key in sorted(a.keys() | b.keys())
        if a.get(key, _MISSING) != b.get(key, _MISSING)
    }


def change_level(key: str) -> str:
    """How big a change of the param `key` is: major, minor or patch."""
    if any(key == k or key.startswith(f"{k}.") for k in HYPERPARAMETER_KEYS):
        return "minor"
    if key.startswith(f"{ARCHITECTURE_GROUP}."):
        return "major"
    return "patch"


def bump(version: Version, level: str) -> Version:
    """The next version at `level` (lower parts reset to zero)."""
    major, minor, patch = version
    if level == "major":
        return major + 1, 0, 0
    if level == "minor":
        return major, minor + 1, 0
    return major, minor, patch + 1


@dataclass(frozen=True)
class Proposal:
    """The proposed version, the level of the change and the param changes behind it."""

    version: Version
    level: str
    changes: dict[str, tuple[Any, Any]]


def propose(latest: Version | None, latest_params: dict | None, params: dict) -> Proposal:
    """The next version after `latest`, given its params and the current ones.

    No registered version yet gives `FIRST_VERSION`.
    """
    if latest is None:
        return Proposal(FIRST_VERSION, "first", {})
    changes = changed_params(latest_params or {}, params)
    level = max((change_level(k) for k in changes), key=LEVELS.index, default="patch")
    return Proposal(bump(latest, level), level, changes)


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        raise PipelineError(f"git {' '.join(args)} failed in {repo}: {proc.stderr.strip()}")
    return proc.stdout


def params_at(repo: Path, rev: str, params_file: str = "params.yaml") -> dict:
    """The params file as committed at `rev`."""
    return yaml.safe_load(_git(repo, "show", f"{rev}:{params_file}")) or {}


def resolve_version(repo: str | Path, ref: str) -> str:
    """The registered version (`v1.2.0`) that `ref` names in the git repo at `repo`: a version
    (`fashion-mnist-cnn@v1.2.0` or `v1.2.0`) that must be registered, or a stage (`prod`,
    `fashion-mnist-cnn#prod`) resolved through GTO to the version it holds now."""
    name, at, version = ref.rpartition("@")
    name, hash_, stage = (name, "", "") if at else ref.rpartition("#")
    if (name or ARTIFACT) != ARTIFACT:
        raise PipelineError(f"{ref!r} names the artifact {name!r}; this registry's is {ARTIFACT}")
    if at or re.fullmatch(r"v\d+\.\d+\.\d+", stage):
        version = version or stage
        registered = registered_versions(_git(Path(repo), "tag", "--list", f"{ARTIFACT}@*").split())
        if parse_version(version) not in registered:
            known = ", ".join(format_version(v) for v in sorted(registered)) or "none"
            raise PipelineError(
                f"{ARTIFACT}@{version} is not registered in {repo} (registered: {known}); "
                "`gto show` lists the registry"
            )
        return version
    from gto import api as gto_api

    found = gto_api.find_versions_in_stage(str(repo), ARTIFACT, stage)
    found = found[0] if isinstance(found, list) and found else found
    if not found:
        raise PipelineError(
            f"no version of {ARTIFACT} is in stage {stage!r} in {repo}; `gto show` lists the "
            "stages (assign one with `gto assign`)"
        )
    return found.version


def fetch_package(
    repo: str, out: Path, *, version: str | None = None, stage: str | None = None
) -> None:
    """Download a registered package into `out` with `dvc artifacts get` (from the remote)."""
    if (version is None) == (stage is None):
        raise PipelineError("give exactly one of a version and a stage")
    select = ["--rev", version] if version else ["--stage", stage]
    cmd = [sys.executable, "-m", "dvc", "artifacts", "get", repo, ARTIFACT, *select, "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise PipelineError(
            f"cannot get {ARTIFACT} {' '.join(select)} from {repo}: "
            f"{detail[-1] if detail else 'dvc artifacts get failed'}"
        )


def _show(value: Any) -> str:
    return value if value == _MISSING else json.dumps(value)


@report_errors
def main(argv: list[str] | None = None) -> int:
    """`fmnist next-version`: print the version the current params call for."""
    parser = argparse.ArgumentParser(
        prog="fmnist next-version",
        description="Propose the next semantic version of the model: major for an architecture "
        "change, minor for a hyperparameter, patch otherwise.",
    )
    parser.add_argument("--params", default="params.yaml", help="the current params file")
    parser.add_argument("--repo", type=Path, default=Path("."), help="the git repository")
    args = parser.parse_args(argv)
    try:
        params = yaml.safe_load(Path(args.params).read_text()) or {}
    except FileNotFoundError:
        raise PipelineError(f"{args.params}: not found; run from the repository root") from None
    versions = registered_versions(_git(args.repo, "tag", "--list", f"{ARTIFACT}@*").split())
    if not versions:
        proposal = propose(None, None, params)
        print(f"no version of {ARTIFACT} is registered yet", file=sys.stderr)
    else:
        latest = max(versions)
        proposal = propose(latest, params_at(args.repo, versions[latest]), params)
        print(f"latest: {versions[latest]}; change: {proposal.level}", file=sys.stderr)
        if _git(args.repo, "rev-list", "-n1", versions[latest]) == _git(
            args.repo, "rev-parse", "HEAD"
        ):
            print(f"note: HEAD is already {versions[latest]}", file=sys.stderr)
        for key, (old, new) in proposal.changes.items():
            print(f"  {key}: {_show(old)} -> {_show(new)} ({change_level(key)})", file=sys.stderr)
    print(format_version(proposal.version))
    return 0


if __name__ == "__main__":
    sys.exit(main())
