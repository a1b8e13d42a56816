"""Stage `fetch`: write the dataset version to `data/raw/`, four IDX files in canonical form.

`fetch.dataset: canonical` (the default) gets Fashion-MNIST itself. Sources are tried in order:
`fetch.source_dir`, the directory in $FMNIST_DATA_DIR, the Debian package's directory
(`fetch.system_dir`) and the official download (`fetch.base_url`). A source that is not there
is skipped; a source that is there but holds other data stops the stage, naming how it
differs, so corrupt or edited data is never silently replaced or used.

`fetch.dataset: custom` gets a dataset version of your own (corrected labels, added or
removed images) from `fetch.source_dir` only, and says how it differs from the canonical one.

A source directory may hold the IDX files (gzipped or not) or the Kaggle CSV pair (gzipped or
not, any row order, any line ending). Whatever it came in, the data is written in one
canonical form (`fmnist.dataset_versions`), so the DVC hash of `data/raw` (the dataset
version) depends only on the examples.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from fmnist import atomic, provenance
from fmnist.dataset import (
    CSV_FILES,
    IDX_FILES,
    Split,
    decompress,
    parse_csv,
    parse_idx_split,
    sha256,
    split_changes,
    version_summary,
)
from fmnist.dataset_versions import canonical_files, describe, differing_files
from fmnist.errors import DataError, report_errors
from fmnist.params import FetchParams, load_params

ENV_DATA_DIR = "FMNIST_DATA_DIR"


class SourceMissing(Exception):
    """The source is not there (no such directory, no files, unreachable): try the next one."""


@dataclass(frozen=True)
class Source:
    """One place the data may come from."""

    kind: str  # "dir" or "url"
    location: str
    origin: str  # which setting named it

    def __str__(self) -> str:
        return f"{self.origin}: {self.location}"


@dataclass(frozen=True)
class Fetched:
    """A dataset version as `fetch` writes it, where it came from, and what it is."""

    files: dict[str, bytes]  # IDX file name -> bytes, canonical form
    source: Source
    record: dict  # `fmnist.dataset_versions.describe`: canonical or not, and how it differs


def sources(params: FetchParams, environ: dict[str, str]) -> list[Source]:
    """The sources to try, in order, from params and the environment."""
    found = []
    if params.source_dir:
        found.append(Source("dir", params.source_dir, "fetch.source_dir"))
    if params.dataset == "custom":
        return found  # a dataset of your own comes from where params say, or not at all
    if environ.get(ENV_DATA_DIR):
        found.append(Source("dir", environ[ENV_DATA_DIR], f"${ENV_DATA_DIR}"))
    if params.system_dir:
        found.append(Source("dir", params.system_dir, "fetch.system_dir"))
    if params.base_url:
        found.append(Source("url", params.base_url, "fetch.base_url"))
    return found


def _all_idx_names() -> list[str]:
    return [name for pair in IDX_FILES.values() for name in pair]


def _first_file(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_dir(directory: Path) -> tuple[dict[str, Split], str]:
    """Every split from the IDX files or the Kaggle CSV pair in `directory`, and which format
    it was ("idx" or "csv")."""
    if not directory.is_dir():
        raise SourceMissing(f"no such directory {directory}")
    idx = {name: _first_file(directory, name) for name in _all_idx_names()}
    if all(idx.values()):
        splits = {
            split: parse_idx_split(
                *(decompress(idx[name].read_bytes(), str(idx[name])) for name in names), split
            )
            for split, names in IDX_FILES.items()
        }
        return splits, "idx"
    csv = {split: _first_file(directory, name) for split, name in CSV_FILES.items()}
    if all(csv.values()):
        splits = {
            split: parse_csv(decompress(path.read_bytes(), str(path)), str(path))
            for split, path in csv.items()
        }
        return splits, "csv"
    if any(idx.values()):
        missing = sorted(name for name, path in idx.items() if path is None)
        raise DataError(f"{directory}: has some IDX files but not {', '.join(missing)} (nor .gz)")
    raise SourceMissing(
        f"{directory} holds neither the IDX files ({', '.join(_all_idx_names())}, or .gz) "
        f"nor the Kaggle CSV pair ({', '.join(CSV_FILES.values())}, or .gz)"
    )


def download(base_url: str, timeout_s: float) -> dict[str, Split]:
    """Download, decompress and decode the four `.gz` files from `base_url`."""
    blobs = {}
    for name in _all_idx_names():
        url = base_url.rstrip("/") + f"/{name}.gz"
        print(f"fetch: downloading {url}", flush=True)
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                blobs[name] = decompress(response.read(), url)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise SourceMissing(f"cannot download {url}: {getattr(exc, 'reason', exc)}") from None
    return {
        split: parse_idx_split(*(blobs[name] for name in names), split)
        for split, names in IDX_FILES.items()
    }


def not_canonical(record: dict, digests: dict[str, str]) -> str:
    """Why a dataset that should be the canonical one is not: how it differs, and what to do."""
    return (
        f"not the canonical Fashion-MNIST ({split_changes(record)}; SHA-256 of "
        f"{', '.join(differing_files(digests))} in canonical form differs). If this is a "
        "dataset version of your own, say so: set fetch.dataset: custom (docs/data.md); "
        "otherwise the files are corrupt or edited: get them again"
    )


def fetch(params: FetchParams, environ: dict[str, str]) -> Fetched:
    """The dataset version in canonical form, from the first source that has it, checked."""
    tried = []
    for source in sources(params, environ):
        try:
            if source.kind == "dir":
                splits, _ = read_dir(Path(source.location))
            else:
                splits = download(source.location, params.timeout_s)
        except SourceMissing as exc:
            if params.dataset == "custom":
                raise DataError(
                    f"fetch.dataset is custom, so the data comes from {source} only, and "
                    f"{exc}; point fetch.source_dir at your dataset version"
                ) from None
            tried.append(f"{source}: {exc}")
            continue
        except DataError as exc:
            raise DataError(f"{source}: {exc}") from None
        files = canonical_files(splits)
        digests = {name: sha256(data) for name, data in files.items()}
        record = describe(splits, digests)
        if params.dataset == "canonical" and not record["canonical"]:
            raise DataError(f"{source}: {not_canonical(record, digests)}")
        return Fetched(files, source, record)
    listing = "\n".join(f"  - {t}" for t in tried) or "  (none configured)"
    raise DataError(
        "Fashion-MNIST was not found. Sources tried:\n"
        f"{listing}\n"
        "Get the data one of these ways:\n"
        "  - install the Debian/Ubuntu package: sudo apt-get install dataset-fashion-mnist\n"
        "  - put the four *-ubyte.gz files or the Kaggle CSV pair in a directory and set "
        f"fetch.source_dir (or ${ENV_DATA_DIR}) to it"
    )


def write_raw(files: dict[str, bytes], out_dir: Path) -> None:
    """Write the IDX files into `out_dir` as one atomic directory replacement."""
    with atomic.atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for name, data in sorted(files.items()):
            (tmp / name).write_bytes(data)


def report_line(fetched: Fetched, dataset: str) -> str:
    """What `fetch` got, from where, and whether it is the canonical dataset."""
    record = fetched.record
    counts = f"{record['train']['examples']} train + {record['test']['examples']} test examples"
    if dataset == "canonical":
        what = "canonical Fashion-MNIST, checksums verified"
    elif record["canonical"]:
        what = "identical to the canonical Fashion-MNIST: fetch.dataset: canonical would verify it"
    else:
        what = version_summary(record)
    return f"fetch: {counts} from {fetched.source} ({what})"


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, default=Path("data/raw"))
    parser.add_argument("--provenance", type=Path, default=Path("metrics/provenance/fetch.json"))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    fetched = fetch(params.fetch, dict(os.environ))
    write_raw(fetched.files, args.out)
    provenance.write(args.provenance, "fetch", params)
    print(report_line(fetched, params.fetch.dataset))
    return 0


if __name__ == "__main__":
    sys.exit(main())
