"""Git, as this project asks it: the checked-out commit, and files, tags and commits at a rev.

Every git call of the package goes through `run` (so a missing `git` is one clear error).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from fmnist.errors import PipelineError


def run(repo: str | Path, *args: str, text: bool = True) -> subprocess.CompletedProcess:
    """`git ARGS` in `repo`, output captured; the caller reads its return code."""
    try:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=text)
    except FileNotFoundError:
        raise PipelineError("git is not installed (or not on PATH); install it and rerun") from None


def git(repo: str | Path, *args: str) -> str:
    """The output of `git ARGS` in `repo`, stripped; a `PipelineError` with git's message if
    it fails."""
    proc = run(repo, *args)
    if proc.returncode != 0:
        raise PipelineError(f"git {' '.join(args)} failed in {repo}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def is_repo(repo: str | Path = ".") -> bool:
    """Whether `repo` is inside a git work tree."""
    return run(repo, "rev-parse", "--git-dir").returncode == 0


def git_commit(repo: str | Path = ".") -> dict:
    """The checked-out commit and whether tracked files differ from it (e.g. a `-S` param)."""
    try:
        commit = git(repo, "rev-parse", "HEAD")
        dirty = bool(git(repo, "status", "--porcelain", "--untracked-files=no"))
    except PipelineError:
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def git_show(repo: str | Path, rev: str, path: str, *, binary: bool = False) -> str | bytes | None:
    """The content of `path` as committed at `rev` (text, or bytes when `binary`), or None if
    `rev` has no such file. `path` is relative to the repo's root (`./path`: to `repo`)."""
    proc = run(repo, "show", f"{rev}:{path}", text=not binary)
    return proc.stdout if proc.returncode == 0 else None


def commit_of(repo: str | Path, rev: str) -> str | None:
    """The full commit hash `rev` names, or None if git does not know it."""
    proc = run(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    return proc.stdout.strip() if proc.returncode == 0 else None


def resolve_rev(repo: str | Path, rev: str) -> str:
    """The full commit hash `rev` names; a PipelineError if git does not know it."""
    commit = commit_of(repo, rev)
    if commit is None:
        raise PipelineError(f"{rev!r} is not a commit, branch or tag of the git repo at {repo}")
    return commit


def git_files(repo: str | Path, rev: str, directory: str) -> list[str]:
    """The paths of the files committed under `directory` at `rev` (empty if there are none)."""
    proc = run(repo, "ls-tree", "-r", "--name-only", rev, "--", directory)
    return proc.stdout.split() if proc.returncode == 0 else []


def list_tags(repo: str | Path, pattern: str = "*") -> list[str]:
    """The names of the tags of the git repo at `repo` that match `pattern`."""
    proc = run(repo, "tag", "--list", pattern)
    if proc.returncode != 0:
        raise PipelineError(f"{repo}: not a git repository ({proc.stderr.strip()})")
    return proc.stdout.split()


def uncommitted(repo: str | Path, paths: list[str]) -> list[str]:
    """Which of `paths` (files or directories) differ from HEAD in the work tree, untracked
    files included."""
    proc = run(repo, "status", "--porcelain", "--untracked-files=all", "--", *paths)
    if proc.returncode != 0:
        raise PipelineError(f"{repo}: not a git repository ({proc.stderr.strip()})")
    return sorted(line[3:] for line in proc.stdout.splitlines())


def tags_at(repo: str | Path, rev: str, pattern: str = "*") -> list[str]:
    """The tags matching `pattern` that point at the commit `rev` names."""
    proc = run(repo, "tag", "--points-at", rev, "--list", pattern)
    return proc.stdout.split() if proc.returncode == 0 else []


def ref_exists(repo: str | Path, name: str) -> bool:
    """Whether `name` is a branch, tag or other ref of the repo (not a bare commit hash)."""
    return run(repo, "show-ref", "--quiet", "--", name).returncode == 0
