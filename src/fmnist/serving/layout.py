"""The package's layout: the files a model version ships, their manifest, and loading it back.

saved_model.pb, variables/, fingerprint.pb    the SavedModel (`serving_default`)
model.keras                                   the native Keras model
metadata/model_card.md                        what it is for, how good, limits
metadata/metrics.json                         test metrics, overall and per class
metadata/params.json                          every param it was made with
metadata/confusion_matrix.png                 from the `evaluate` stage
metadata/class_names.json                     class id -> name
metadata/lineage.json                         data, inputs, code and params of every stage,
                                              training record, input contract
metadata/SHA256SUMS                           SHA-256 of every other file (`sha256sum -c`)

Every file is covered by the manifest, and every load verifies it first: a file changed after
packaging (a re-zipped `model.keras` with a zeroed kernel has valid CRCs and loads), a missing
file or a file that is not part of the package is refused with one line naming it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from fmnist import atomic
from fmnist.errors import PipelineError

if TYPE_CHECKING:
    import keras

MODEL_FILE = "model.keras"
SAVED_MODEL_FILE = "saved_model.pb"
METADATA_DIR = "metadata"
MODEL_CARD_FILE = "model_card.md"
CLASS_NAMES_FILE = "class_names.json"
PARAMS_FILE = "params.json"
METRICS_FILE = "metrics.json"
LINEAGE_FILE = "lineage.json"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"
# In `sha256sum` format, paths relative to the package: `sha256sum -c metadata/SHA256SUMS`.
MANIFEST = f"{METADATA_DIR}/SHA256SUMS"
# A manifest lists a few dozen files; anything far larger is not one.
_MAX_MANIFEST_BYTES = 1 << 20
_LINE = re.compile(r"([0-9a-f]{64}) [ *](.+)")


class IntegrityError(PipelineError):
    """A package file differs from its manifest, is missing, or is not part of the package."""


_REFETCH = "get the package again (`fmnist get`) or rebuild it (`dvc repro -f package`)"


def package_files(path: Path) -> list[str]:
    """Every file under the package directory `path` but the manifest, as sorted POSIX paths."""
    files = (p.relative_to(path).as_posix() for p in path.rglob("*") if not p.is_dir())
    return sorted(f for f in files if f != MANIFEST)


def write_manifest(path: str | Path) -> dict[str, str]:
    """Write the manifest of the package at `path` (the last file written); return it."""
    path = Path(path)
    manifest = {name: atomic.file_sha256(path / name) for name in package_files(path)}
    text = "".join(f"{digest}  {name}\n" for name, digest in manifest.items())
    atomic.write_text(path / MANIFEST, text)
    return manifest


def _safe(name: str) -> bool:
    parts = name.split("/")
    return not (name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts))


def read_manifest(path: str | Path) -> dict[str, str]:
    """The manifest of the package at `path`: {relative path: SHA-256}."""
    path = Path(path)
    where = path / MANIFEST
    if not path.is_dir():
        raise IntegrityError(f"{path}: not a model package (no such directory)")
    if not where.is_file():
        raise IntegrityError(
            f"{where}: missing, so the package's files cannot be checked; {_REFETCH}"
        )
    try:
        if where.stat().st_size > _MAX_MANIFEST_BYTES:
            raise IntegrityError(
                f"{where}: larger than {_MAX_MANIFEST_BYTES} bytes; not a manifest"
            )
        text = where.read_bytes().decode()
    except UnicodeDecodeError:
        raise IntegrityError(f"{where}: not UTF-8 text; not a manifest") from None
    except OSError as exc:
        raise IntegrityError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    manifest: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = _LINE.fullmatch(line)
        if not match:
            raise IntegrityError(
                f"{where} line {number}: expected '<64 hex digits>  <path>'; {_REFETCH}"
            )
        digest, name = match.groups()
        if not _safe(name) or name == MANIFEST or name in manifest:
            raise IntegrityError(
                f"{where} line {number}: {name!r} is not a path inside the package, or is "
                f"listed twice; {_REFETCH}"
            )
        manifest[name] = digest
    if not manifest:
        raise IntegrityError(f"{where}: lists no files; {_REFETCH}")
    return manifest


def verify_package(path: str | Path, expected_dvc_hash: str | None = None) -> dict[str, str]:
    """Check every file of the package at `path` against its manifest; return the manifest.

    With `expected_dvc_hash` (a version's `models/package` hash in its `dvc.lock`), also check
    that the directory is exactly that output, manifest included. Raises `IntegrityError`
    naming the first file that differs, is missing, or does not belong.
    """
    path = Path(path)
    manifest = read_manifest(path)
    present = package_files(path)
    problems = []
    for name in present:
        if name not in manifest:
            problems.append(f"{path / name}: not part of the package (not in {MANIFEST})")
    for name, digest in manifest.items():
        file = path / name
        if not file.is_file():
            problems.append(f"{file}: missing (listed in {MANIFEST})")
            continue
        try:
            actual = atomic.file_sha256(file)
        except OSError as exc:
            problems.append(f"{file}: cannot be read ({exc.strerror or exc})")
            continue
        if actual != digest:
            problems.append(
                f"{file}: SHA-256 {actual[:12]}… differs from the manifest's {digest[:12]}… "
                "(changed after packaging)"
            )
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise IntegrityError(f"{problems[0]}{more}; {_REFETCH}")
    if expected_dvc_hash is not None:
        actual_hash = atomic.dir_md5(path)
        if actual_hash != expected_dvc_hash:
            raise IntegrityError(
                f"{path}: DVC hash {actual_hash} is not the {expected_dvc_hash} that the "
                f"version's dvc.lock records: its manifest was rewritten or it is another "
                f"package; {_REFETCH}"
            )
    return manifest


def load_metadata(path: str | Path) -> dict:
    """The package's metadata JSON files by name (verify the package first)."""
    path = Path(path)
    return {
        name: atomic.read_json(path / METADATA_DIR / name, "package")
        for name in (CLASS_NAMES_FILE, PARAMS_FILE, METRICS_FILE, LINEAGE_FILE)
    }


def load_package(path: str | Path) -> tuple[keras.Model, dict]:
    """Verify a package, then load it: the Keras model (safe mode) and its metadata by name."""
    from fmnist.model import saving  # Keras: only once a model is loaded, not for checks

    path = Path(path)
    verify_package(path)
    return saving.load_model(path / MODEL_FILE), load_metadata(path)
