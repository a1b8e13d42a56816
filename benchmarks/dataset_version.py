"""One dataset, one version: the DVC hash of `data/raw` from the IDX files and from the Kaggle
CSV pair of the same examples, rows shuffled, with CRLF line endings, plain and gzipped.

Writes those CSV pairs from the IDX files in `--data`, then runs the pipeline's own `fetch`
stage (`dvc repro fetch`) on each source in a scratch git+DVC repository holding this
checkout's `dvc.yaml`, `params.yaml` and `src/`, and prints the hash each run recorded in
`dvc.lock` (exit 1 if they differ). The real dataset takes a few minutes on a laptop CPU:

    nice -n 10 python3 benchmarks/dataset_version.py

`--write-reference` first rewrites what `fmnist.dataset` knows of the canonical dataset from
`--data` (`src/fmnist/canonical_reference.npz`) and prints its `CANONICAL_SHA256`
(for `fmnist/dataset_versions.py`); run it
only on the real Fashion-MNIST. `--dataset custom` runs on data that is not Fashion-MNIST
(the tests' tiny synthetic set).
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from fmnist import dataset
from fmnist import dataset_versions as versions
from fmnist.errors import PipelineError
from fmnist.params import DEBIAN_DATASET_DIR, with_overrides
from fmnist.stages import fetch

ROOT = Path(__file__).resolve().parents[1]


def write_shuffled_csv(
    splits: dict[str, dataset.Split], directory: Path, seed: int, gz: bool
) -> Path:
    """The Kaggle CSV pair of `splits`, rows shuffled, CRLF line endings, gzipped if `gz`."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for split, name in dataset.CSV_FILES.items():
        images, labels = splits[split]
        order = rng.permutation(len(labels))
        text = dataset.encode_csv(images[order], labels[order]).replace(b"\n", b"\r\n")
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(text, compresslevel=1, mtime=0))
        else:
            (directory / name).write_bytes(text)
    return directory


def run(cmd: list[str], cwd: Path) -> str:
    """Run a command; its stdout, or exit with what it printed."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def raw_hash(source: Path, repo: Path, dataset_kind: str) -> tuple[str, str]:
    """(DVC hash of data/raw, fetch's report line) after `dvc repro fetch` on `source`."""
    repo.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    settings = {
        "fetch.dataset": dataset_kind,
        "fetch.source_dir": str(source),
        "fetch.system_dir": "",
        "fetch.base_url": "",
    }
    (repo / "params.yaml").write_text(yaml.safe_dump(with_overrides(params, settings)))
    run(["git", "init", "-q"], repo)
    run([sys.executable, "-m", "dvc", "init", "-q"], repo)
    out = run([sys.executable, "-m", "dvc", "repro", "fetch"], repo)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    md5 = next(o["md5"] for o in lock["stages"]["fetch"]["outs"] if o["path"] == "data/raw")
    said = next((line for line in out.splitlines() if line.startswith("fetch: ")), "")
    return md5, said


def write_reference(splits: dict[str, dataset.Split]) -> None:
    """Rewrite `fmnist.dataset`'s knowledge of the canonical dataset from `splits`."""
    versions.CANONICAL_REFERENCE.write_bytes(versions.reference_of(splits))
    files = versions.canonical_files(splits)
    print(f"wrote {versions.CANONICAL_REFERENCE}; CANONICAL_SHA256 in fmnist/dataset_versions.py:")
    for name in versions.CANONICAL_SHA256:
        print(f'    "{name}": "{dataset.sha256(files[name])}",')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(DEBIAN_DATASET_DIR))
    parser.add_argument("--dataset", choices=["canonical", "custom"], default="canonical")
    parser.add_argument("--seed", type=int, default=0, help="seeds the CSV rows' shuffle")
    parser.add_argument("--write-reference", action="store_true")
    args = parser.parse_args()
    try:
        splits, fmt = fetch.read_dir(args.data)
    except (fetch.SourceMissing, PipelineError) as exc:
        sys.exit(f"error: --data: {exc}; name the Fashion-MNIST IDX files' directory")
    if fmt != "idx":
        sys.exit(f"error: --data: {args.data}: expected the IDX files, found the {fmt} pair")
    if args.write_reference:
        write_reference(splits)
    with tempfile.TemporaryDirectory(prefix="dataset-version-") as tmp:
        base = Path(tmp)
        sources = {
            f"IDX files as installed ({args.data})": args.data,
            "Kaggle CSV pair: rows shuffled, CRLF": write_shuffled_csv(
                splits, base / "csv", args.seed, gz=False
            ),
            "Kaggle CSV pair: rows shuffled again, CRLF, gzipped": write_shuffled_csv(
                splits, base / "csv-gz", args.seed + 1, gz=True
            ),
        }
        rows = []
        for label, source in sources.items():
            start = time.perf_counter()
            md5, said = raw_hash(source, base / f"repo{len(rows)}", args.dataset)
            rows.append((label, md5, f"{time.perf_counter() - start:.0f}", said))
    print("| source | data/raw DVC hash | s | fetch printed |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    hashes = {md5 for _, md5, _, _ in rows}
    print("equal" if len(hashes) == 1 else "DIFFERENT")
    sys.exit(0 if len(hashes) == 1 else 1)


if __name__ == "__main__":
    main()
