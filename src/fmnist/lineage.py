"""What made a model: the code commit, the data's content hashes, the params and the machine."""

from __future__ import annotations

import hashlib
import json
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


def read_json(path: str | Path, produced_by: str) -> dict:
    """Load a JSON file another stage wrote; name that stage if it is missing or broken."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: missing; run `dvc repro {produced_by}`") from None
    except json.JSONDecodeError as exc:
        raise PipelineError(
            f"{path}: not valid JSON ({exc}); run `dvc repro {produced_by}`"
        ) from None


def file_md5(path: str | Path) -> str:
    """The MD5 of a file's bytes: what DVC 3 records for a file in `dvc.lock`."""
    digest = hashlib.md5()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
