"""Stage `fetch`: put the four original Fashion-MNIST IDX files, decompressed, in `data/raw/`.

Sources are tried in order: `fetch.source_dir`, the directory in $FMNIST_DATA_DIR, the Debian
package's directory (`fetch.system_dir`) and the official download (`fetch.base_url`). A source
directory may hold the IDX files (gzipped or not) or the Kaggle CSV pair. A source that is not
there is skipped; a source that is there but holds bad data stops the stage, so corrupt data is
never silently replaced by other data.

The raw files are stored decompressed, so the DVC hash of `data/raw` (the dataset version) is
the same whichever source or gzip produced them.
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
    CANONICAL_CONTENT_DIGEST,
    CANONICAL_SHA256,
    CSV_FILES,
    IDX_FILES,
    content_digest,
    decompress,
    encode_idx,
    parse_csv,
    parse_idx_split,
    sha256,
)
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


def sources(params: FetchParams, environ: dict[str, str]) -> list[Source]:
    """The sources to try, in order, from params and the environment."""
    found = []
    if params.source_dir:
        found.append(Source("dir", params.source_dir, "fetch.source_dir"))
    if environ.get(ENV_DATA_DIR):
        found.append(Source("dir", environ[ENV_DATA_DIR], f"${ENV_DATA_DIR}"))
    if params.system_dir:
        found.append(Source("dir", params.system_dir, "fetch.system_dir"))
    if params.base_url:
        found.append(Source("url", params.base_url, "fetch.base_url"))
    return found


def _all_idx_names() -> list[str]:
    return [name for pair in IDX_FILES.values() for name in pair]


def read_dir(directory: Path) -> tuple[dict[str, bytes], str]:
    """The decompressed IDX files in `directory`, and the format they came in ("idx"/"csv")."""
    if not directory.is_dir():
        raise SourceMissing(f"no such directory {directory}")
    idx = {}
    for name in _all_idx_names():
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                idx[name] = decompress(candidate.read_bytes(), str(candidate))
                break
    if len(idx) == len(IDX_FILES) * 2:
        return idx, "idx"
    csv_paths = {split: directory / name for split, name in CSV_FILES.items()}
    if all(p.is_file() for p in csv_paths.values()):
        out = {}
        for split, path in csv_paths.items():
            images, labels = parse_csv(path.read_bytes(), str(path))
            images_name, labels_name = IDX_FILES[split]
            out[images_name], out[labels_name] = encode_idx(images), encode_idx(labels)
        return out, "csv"
    if idx:
        missing = sorted(set(_all_idx_names()) - set(idx))
        raise DataError(f"{directory}: has some IDX files but not {', '.join(missing)} (nor .gz)")
    raise SourceMissing(
        f"{directory} holds neither the IDX files ({', '.join(_all_idx_names())}, or .gz) "
        f"nor the Kaggle CSV pair ({', '.join(CSV_FILES.values())})"
    )


def download(base_url: str, timeout_s: float) -> dict[str, bytes]:
    """Download and decompress the four `.gz` files from `base_url`."""
    out = {}
    for name in _all_idx_names():
        url = base_url.rstrip("/") + f"/{name}.gz"
        print(f"fetch: downloading {url}", flush=True)
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                out[name] = decompress(response.read(), url)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise SourceMissing(f"cannot download {url}: {getattr(exc, 'reason', exc)}") from None
    return out


def verify(files: dict[str, bytes], fmt: str) -> None:
    """Check `files` against the canonical digests; a CSV source is checked order-free."""
    if fmt == "idx":
        for name, data in files.items():
            if sha256(data) != CANONICAL_SHA256[name]:
                raise DataError(
                    f"{name}: SHA-256 of its decompressed content is {sha256(data)}, not the "
                    f"canonical {CANONICAL_SHA256[name]}; the file is corrupt or not "
                    "Fashion-MNIST (set fetch.verify_checksums: false only for data of your own)"
                )
        return
    for split, (images_name, labels_name) in IDX_FILES.items():
        images, labels = parse_idx_split(files[images_name], files[labels_name], split)
        if content_digest(images, labels) != CANONICAL_CONTENT_DIGEST[split]:
            raise DataError(
                f"{CSV_FILES[split]}: its examples differ from the canonical Fashion-MNIST "
                f"{split} set; the file is corrupt or edited"
            )


def check(files: dict[str, bytes]) -> dict[str, int]:
    """Decode every split to prove the files are well-formed IDX; return examples per split."""
    counts = {}
    for split, (images_name, labels_name) in IDX_FILES.items():
        _, labels = parse_idx_split(files[images_name], files[labels_name], split)
        counts[split] = len(labels)
    return counts


def fetch(params: FetchParams, environ: dict[str, str]) -> tuple[dict[str, bytes], Source]:
    """Get the four decompressed, checked IDX files from the first source that has them."""
    tried = []
    for source in sources(params, environ):
        try:
            if source.kind == "dir":
                files, fmt = read_dir(Path(source.location))
            else:
                files, fmt = download(source.location, params.timeout_s), "idx"
        except SourceMissing as exc:
            tried.append(f"{source}: {exc}")
            continue
        except DataError as exc:
            raise DataError(f"{source}: {exc}") from None
        check(files)
        if params.verify_checksums:
            try:
                verify(files, fmt)
            except DataError as exc:
                raise DataError(f"{source}: {exc}") from None
        return files, source
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


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, default=Path("data/raw"))
    parser.add_argument("--provenance", type=Path, default=Path("metrics/provenance/fetch.json"))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    files, source = fetch(params.fetch, dict(os.environ))
    write_raw(files, args.out)
    provenance.write(args.provenance, "fetch", params)
    counts = check(files)  # cheap: decoding is a view of the bytes
    checked = "checksums verified" if params.fetch.verify_checksums else "checksums NOT verified"
    print(
        f"fetch: {counts['train']} train + {counts['test']} test examples from {source} ({checked})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
