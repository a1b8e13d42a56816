"""What made a model: the code commit, the data's content hashes, the params, the environment.

`fmnist lineage [NAME]` answers that for any name a user has: a version (`v1.0.0`,
`fashion-mnist-cnn@v1.0.0`), a stage (`prod`, `fashion-mnist-cnn#prod`, resolved as `gto show`
resolves it), a commit or a branch. It reads what is committed there: `dvc.lock` holds the
content hash of every output and the params each stage ran with; `metrics/provenance/` what
each stage's own process ran with; `metrics/dataset.json` whether the data is the canonical
Fashion-MNIST or how it differs; the training record the versions of Python, TensorFlow, Keras,
NumPy and DVC, the lock they were installed from and what each `auto` setting resolved to. All
are kept in git, so nothing needs to be pulled to ask.

It also checks that these agree with each other and with the files of the commit, and names
what does not: a stage whose record disagrees with dvc.lock (two commands at once), or a
dvc.lock made from files that differ from the commit's (a package built from a dirty tree).
The package itself names no commit (its bytes would then depend on a commit made after it):
the commit of a registered version is its tag's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

import yaml

from fmnist import dvcfiles, environment, provenance
from fmnist.errors import PipelineError, report_errors
from fmnist.git import git_files, git_show, ref_exists, resolve_rev, tags_at
from fmnist.params import flatten

# The stages whose outputs are the dataset version and the model version (named in dvc.yaml).
DATA_STAGES = ("fetch", "prepare")
MODEL_STAGES = ("train", "package")
PIPELINE = ("fetch", "prepare", "train", "evaluate", "package")
PROVENANCE_DIR = "metrics/provenance"
# The train stage's record of its run (dvc.yaml: `--record`; `cache: false`, so in git).
TRAIN_RECORD = "metrics/runs/train.json"
# Its time and speed (dvc.yaml: `--speed`), apart from the record: they change on every run.
TRAIN_SPEED = "metrics/runs/train_speed.json"
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


# --- names ----------------------------------------------------------------------------------


def _stages(repo: str | Path) -> list[str]:
    """The registry's stages, from `.gto` in the work tree (none when there is no such file)."""
    path = Path(repo) / ".gto"
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (FileNotFoundError, yaml.YAMLError):
        return []
    return list(config.get("stages") or [])


def resolve_name(repo: str | Path, name: str) -> tuple[str, str | None]:
    """The commit a name means, and the registry version it was resolved through (if any).

    `v1.0.0` and `fashion-mnist-cnn@v1.0.0` are versions, `fashion-mnist-cnn#prod` and a stage
    of `.gto` are stages (as `gto show` resolves them), anything else is a git rev. A stage
    name that is also a branch or tag is refused as ambiguous.
    """
    from fmnist.tools import registry

    artifact = registry.ARTIFACT
    if re.fullmatch(rf"(?:{re.escape(artifact)}@)?v\d+\.\d+\.\d+", name):
        tag = f"{artifact}@{registry.version_name(name)}"
        return resolve_rev(repo, tag), registry.version_name(name)
    stage = name.removeprefix(f"{artifact}#") if name.startswith(f"{artifact}#") else None
    if stage is None and name in _stages(repo):
        if ref_exists(repo, name):
            raise PipelineError(
                f"{name!r} is both a registry stage and a git branch or tag; say "
                f"{artifact}#{name} for the stage, or refs/heads/{name} (refs/tags/{name})"
            )
        stage = name
    if stage is not None:
        resolved = registry.resolve(repo, stage=stage)
        return resolved.commit, resolved.version
    return resolve_rev(repo, name), None


# --- checks ---------------------------------------------------------------------------------


def committed_records(repo: str | Path, rev: str) -> tuple[dict[str, dict], list[str]]:
    """The stages' provenance records committed at `rev`, and what is wrong with them."""
    records, problems = {}, []
    for stage in provenance.UPSTREAM:
        where = f"{PROVENANCE_DIR}/{stage}.json"
        text = git_show(repo, rev, where)
        if text is None:
            problems.append(
                f"{where} is not committed at {rev[:12]}: no record of what {stage} ran with "
                "(run `dvc repro` and commit metrics/provenance/)"
            )
            continue
        try:
            records[stage] = provenance.validate(json.loads(text), where, stage)
        except (json.JSONDecodeError, PipelineError) as exc:
            problems.append(str(exc) if isinstance(exc, PipelineError) else f"{where}: {exc}")
    return records, problems


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def lock_vs_commit(repo: str | Path, rev: str, lock: dict) -> list[str]:
    """Files of the commit that differ from what `dvc.lock` says the stages read and wrote:
    the lock was made from a dirty tree, or edited files were committed without a rerun."""
    differ: dict[str, list[str]] = {}
    blobs: dict[str, bytes | None] = {}

    def committed(path: str) -> bytes | None:
        if path not in blobs:
            blobs[path] = git_show(repo, rev, path, binary=True)
        return blobs[path]

    for stage, entry in (lock.get("stages") or {}).items():
        for item in (entry.get("deps") or []) + (entry.get("outs") or []):
            md5 = item.get("md5", "")
            if not md5 or md5.endswith(".dir"):
                continue  # a directory: in the DVC cache, pinned by its hash
            data = committed(item["path"])
            if data is not None and _md5(data) != md5:
                differ.setdefault(item["path"], []).append(stage)
    params_text = git_show(repo, rev, "params.yaml")
    current = flatten(yaml.safe_load(params_text) or {}) if params_text else {}
    for stage in lock.get("stages") or {}:
        entry = provenance.lock_entry(lock, stage)
        for key in provenance.params_differences(entry[0], current):
            differ.setdefault(f"params.yaml {key}", []).append(stage)
    if not differ:
        return []
    listed = ", ".join(f"{path} ({', '.join(stages)})" for path, stages in sorted(differ.items()))
    return [
        f"dvc.lock at {rev[:12]} was not made from the files of that commit: {listed} differ "
        "(built from uncommitted changes?); run `dvc repro` and commit its results"
    ]


