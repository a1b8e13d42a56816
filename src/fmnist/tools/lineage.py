"""What made a model: the code commit, the data's content hashes, the params and the machine.

`fmnist lineage [REV]` answers that for any git rev (a commit, a branch, or a GTO model version
tag such as `model@v1.0.0`) from what is committed there: `dvc.lock` holds the content hash of
every output and the params each stage ran with, and `metrics/dataset.json` whether the data
is the canonical Fashion-MNIST or how it differs, so nothing needs to be pulled to ask.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from fmnist.errors import PipelineError, report_errors
from fmnist.git import git_show, resolve_rev

# The stages whose outputs are the dataset version and the model version (named in dvc.yaml).
DATA_STAGES = ("fetch", "prepare")
MODEL_STAGES = ("train", "package")
# What the dataset version is (prepare's metric, kept in git): canonical or how it differs.
DATASET_RECORD = "metrics/dataset.json"


@dataclass(frozen=True)
class Output:
    """One output recorded in dvc.lock: its stage, path, DVC hash and whether DVC caches it."""

    stage: str
    path: str
    md5: str  # ends in ".dir" for a directory: the hash of its manifest
    legacy: bool  # a DVC 2 hash (no `hash: md5` field): stored at the remote's root
    cached: bool  # False for `cache: false` outputs (metrics kept in git): never pushed


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


def lock_outputs(lock: dict, spec: dict) -> list[Output]:
    """Every output dvc.lock records, flagged by whether dvc.yaml lets DVC cache and push it."""
    uncached = _uncached_paths(spec)
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


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def lock_params(lock: dict) -> dict:
    """The params the stages ran with, as dotted keys, merged over all stages of dvc.lock."""
    params: dict = {}
    for entry in (lock.get("stages") or {}).values():
        for values in (entry.get("params") or {}).values():
            params.update(_flatten(values))
    return dict(sorted(params.items()))


def committed_lock(repo: str | Path, rev: str) -> tuple[dict, dict]:
    """dvc.lock and dvc.yaml as committed at `rev`; an error if the pipeline never ran there."""
    lock_text = git_show(repo, rev, "dvc.lock")
    if lock_text is None:
        raise PipelineError(
            f"{rev} has no dvc.lock: its pipeline was not run and committed "
            "(`dvc repro`, then commit dvc.lock)"
        )
    spec_text = git_show(repo, rev, "dvc.yaml") or "{}"
    return yaml.safe_load(lock_text) or {}, yaml.safe_load(spec_text) or {}


def lineage_at(repo: str | Path, rev: str) -> dict:
    """What made the model committed at `rev`: code commit, data and model hashes, params."""
    commit = resolve_rev(repo, rev)
    lock, spec = committed_lock(repo, rev)
    outputs = lock_outputs(lock, spec)

    def hashes(stages: tuple[str, ...]) -> dict:
        return {o.path: o.md5 for o in outputs if o.stage in stages and o.cached}

    return {
        "rev": rev,
        "commit": commit,
        "dataset": committed_dataset(repo, commit),
        "data": hashes(DATA_STAGES),
        "model": hashes(MODEL_STAGES),
        "params": lock_params(lock),
    }


def committed_dataset(repo: str | Path, rev: str) -> dict | None:
    """The dataset record (`fmnist.dataset_versions.describe`) committed at `rev`, if any."""
    text = git_show(repo, rev, DATASET_RECORD)
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None  # a damaged metric does not hide the rest of the lineage


def dataset_line(record: dict | None) -> str:
    """The dataset version in words: canonical, or how a custom one differs from it."""
    if record is None:
        return f"unknown (no {DATASET_RECORD} at this rev)"
    from fmnist.dataset import version_summary  # numpy: only when a record is shown

    return version_summary(record)


def format_lineage(record: dict) -> str:
    """The lineage record as aligned text for a terminal."""
    lines = [f"rev      {record['rev']}", f"commit   {record['commit']}"]
    lines.append(f"dataset  {dataset_line(record.get('dataset'))}")
    for section in ("data", "model"):
        for path, md5 in record[section].items():
            lines.append(f"{section:<8} {md5}  {path}")
    lines += [f"param    {key} = {value}" for key, value in record["params"].items()]
    return "\n".join(lines)


@report_errors
def main(argv: list[str] | None = None) -> int:
    """`fmnist lineage [REV] [--json]`."""
    parser = argparse.ArgumentParser(
        prog="fmnist lineage",
        description="Print the code commit, data hashes, model hashes and params of a rev.",
    )
    parser.add_argument("rev", nargs="?", default="HEAD", help="commit, branch or tag")
    parser.add_argument("--repo", default=".", help="the git repo (default: here)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    record = lineage_at(args.repo, args.rev)
    print(json.dumps(record, indent=2) if args.json else format_lineage(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
