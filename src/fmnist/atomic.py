"""Stage outputs: written atomically with stable bytes, read back with errors naming the stage.

An output either appears whole or not at all:
a stage killed halfway (or failing on bad input) must not leave a half-written file that DVC
could cache or a later stage could read. Everything is written to a temporary sibling and moved
into place with `os.replace`, which is atomic on one filesystem. A process killed mid-write
(SIGKILL, a lost machine) cannot clean up after itself: its temporary sibling carries its machine
and PID, and the next write of the same path on that machine removes the siblings of writers that
are no longer running there (a later process that reuses the PID does not keep one). A PID
means nothing on another machine, so another machine's siblings on a shared filesystem are left
to it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import zipfile
from collections.abc import Iterator
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

from fmnist import processes
from fmnist.errors import PipelineError

# Zip archives stamp each member with the time it was written; a fixed stamp makes the same
# content give the same bytes, and so the same DVC hash on every run.
FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def _writable_parent(path: Path) -> Path:
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PipelineError(f"cannot create directory {parent}: {exc.strerror}") from None
    return parent


@functools.cache
def _machine() -> str:
    """This machine in the names of its temporary siblings: a fixed-length hash of its host
    name, so that any host name fits in a file name and none is read as part of another."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _clear_abandoned(path: Path) -> None:
    """Remove the temporary siblings of `path` whose writers on this machine were killed
    mid-write."""
    # `.NAME.MACHINE-PID-RANDOM.tmp`; older versions wrote `.NAME.PID-RANDOM.tmp` and
    # `.NAME.RANDOM.tmp` (RANDOM: tempfile's eight characters, never a hyphen).
    name = re.compile(
        re.escape(f".{path.name}.")
        + r"(?:(?P<machine>[0-9a-f]{8})-(?P<pid>\d+)-|(?P<old_pid>\d+)-)?[a-z0-9_]{8}\.tmp"
    )
    for sibling in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        match = name.fullmatch(sibling.name)
        if not match or match["machine"] not in (None, _machine()):
            continue
        pid = match["pid"] or match["old_pid"]
        try:
            # Its writer started before it last wrote to the sibling; a process with its PID
            # that started later is not that writer.
            written = sibling.stat().st_mtime
        except OSError:  # removed meanwhile by another writer of the path
            continue
        # A sibling named before siblings carried a PID has no writer left.
        if pid is None or not processes.running(int(pid), started_by=written):
            shutil.rmtree(sibling, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success move it to `path`, on error remove it.

    Works for a file or a directory written at the yielded path. What killed writers of `path`
    left beside it is removed first.
    """
    path = Path(path)
    parent = _writable_parent(path)
    _clear_abandoned(path)
    try:
        tmp_dir = Path(
            tempfile.mkdtemp(
                prefix=f".{path.name}.{_machine()}-{os.getpid()}-", suffix=".tmp", dir=parent
            )
        )
    except OSError as exc:
        raise PipelineError(f"cannot write to {parent}: {exc.strerror}") from None
    tmp = tmp_dir / path.name
    try:
        yield tmp
        if not tmp.exists():
            raise PipelineError(f"nothing was written for {path}")
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except OSError as exc:
        raise PipelineError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def remove(path: str | Path) -> None:
    """Remove the directory `path`, and what writers of it killed mid-write left beside it."""
    path = Path(path)
    _clear_abandoned(path)
    shutil.rmtree(path, ignore_errors=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    write_bytes(path, text.encode())


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented, key-sorted JSON (stable bytes for stable hashes)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def zip_entry(name: str) -> zipfile.ZipInfo:
    """The header of a zip member `name` with the fixed time (stored, not compressed)."""
    return zipfile.ZipInfo(name, date_time=FIXED_ZIP_TIME)


def read_json(path: str | Path, produced_by: str) -> dict:
    """Load a JSON file another stage wrote; name that stage if it is missing or broken."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: missing; run `dvc repro {produced_by}`") from None
    except json.JSONDecodeError as exc:
        raise PipelineError(
            f"{path}: not valid JSON ({exc}); run `dvc repro {produced_by}`"
        ) from None


def file_md5(path: str | Path) -> str:
    """The MD5 of a file's bytes: what DVC 3 records for a file in `dvc.lock`."""
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "md5").hexdigest()


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes."""
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def dir_md5(path: str | Path) -> str:
    """The hash DVC 3 records in `dvc.lock` for a directory output: the MD5 of the JSON list of
    its files' MD5s and relative paths, sorted by path, with `.dir` appended."""
    root = Path(path)
    entries = sorted(
        (
            {"md5": file_md5(file), "relpath": file.relative_to(root).as_posix()}
            for file in root.rglob("*")
            if file.is_file()
        ),
        key=lambda entry: entry["relpath"],
    )
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"
