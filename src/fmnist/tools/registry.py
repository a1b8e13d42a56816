"""The model registry: GTO git tags over the `artifacts:` entry of `dvc.yaml`.

A version is the tag `fashion-mnist-cnn@vX.Y.Z` on the commit whose `dvc.lock` pins the
package; a stage is the tag `fashion-mnist-cnn#STAGE#N` (see `.gto` for the allowed stages).

Stages are read the way `gto show` reads them: the newest active assignment wins, and an
unassignment (`gto deprecate NAME VERSION STAGE`) or a deregistration hands the stage back.
`dvc artifacts get --stage` does not: it takes the newest git tag that names the stage, an
unassignment tag included, and so serves a withdrawn version. Every stage lookup of this
project (`fmnist get`, `fmnist predict --stage`, `fmnist lineage prod`) resolves the stage
through GTO here, then fetches that *version* and verifies its files against the package's
manifest and the version's `dvc.lock`.

The version rule (the seed write-up's): major when the architecture changes, minor when a
hyperparameter changes, patch for everything else (code, data, evaluation, packaging).

    fmnist next-version                     # the version the params call for
    fmnist register                         # check the package at HEAD, then register it
    fmnist get --stage prod -o served/      # what GTO shows in prod, fetched and verified
    fmnist verify-package [DIR]             # a package's files against its manifest
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from gto.base import Artifact, BaseRegistryState
from gto.base import Version as GTOVersion
from gto.constants import VersionSort
from gto.exceptions import GTOException
from gto.registry import GitRegistry
from gto.tag import find, index_tag, parse_name

from fmnist import dvcfiles, git
from fmnist.errors import ParamsError, PipelineError, report_errors
from fmnist.params import flatten, params_from_dict, params_to_dict

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


def params_at(repo: str | Path, rev: str, params_file: str = "params.yaml") -> dict:
    """The params file as committed at `rev`."""
    text = git.git_show(repo, rev, params_file)
    if text is None:
        raise PipelineError(f"{rev} has no {params_file}")
    return yaml.safe_load(text) or {}


def proposal_for(repo: str | Path, params: dict) -> tuple[Proposal, str | None]:
    """The next version for `params`, and the tag of the latest version it follows (if any)."""
    versions = registered_versions(git.list_tags(repo, f"{ARTIFACT}@*"))
    if not versions:
        return propose(None, None, params), None
    latest = max(versions)
    return propose(latest, params_at(repo, versions[latest]), params), versions[latest]


# --- reading the registry through GTO ---------------------------------------------------------


@dataclass(frozen=True)
class Resolved:
    """A registered version, the commit it tags, and the stage it was looked up by (if any)."""

    version: str  # vX.Y.Z
    commit: str
    stage: str | None = None

    @property
    def tag(self) -> str:
        """The git tag that registers the version."""
        return f"{ARTIFACT}@{self.version}"

    def __str__(self) -> str:
        via = f"stage {self.stage}, " if self.stage else ""
        return f"{ARTIFACT} {self.version} ({via}commit {self.commit[:7]})"


@contextlib.contextmanager
def open_registry(repo: str | Path) -> Iterator[GitRegistry]:
    """GTO's registry over the git repo `repo` (a path, or a URL cloned for the duration)."""
    try:
        with GitRegistry.from_url(str(repo)) as reg:
            yield reg
    except GTOException as exc:
        raise PipelineError(f"the registry at {repo}: {exc}") from None


# GTO indexes tags in this order (registry.get_state): artifacts, then versions, then stages.
_ACTION_GROUPS = ("artifact_manager", "version_manager", "stage_manager")


def registry_state(reg: GitRegistry, before: str | None = None) -> BaseRegistryState:
    """GTO's state of the registry, indexed from its tags as GTO indexes them; with `before`
    (a tag name), the state before that tag and every newer tag existed."""
    cutoff = None
    if before is not None:
        tag = reg.scm.get_tag(before)
        if tag is None or not hasattr(tag, "tag_time"):
            raise PipelineError(f"{before}: not an annotated tag of the registry")
        cutoff = tag.tag_time
    state = BaseRegistryState()
    for manager in _ACTION_GROUPS:
        for tag in find(scm=reg.scm, action=getattr(reg, manager).actions):
            if before is not None and (tag.name == before or tag.tag_time > cutoff):
                continue
            name = parse_name(tag.name)["name"]
            state.update_artifact(index_tag(state.find_artifact(name, create_new=True), tag))
    return state


