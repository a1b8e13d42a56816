"""`python -m fmnist.stages NAME [ARGS...]`: run one pipeline stage, as `dvc.yaml` does.

The entry point of every stage: it applies the process settings (`fmnist.launch`) before the
stage's module imports TensorFlow, then calls that module's `main(ARGS)`. The `params` stage
(validating params.yaml) runs `fmnist.params`'s, so that it too fails in one line when run by
a Python without the project's packages (`launch.load`).

DVC removes a stage's outputs before it runs the stage's command, so a stage that fails under
`dvc repro` or `dvc exp run` leaves them gone (the stage itself writes nothing half-way).
There (DVC sets DVC_STAGE), every error line of the stage ends with the commands that restore
them (`restore_hint`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from pathlib import Path

from fmnist import errors, launch

STAGES = ("params", "fetch", "prepare", "parent", "train", "evaluate", "package")


def module_of(stage: str) -> str:
    """The module whose `main` runs `stage`."""
    return "fmnist.params" if stage == "params" else f"fmnist.stages.{stage}"


def stage_outputs(spec: dict, stage: str) -> tuple[list[str], list[str]]:
    """(cached, not cached) paths of what `dvc.yaml`'s `spec` says `stage` writes."""
    cached, uncached = [], []
    entry = (spec.get("stages") or {}).get(stage) or {}
    for kind in ("outs", "metrics", "plots"):
        for item in entry.get(kind) or []:
            path, flags = (item, {}) if isinstance(item, str) else next(iter(item.items()))
            (uncached if (flags or {}).get("cache") is False else cached).append(path)
    return cached, uncached


def committed(paths: list[str], root: Path) -> list[str]:
    """Those of `paths` (files or directories) that git has in HEAD: what it can restore."""
    if not paths:
        return []
    proc = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", "HEAD", "--", *paths],
        cwd=root,
        capture_output=True,
        text=True,
    )
    names = proc.stdout.splitlines() if proc.returncode == 0 else []
    return [p for p in paths if any(n == p or n.startswith(f"{p}/") for n in names)]


def restore_hint(stage: str, root: Path) -> str:
    """How to get back the outputs DVC removed before running `stage`: `dvc checkout` for
    those in DVC's cache (as dvc.lock records them), `git checkout` for the metrics and plots
    kept in git (as last committed). "" when there is nothing to get back (the stage never
    ran to the end) or dvc.yaml and dvc.lock are unreadable."""
    import yaml  # only under DVC

    try:
        spec = yaml.safe_load((root / "dvc.yaml").read_text()) or {}
        lock = yaml.safe_load((root / "dvc.lock").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return ""
    if stage not in (lock.get("stages") or {}):
        return ""
    cached, uncached = stage_outputs(spec, stage)
    steps = []
    if cached:
        steps.append(f"`dvc checkout {stage}` ({', '.join(cached)}, as dvc.lock records them)")
    in_git = committed(uncached, root)
    if in_git:
        steps.append(f"`git checkout HEAD -- {' '.join(in_git)}` (as last committed)")
    if not steps:
        return ""
    return (
        "DVC removed this stage's outputs before running it; to get the last run's back: "
        + ", then ".join(steps)
    )


def run(name: str, argv: list[str]) -> int:
    """Run stage `name` with `argv`, with the restore hint when DVC runs it."""
    if os.environ.get("DVC_STAGE"):
        errors.set_hint(restore_hint(name, Path(os.environ.get("DVC_ROOT", "."))))
    module = launch.load(module_of(name))
    try:
        return launch.run(module.main, argv, name)
    except Exception:  # a bug: its traceback, then how to get back to where the user was
        traceback.print_exc()
        print(
            errors.with_hint(f"error: stage {name} failed (a bug: the traceback is above)"),
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in STAGES:
        print(f"usage: python -m fmnist.stages {{{','.join(STAGES)}}} [ARGS...]", file=sys.stderr)
        sys.exit(2)
    sys.exit(run(sys.argv[1], sys.argv[2:]))
