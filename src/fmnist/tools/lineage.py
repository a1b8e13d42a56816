"""What made a model: the code commit, the data's content hashes, the params, the environment.

`fmnist lineage [REV]` answers that for any git rev (a commit, a branch, or a GTO model version
tag such as `fashion-mnist-cnn@v1.0.0`) from what is committed there: `dvc.lock` holds the
content hash of every output and the params each stage ran with; `metrics/dataset.json` whether
the data is the canonical Fashion-MNIST or how it differs; the training record the versions of
Python, TensorFlow, Keras, NumPy and DVC, the lock they were installed from and what each `auto`
setting resolved to. All are kept in git, so nothing needs to be pulled to ask.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from fmnist import dvcfiles, environment
from fmnist.errors import PipelineError, report_errors
from fmnist.git import git_files, git_show, resolve_rev

# The stages whose outputs are the dataset version and the model version (named in dvc.yaml).
DATA_STAGES = ("fetch", "prepare")
MODEL_STAGES = ("train", "package")
# The train stage's record of its run (dvc.yaml: `--record`; `cache: false`, so in git).
TRAIN_RECORD = "metrics/runs/train.json"
NOT_RECORDED = "(not recorded)"
# What the dataset version is (prepare's metric, kept in git): canonical or how it differs.
DATASET_RECORD = "metrics/dataset.json"


def training_environment(record: dict | None) -> dict:
    """The environment fields of a training record; NOT_RECORDED where it lacks one (a record
    from before the field existed). A field that is None was recorded as unknown: `lock_sha256`
    of an environment that was not installed from a lock."""
    return {
        field: (record or {}).get(field, NOT_RECORDED) for field in environment.ENVIRONMENT_FIELDS
    }


def committed_environment(repo: str | Path, rev: str) -> dict:
    """The environment the model at `rev` was trained in, from its committed training record."""
    text = git_show(repo, rev, TRAIN_RECORD)
    try:
        record = json.loads(text) if text else None
    except ValueError:
        raise PipelineError(
            f"{TRAIN_RECORD} at {rev} is not JSON; was it edited by hand?"
        ) from None
    return training_environment(record)


def committed_locks(repo: str | Path, rev: str) -> dict[str, str]:
    """The SHA-256 of each lock file committed at `rev`."""
    return {
        path: hashlib.sha256((git_show(repo, rev, path) or "").encode()).hexdigest()
        for path in git_files(repo, rev, environment.LOCK_DIR)
        if path.endswith(".txt")
    }


def lineage_at(repo: str | Path, rev: str) -> dict:
    """What made the model committed at `rev`: code commit, data and model hashes, params,
    the training environment and the locks committed beside it."""
    commit = resolve_rev(repo, rev)
    lock, spec = dvcfiles.committed(repo, rev)
    outputs = dvcfiles.lock_outputs(lock, spec)

    def hashes(stages: tuple[str, ...]) -> dict:
        return {o.path: o.md5 for o in outputs if o.stage in stages and o.cached}

    return {
        "rev": rev,
        "commit": commit,
        "dataset": committed_dataset(repo, commit),
        "data": hashes(DATA_STAGES),
        "model": hashes(MODEL_STAGES),
        "params": dvcfiles.lock_params(lock),
        "environment": committed_environment(repo, rev),
        "locks": committed_locks(repo, rev),
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
    env = record["environment"]
    lines += [
        f"env      {key} = {'none' if value is None else value}" for key, value in env.items()
    ]
    lines += [f"lock     {sha}  {path}" for path, sha in record["locks"].items()]
    trained_with = env.get("lock_file")
    if trained_with in record["locks"] and record["locks"][trained_with] != env["lock_sha256"]:
        lines.append(
            f"note     the model was trained with another {trained_with} than the one committed "
            "here (the lock changed after training): `dvc repro -f train` in an environment "
            "built from this lock retrains it"
        )
    return "\n".join(lines)


@report_errors
def main(argv: list[str] | None = None) -> int:
    """`fmnist lineage [REV] [--json]`."""
    parser = argparse.ArgumentParser(
        prog="fmnist lineage",
        description="Print the code commit, data and model hashes, params and training "
        "environment of a rev.",
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
