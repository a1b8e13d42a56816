"""Git, as this project asks it: the checked-out commit, and files and commits at a rev."""

from __future__ import annotations

import subprocess
from pathlib import Path

from fmnist.errors import PipelineError


def git_commit(repo: str | Path = ".") -> dict:
    """The checked-out commit and whether tracked files differ from it (e.g. a `-S` param)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (subprocess.CalledProcessError, FileNotFoundError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def git_show(repo: str | Path, rev: str, path: str) -> str | None:
    """The text of `path` as committed at `rev`, or None if `rev` has no such file."""
    proc = subprocess.run(
        ["git", "show", f"{rev}:{path}"], cwd=repo, capture_output=True, text=True
    )
    return proc.stdout if proc.returncode == 0 else None


def resolve_rev(repo: str | Path, rev: str) -> str:
    """The full commit hash `rev` names; a PipelineError if git does not know it."""
    proc = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise PipelineError(f"{rev!r} is not a commit, branch or tag of the git repo at {repo}")
    return proc.stdout.strip()


def list_tags(repo: str | Path, pattern: str = "*") -> list[str]:
    """The names of the tags of the git repo at `repo` that match `pattern`."""
    proc = subprocess.run(
        ["git", "tag", "--list", pattern], cwd=repo, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise PipelineError(f"{repo}: not a git repository ({proc.stderr.strip()})")
    return proc.stdout.split()


def uncommitted(repo: str | Path, paths: list[str]) -> list[str]:
    """Which of `paths` (files or directories) differ from HEAD in the work tree, untracked
    files included."""
    proc = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all", "--", *paths],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise PipelineError(f"{repo}: not a git repository ({proc.stderr.strip()})")
    return sorted(line[3:] for line in proc.stdout.splitlines())


def git_show_bytes(repo: str | Path, rev: str, path: str) -> bytes | None:
    """The bytes of `path` as committed at `rev`, or None if `rev` has no such file."""
    proc = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=repo, capture_output=True)
    return proc.stdout if proc.returncode == 0 else None


def tags_at(repo: str | Path, rev: str, pattern: str = "*") -> list[str]:
    """The tags matching `pattern` that point at the commit `rev` names."""
    proc = subprocess.run(
        ["git", "tag", "--points-at", rev, "--list", pattern],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    return proc.stdout.split() if proc.returncode == 0 else []


def ref_exists(repo: str | Path, name: str) -> bool:
    """Whether `name` is a branch, tag or other ref of the repo (not a bare commit hash)."""
    proc = subprocess.run(["git", "show-ref", "--quiet", "--", name], cwd=repo, capture_output=True)
    return proc.returncode == 0
