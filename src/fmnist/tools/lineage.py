"""What made a model: the code commit, the data's content hashes, the params and the machine.

`fmnist lineage [REV]` answers that for any git rev (a commit, a branch, or a GTO model version
tag such as `fashion-mnist-cnn@v1.0.0`) from what is committed there: `dvc.lock` holds the
content hash of every output and the params each stage ran with, so nothing needs to be pulled
to ask.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fmnist import dvcfiles
from fmnist.errors import report_errors
from fmnist.git import resolve_rev

# The stages whose outputs are the dataset version and the model version (named in dvc.yaml).
DATA_STAGES = ("fetch", "prepare")
MODEL_STAGES = ("train", "package")


def lineage_at(repo: str | Path, rev: str) -> dict:
    """What made the model committed at `rev`: code commit, data and model hashes, params."""
    commit = resolve_rev(repo, rev)
    lock, spec = dvcfiles.committed(repo, rev)
    outputs = dvcfiles.lock_outputs(lock, spec)

    def hashes(stages: tuple[str, ...]) -> dict:
        return {o.path: o.md5 for o in outputs if o.stage in stages and o.cached}

    return {
        "rev": rev,
        "commit": commit,
        "data": hashes(DATA_STAGES),
        "model": hashes(MODEL_STAGES),
        "params": dvcfiles.lock_params(lock),
    }


def format_lineage(record: dict) -> str:
    """The lineage record as aligned text for a terminal."""
    lines = [f"rev      {record['rev']}", f"commit   {record['commit']}"]
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