def lineage_problems(repo: str | Path, rev: str) -> list[str]:
    """What git alone shows is wrong with the lineage of the model committed at `rev`."""
    lock, _ = dvcfiles.committed(repo, rev)
    found = [
        f"dvc.lock at {rev[:12]} records no run of stage {stage}"
        for stage in PIPELINE
        if stage not in (lock.get("stages") or {})
    ]
    records, record_problems = committed_records(repo, rev)
    found += record_problems
    package = provenance.lock_entry(lock, "package")
    locked_params = package[0] if package else {}
    found += provenance.problems(records, locked_params, "dvc.lock's package stage", lock)
    found += lock_vs_commit(repo, rev, lock)
    return found


def package_problems(repo: str | Path, rev: str, package: Path) -> list[str]:
    """Where a (verified) package disagrees with what is committed at `rev`."""
    from fmnist.serving import layout

    lock, _ = dvcfiles.committed(repo, rev)
    meta = layout.load_metadata(package)
    lineage, params = meta[layout.LINEAGE_FILE], meta[layout.PARAMS_FILE]
    found = []
    records = lineage.get("provenance") or {}
    if set(records) != set(PIPELINE):
        return [
            f"the package records the provenance of {sorted(records) or 'no stage'}, not of "
            f"every stage ({', '.join(PIPELINE)}): rebuild it with `dvc repro -f package`"
        ]
    committed, _ = committed_records(repo, rev)
    for stage, rec in committed.items():
        if rec != records[stage]:
            found.append(
                f"the package's provenance record of {stage} differs from "
                f"{PROVENANCE_DIR}/{stage}.json at {rev[:12]}"
            )
    try:
        records = {s: provenance.validate(r, "the package", s) for s, r in records.items()}
    except PipelineError as exc:
        return found + [str(exc)]
    found += provenance.problems(records, flatten(params), "the package's params.json", lock)
    entry = provenance.lock_entry(lock, "package")
    locked_deps = entry[1] if entry else {}
    inputs = lineage.get("inputs") or {}
    for path, md5 in sorted(inputs.items()):
        if locked_deps.get(path) != md5:
            found.append(f"the package was made from a {path} that dvc.lock does not record")
    eval_text = git_show(repo, rev, "metrics/eval.json")
    if eval_text is not None:
        committed_test = json.loads(eval_text).get("test")
        if meta[layout.METRICS_FILE].get("test") != committed_test:
            found.append(f"the package's test metrics differ from metrics/eval.json at {rev[:12]}")
    return found


# --- the record -----------------------------------------------------------------------------


def lineage_at(repo: str | Path, rev: str, name: str | None = None) -> dict:
    """What made the model committed at `rev`: code commit, versions, data and model hashes,
    params, the stages' provenance, and every problem found with them."""
    commit = resolve_rev(repo, rev)
    lock, spec = dvcfiles.committed(repo, rev)
    outputs = dvcfiles.lock_outputs(lock, spec)

    def hashes(stages: tuple[str, ...]) -> dict:
        return {o.path: o.md5 for o in outputs if o.stage in stages and o.cached}

    records, _ = committed_records(repo, commit)
    from fmnist.tools.registry import ARTIFACT

    return {
        "rev": name or rev,
        "commit": commit,
        "versions": [t.partition("@")[2] for t in tags_at(repo, commit, f"{ARTIFACT}@v*")],
        "dataset": committed_dataset(repo, commit),
        "data": hashes(DATA_STAGES),
        "model": hashes(MODEL_STAGES),
        "params": dvcfiles.lock_params(lock),
        "environment": committed_environment(repo, commit),
        "locks": committed_locks(repo, commit),
        "provenance": {stage: rec["params_sha256"] for stage, rec in records.items()},
        "problems": lineage_problems(repo, commit),
    }


def format_lineage(record: dict) -> str:
    """The lineage record as aligned text for a terminal."""
    lines = [f"rev      {record['rev']}", f"commit   {record['commit']}"]
    lines += [f"version  {version}" for version in record.get("versions", [])]
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
    for stage, digest in record.get("provenance", {}).items():
        lines.append(f"ran      {stage}: params sha256 {digest[:16]}…")
    problems = record.get("problems", [])
    lines += [f"problem  {p}" for p in problems]
    if not problems:
        lines.append("check    dvc.lock, the stages' records and the commit's files agree")
    return "\n".join(lines)


@report_errors
def main(argv: list[str] | None = None) -> int:
    """`fmnist lineage [NAME] [--json]`."""
    parser = argparse.ArgumentParser(
        prog="fmnist lineage",
        description="Print the code commit, dataset version, data and model hashes, params and "
        "training environment of a version, stage, commit or branch, and check that they agree.",
    )
    parser.add_argument(
        "name",
        nargs="?",
        default="HEAD",
        help="v1.0.0, fashion-mnist-cnn@v1.0.0, a stage (prod), a commit or a branch",
    )
    parser.add_argument("--repo", default=".", help="the git repo (default: here)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    commit, _ = resolve_name(args.repo, args.name)
    record = lineage_at(args.repo, commit, args.name)
    print(json.dumps(record, indent=2) if args.json else format_lineage(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