def find_artifact(state: BaseRegistryState, repo: str | Path) -> Artifact:
    """This project's artifact in `state`; an error if nothing was ever registered."""
    artifact = state.get_artifacts().get(ARTIFACT)
    if artifact is None or not artifact.get_versions():
        raise PipelineError(
            f"no version of {ARTIFACT} is registered in {repo} (`fmnist register`; "
            "after a clone, `git fetch --tags`)"
        )
    if not artifact.is_active:
        raise PipelineError(f"{ARTIFACT} is deprecated in {repo} (`gto show -d`)")
    return artifact


def stage_version(artifact: Artifact, stage: str) -> GTOVersion | None:
    """The version in `stage` as `gto show` shows it: the newest active assignment of an active
    version (GTO's defaults: by timestamp, one version per stage)."""
    assigned = artifact.get_vstages(sort=VersionSort.Timestamp).get(stage) or []
    if not assigned:
        return None
    return artifact.find_version(name=assigned[0].version)


def active_stages(version: GTOVersion) -> list[str]:
    """The stages `version` holds an active assignment to, oldest first."""
    return [vstage.stage for vstage in version.get_vstages(active_only=True, ascending=True)]


def version_name(text: str) -> str:
    """`v1.2.0` or `fashion-mnist-cnn@v1.2.0` as `v1.2.0`."""
    name = text.removeprefix(f"{ARTIFACT}@")
    parse_version(name)
    return name


def resolve_in(
    artifact: Artifact, repo: str | Path, version: str | None = None, stage: str | None = None
) -> Resolved:
    """The version `version` names or `stage` holds (the latest registered with neither)."""
    if version and stage:
        raise PipelineError("give a version or a stage, not both")
    if stage:
        found = stage_version(artifact, stage)
        if found is None:
            raise PipelineError(f"no version of {ARTIFACT} is in stage {stage} (`gto show`)")
    elif version:
        name = version_name(version)
        found = artifact.find_version(name=name, include_discovered=True)
        if found is None or not found.is_registered:
            known = [v.version for v in artifact.get_versions() if v.is_registered]
            raise PipelineError(
                f"{ARTIFACT}@{name} is not registered in {repo} (registered: "
                f"{', '.join(sorted(known, key=parse_version)) or 'none'}; `gto show`)"
            )
        if not found.is_active:
            raise PipelineError(
                f"{ARTIFACT} {name} was deregistered (`gto history {ARTIFACT}` says when and "
                f"why); to fetch it anyway: `dvc get {repo} models/package --rev {ARTIFACT}@"
                f"{name}`"
            )
    else:
        found = artifact.get_latest_version(registered_only=True)
    if found is None or not found.is_registered:
        what = f"stage {stage}" if stage else "the latest version"
        raise PipelineError(f"{what} of {ARTIFACT} is not a registered version (`gto show`)")
    return Resolved(found.version, found.commit_hexsha, stage)


def resolve(repo: str | Path, version: str | None = None, stage: str | None = None) -> Resolved:
    """Look up a version, a stage or (with neither) the latest version in the registry."""
    with open_registry(repo) as reg:
        return resolve_in(find_artifact(registry_state(reg), repo), repo, version, stage)


def resolve_ref(repo: str | Path, ref: str) -> Resolved:
    """The registered version one name means (`train.init_from`): a version
    (`fashion-mnist-cnn@v1.2.0`, `v1.2.0`) or a stage (`prod`, `fashion-mnist-cnn#prod`),
    resolved as `resolve` resolves them."""
    name, at, version = ref.rpartition("@")
    name, _, stage = (name, "", "") if at else ref.rpartition("#")
    if (name or ARTIFACT) != ARTIFACT:
        raise PipelineError(f"{ref!r} names the artifact {name!r}; this registry's is {ARTIFACT}")
    if at or re.fullmatch(r"v\d+\.\d+\.\d+", stage):
        return resolve(repo, version=version or stage)
    return resolve(repo, stage=stage)


# --- fetching a package and proving it is the one registered -------------------------------


def artifact_path(repo: str | Path, rev: str) -> str:
    """The artifact's path in `dvc.yaml` at `rev` (models/package)."""
    spec = dvcfiles.parse(git.git_show(repo, rev, dvcfiles.SPEC), f"{dvcfiles.SPEC} at {rev}")
    entry = (spec.get("artifacts") or {}).get(ARTIFACT) or {}
    return entry.get("path", "models/package")


