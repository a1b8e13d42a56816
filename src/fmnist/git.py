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


def git_files(repo: str | Path, rev: str, directory: str) -> list[str]:
    """The paths of the files committed under `directory` at `rev` (empty if there are none)."""
    proc = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", rev, "--", directory],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    return proc.stdout.split() if proc.returncode == 0 else []
