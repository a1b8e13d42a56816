"""Stage `parent`: the registered model whose weights start training (`train.init_from`).

With a version (`fashion-mnist-cnn@v1.2.0`) or a stage (`prod`, resolved to the version it
holds by the registry), the version's package comes from the DVC remote (`dvc artifacts get`)
into `models/parent/`, and `models/parent.json` records the ref, the version and its commit.
`dvc.lock` then records the package's hash: what the run started from (the same hash as the
registered version's `models/package`). With `train.init_from: ""` the directory holds only a
note, and training starts from scratch. A missing version or an unusable remote fails here, before
training; `train` refuses a parent whose architecture differs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fmnist import atomic
from fmnist.errors import PipelineError, report_errors
from fmnist.params import load_params
from fmnist.tools import registry, remote

# Where the registry's git tags are, if not in the project itself (a clone of it elsewhere).
REGISTRY_VARIABLE = "FMNIST_REGISTRY"
# What `models/parent/` holds when training starts from scratch.
NO_PARENT_FILE = "NONE.txt"
NO_PARENT_NOTE = "train.init_from is empty: training starts from random weights.\n"
# DVC runs `--temp` and queued experiments in <project>/.dvc/tmp/exps/...: a fresh git
# repository with the experiment's commit but none of the project's tags.
_EXPERIMENT_DIRS = (".dvc", "tmp", "exps")


def registry_repo(cwd: Path) -> Path:
    """The git repository whose GTO tags name the versions: `FMNIST_REGISTRY` if set, else the
    project, which is the one that started the experiment when DVC runs this in a copy."""
    if os.environ.get(REGISTRY_VARIABLE):
        return Path(os.environ[REGISTRY_VARIABLE])
    parts = cwd.resolve().parts
    n = len(_EXPERIMENT_DIRS)
    for i in range(len(parts) - n + 1):
        if parts[i : i + n] == _EXPERIMENT_DIRS:
            return Path(*parts[:i])
    return cwd


def fetch_parent(ref: str, repo: Path, out: Path) -> dict:
    """Fetch the package `ref` names into `out`; return the record of what was fetched.

    An empty `ref` leaves only a note in `out` (training from scratch; DVC warns about an empty
    directory output).
    """
    if not ref:
        with atomic.atomic_path(out) as tmp:
            tmp.mkdir()
            (tmp / NO_PARENT_FILE).write_text(NO_PARENT_NOTE)
        return {"init_from": ""}
    resolved = registry.resolve_ref(repo, ref)
    try:
        remote.check_remote(repo, None)  # an unusable remote: one line, before the download
        with atomic.atomic_path(out) as tmp:
            registry.get(repo, tmp, resolved)  # verified against its manifest and dvc.lock
    except PipelineError as exc:
        raise PipelineError(f"train.init_from: cannot fetch {resolved.tag}: {exc}") from None
    return {
        "init_from": ref,
        "version": resolved.version,
        "tag": resolved.tag,
        "commit": resolved.commit,
    }


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, default=Path("models/parent"))
    parser.add_argument("--record", type=Path, default=Path("models/parent.json"))
    args = parser.parse_args(argv)
    ref = load_params(args.params).train.init_from
    record = fetch_parent(ref, registry_repo(Path.cwd()), args.out)
    atomic.write_json(args.record, record)
    if ref:
        print(f"parent: {record['tag']} ({ref}) fetched to {args.out}")
    else:
        print("parent: none (train.init_from is empty): training starts from scratch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