def locked_package_hash(repo: str | Path, rev: str) -> str:
    """The DVC hash `dvc.lock` at `rev` records for the package directory."""
    path = artifact_path(repo, rev)
    lock = dvcfiles.parse(git.git_show(repo, rev, dvcfiles.LOCK), f"{dvcfiles.LOCK} at {rev}")
    for entry in (lock.get("stages") or {}).values():
        for out in entry.get("outs") or []:
            if out.get("path") == path and "md5" in out:
                return out["md5"]
    raise PipelineError(f"dvc.lock at {rev[:12]} records no {path}: its pipeline did not run")


def download(
    repo: str | Path, out: Path, *, version: str | None, commit: str, remote: str | None = None
) -> None:
    """Download the package of a registered `version` (`dvc artifacts get --rev`), or the one
    `dvc.lock` pins at `commit` when it is not registered yet (`dvc get --rev`), from the
    repo's default DVC remote or `remote`."""
    if version:
        what = ["artifacts", "get", str(repo), ARTIFACT, "--rev", version]
    else:
        what = ["get", str(repo), artifact_path(repo, commit), "--rev", commit]
    where = ["--remote", remote] if remote else []
    cmd = [sys.executable, "-m", "dvc", *what, *where, "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise PipelineError(
            f"cannot download the package of {version or commit[:12]} from {repo}: "
            f"{detail[-1] if detail else 'dvc failed'} (is it pushed? `dvc push`)"
        )


@contextlib.contextmanager
def fetched(
    repo: str | Path, *, version: str | None, commit: str, remote: str | None = None
) -> Iterator[Path]:
    """A verified copy of the package of `version` (or of `commit`), in a temporary directory:
    every file against its manifest, and the whole against the `dvc.lock` of the commit."""
    from fmnist.serving import layout  # imports Keras: only when a package is handled

    with open_registry(repo) as reg, tempfile.TemporaryDirectory(prefix="fmnist-get-") as tmp:
        root = reg.scm.root_dir  # a local clone when `repo` is a URL
        expected = locked_package_hash(root, commit)
        out = Path(tmp) / "package"
        download(repo, out, version=version, commit=commit, remote=remote)
        layout.verify_package(out, expected)
        yield out


def get(repo: str | Path, out: Path, resolved: Resolved, remote: str | None = None) -> None:
    """Fetch the package of a resolved version into `out`, verified; `out` must not exist."""
    if out.exists():
        raise PipelineError(f"{out} exists; choose another directory with -o, or remove it")
    with fetched(repo, version=resolved.version, commit=resolved.commit, remote=remote) as package:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(package, out)


def register(
    repo: str | Path,
    rev: str = "HEAD",
    version: str | None = None,
    message: str | None = None,
    push: bool = False,
    remote: str | None = None,
) -> Resolved:
    """Register the package committed at `rev` as `version` (default: the one its params call
    for), once its files, its lineage and its stages' provenance check out."""
    from fmnist.tools import lineage

    commit = git.resolve_rev(repo, rev)
    if commit == git.resolve_rev(repo, "HEAD"):
        dirty = git.uncommitted(repo, ["dvc.lock", "dvc.yaml", "params.yaml", "metrics"])
        if dirty:
            raise PipelineError(
                f"uncommitted changes to {', '.join(dirty)}: commit the pipeline's results "
                "first (`git add -A && git commit`), then register that commit"
            )
    if version is None:
        version = format_version(proposal_for(repo, params_at(repo, commit))[0].version)
    version = version_name(version)
    problems = lineage.lineage_problems(repo, commit)
    with fetched(repo, version=None, commit=commit, remote=remote) as package:
        problems += lineage.package_problems(repo, commit, package)
    if problems:
        raise PipelineError(f"refusing to register {commit[:12]}: " + "; ".join(problems))
    note = message or "package verified, lineage and provenance complete (fmnist register)"
    with open_registry(repo) as reg:
        try:
            reg.register(
                ARTIFACT,
                commit,
                version=version,
                message=f"{ARTIFACT} {version}: {note}",
                simple=True,
                push=push,
            )
        except GTOException as exc:
            raise PipelineError(f"cannot register {version}: {exc}") from None
    return Resolved(version, commit)


