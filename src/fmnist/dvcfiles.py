"""`dvc.yaml` and `dvc.lock`, read: the one place that parses them.

`dvc.lock` holds the content hash of every output and the params each stage ran with, so the
version of the data and the model at any commit can be read from git without `dvc pull`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fmnist.errors import PipelineError
from fmnist.git import git_show
from fmnist.params import flatten

LOCK = "dvc.lock"
SPEC = "dvc.yaml"


@dataclass(frozen=True)
class Output:
    """One output recorded in dvc.lock: its stage, path, DVC hash and whether DVC caches it."""

    stage: str
    path: str
    md5: str  # ends in ".dir" for a directory: the hash of its manifest
    legacy: bool  # a DVC 2 hash (no `hash: md5` field): stored at the remote's root
    cached: bool  # False for `cache: false` outputs (metrics kept in git): never pushed


def parse(text: str | bytes | None, source: str = LOCK) -> dict:
    """A dvc.yaml, dvc.lock or `.dvc` file's text as a mapping ({} for none or an empty one);
    a `PipelineError` naming `source` if it is not YAML."""
    try:
        data = yaml.safe_load(text) if text else None
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())
        raise PipelineError(f"{source}: not valid YAML ({reason}); restore it from git") from None
    return data if isinstance(data, dict) else {}


def read_spec(path: str | Path = SPEC) -> dict:
    """The dvc.yaml at `path`; a `PipelineError` if it cannot be read."""
    try:
        return parse(Path(path).read_text(), str(path))
    except OSError as exc:
        raise PipelineError(f"{path}: cannot read it ({exc.strerror})") from None


def committed(repo: str | Path, rev: str) -> tuple[dict, dict]:
    """dvc.lock and dvc.yaml as committed at `rev`; an error if the pipeline never ran there."""
    lock_text = git_show(repo, rev, LOCK)
    if lock_text is None:
        raise PipelineError(
            f"{rev} has no {LOCK}: its pipeline was not run and committed "
            f"(`dvc repro`, then commit {LOCK})"
        )
    spec_text = git_show(repo, rev, SPEC)
    return parse(lock_text, f"{LOCK} at {rev}"), parse(spec_text, f"{SPEC} at {rev}")


def _uncached_paths(spec: dict) -> set[str]:
    """Paths that dvc.yaml declares `cache: false` or `push: false`: not in any remote."""
    paths = set()
    for stage in (spec.get("stages") or {}).values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind) or []:
                if isinstance(entry, dict):
                    for path, flags in entry.items():
                        flags = flags or {}
                        if flags.get("cache") is False or flags.get("push") is False:
                            paths.add(path)
    return paths


def lock_outputs(lock: dict, spec: dict | None = None) -> list[Output]:
    """Every output dvc.lock records, flagged by whether dvc.yaml (`spec`) lets DVC cache and
    push it (without a spec, all count as cached)."""
    uncached = _uncached_paths(spec or {})
    return [
        Output(
            stage=stage,
            path=out["path"],
            md5=out["md5"],
            legacy=out.get("hash") != "md5",
            cached=out["path"] not in uncached,
        )
        for stage, entry in (lock.get("stages") or {}).items()
        for out in entry.get("outs") or []
        if "md5" in out
    ]


def lock_params(lock: dict) -> dict[str, Any]:
    """The params the stages ran with, as dotted keys, merged over all stages of dvc.lock."""
    params: dict[str, Any] = {}
    for entry in (lock.get("stages") or {}).values():
        for values in (entry.get("params") or {}).values():
            params.update(flatten(values))
    return dict(sorted(params.items()))


def stage_commands(spec: dict) -> dict[str, str]:
    """Each stage's command in dvc.yaml, on one line, in the order the file lists them."""
    return {
        name: " ".join(str(stage["cmd"]).split())
        for name, stage in (spec.get("stages") or {}).items()
        if isinstance(stage, dict) and "cmd" in stage
    }