# --- commands -------------------------------------------------------------------------------


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
    proposal, latest = proposal_for(args.repo, params)
    if latest is None:
        print(f"no version of {ARTIFACT} is registered yet", file=sys.stderr)
    else:
        print(f"latest: {latest}; change: {proposal.level}", file=sys.stderr)
        if git.resolve_rev(args.repo, latest) == git.resolve_rev(args.repo, "HEAD"):
            print(f"note: HEAD is already {latest}", file=sys.stderr)
        for key, (old, new) in proposal.changes.items():
            print(f"  {key}: {_show(old)} -> {_show(new)} ({change_level(key)})", file=sys.stderr)
    print(format_version(proposal.version))
    return 0


@report_errors
def get_main(argv: list[str] | None = None) -> int:
    """`fmnist get`: fetch the package a version or stage names, as GTO resolves it, verified."""
    parser = argparse.ArgumentParser(
        prog="fmnist get",
        description="Download a registered package: the version GTO shows for a stage (or a "
        "version, or the latest), its files verified against its manifest and dvc.lock.",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--version", help="a version, v1.2.0 or fashion-mnist-cnn@v1.2.0")
    which.add_argument("--stage", help="the version this stage holds, e.g. prod")
    parser.add_argument("--repo", default=".", help="the registry's git repo (path or URL)")
    parser.add_argument(
        "-o", "--out", type=Path, help=f"the directory to create (default: {ARTIFACT}-VERSION)"
    )
    parser.add_argument("--remote", help="the DVC remote to download from (default: the repo's)")
    args = parser.parse_args(argv)
    resolved = resolve(args.repo, args.version, args.stage)
    out = args.out or Path(f"{ARTIFACT}-{resolved.version}")
    get(args.repo, out, resolved, args.remote)
    print(f"{resolved} -> {out} (every file verified)")
    return 0


@report_errors
def verify_main(argv: list[str] | None = None) -> int:
    """`fmnist verify-package`: check a package's files against its manifest."""
    from fmnist.serving import layout

    parser = argparse.ArgumentParser(
        prog="fmnist verify-package",
        description="Check every file of a package against its SHA-256 manifest; with "
        "--version or --stage, download that package first and check it against its dvc.lock.",
    )
    parser.add_argument(
        "package",
        nargs="?",
        type=Path,
        default=Path("models/package"),
        help="a package directory (default: models/package)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--version", help="a registered version")
    which.add_argument("--stage", help="the version this stage holds")
    parser.add_argument("--repo", default=".", help="the registry's git repo (path or URL)")
    parser.add_argument("--remote", help="the DVC remote to download from (default: the repo's)")
    args = parser.parse_args(argv)
    if args.version or args.stage:
        resolved = resolve(args.repo, args.version, args.stage)
        with fetched(
            args.repo, version=resolved.version, commit=resolved.commit, remote=args.remote
        ) as package:
            count = len(layout.read_manifest(package))
        print(f"{resolved}: {count} files match its manifest and its dvc.lock")
        return 0
    count = len(layout.verify_package(args.package))
    print(f"{args.package}: {count} files match {layout.MANIFEST}")
    return 0


@report_errors
def register_main(argv: list[str] | None = None) -> int:
    """`fmnist register`: check a committed package, then register it with GTO."""
    parser = argparse.ArgumentParser(
        prog="fmnist register",
        description="Register the package a commit's dvc.lock pins as a version of "
        f"{ARTIFACT}, after checking its files, its lineage and the stages' provenance.",
    )
    parser.add_argument("--version", help="vX.Y.Z (default: what `fmnist next-version` says)")
    parser.add_argument("--rev", default="HEAD", help="the commit to register (default: HEAD)")
    parser.add_argument("--repo", default=".", help="the git repo (default: here)")
    parser.add_argument("-m", "--message", help="why this version (in the tag's annotation)")
    parser.add_argument("--push", action="store_true", help="push the tag to origin")
    parser.add_argument("--remote", help="the DVC remote to download from (default: the repo's)")
    args = parser.parse_args(argv)
    resolved = register(args.repo, args.rev, args.version, args.message, args.push, args.remote)
    share = "pushed" if args.push else f"share it: git push origin {resolved.tag}"
    print(f"registered {resolved}: package verified, lineage complete ({share})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
