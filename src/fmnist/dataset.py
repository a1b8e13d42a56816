"""Fashion-MNIST itself: class names, image shape, file names, and its two formats.

The one source of truth for what the dataset is (the canonical form of its versions and the
canonical checksums are in `fmnist.dataset_versions`; `version_summary` puts a version's record
in words). The readers here are strict: a file that is truncated, has a wrong magic number or
dimensions, declares more data than it holds, or has a label out of range raises `DataError`
naming the file and the problem, before any array is allocated from a declared size.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from fmnist import atomic
from fmnist.errors import DataError

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SIZE = 28
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)  # (H, W, C) of one model input
PIXELS = IMAGE_SIZE * IMAGE_SIZE

Split = tuple[np.ndarray, np.ndarray]  # (images (N, 28, 28) uint8, labels (N,) uint8)
# The prepared splits, each stored as `<name>.npz` by the `prepare` stage.
SPLIT_NAMES = ("train", "val", "test")

# split -> (images file, labels file), the original (decompressed) IDX names.
IDX_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# split -> the Kaggle CSV that holds it (`label,pixel1..pixel784`).
CSV_FILES: dict[str, str] = {"train": "fashion-mnist_train.csv", "test": "fashion-mnist_test.csv"}
CSV_COLUMNS: tuple[str, ...] = ("label", *(f"pixel{i}" for i in range(1, PIXELS + 1)))

_IDX_UBYTE = 0x08
# The largest file the readers accept (the training images are 47 MB): bounds what a
# corrupt header or a gzip bomb can make us allocate.
MAX_FILE_BYTES = 256 * 1024 * 1024


def sha256(data: bytes) -> str:
    """Hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def decompress(data: bytes, name: str) -> bytes:
    """Gunzip `data` if it is gzip, refusing more than `MAX_FILE_BYTES` of output."""
    if data[:2] != b"\x1f\x8b":
        return data
    out = bytearray()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            while chunk := stream.read(1 << 20):
                out += chunk
                if len(out) > MAX_FILE_BYTES:
                    raise DataError(f"{name}: decompresses to more than {MAX_FILE_BYTES} bytes")
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{name}: corrupt or truncated gzip data ({exc})") from None
    return bytes(out)


def parse_idx(data: bytes, name: str, ndim: int) -> np.ndarray:
    """Decode one uncompressed IDX file of unsigned bytes with `ndim` dimensions."""
    if len(data) < 4:
        raise DataError(f"{name}: {len(data)} bytes is too short for an IDX header")
    zero, dtype, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != _IDX_UBYTE:
        raise DataError(
            f"{name}: bad IDX magic number 0x{data[:4].hex()}; expected 0x0000080{ndim} "
            "(unsigned bytes); is it really an IDX file?"
        )
    if dims != ndim:
        raise DataError(f"{name}: has {dims} dimensions; expected {ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated in its header ({len(data)} of {header} bytes)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    declared = int(np.prod(shape, dtype=np.uint64))
    actual = len(data) - header
    if declared != actual:
        what = "truncated" if actual < declared else "longer than declared"
        raise DataError(
            f"{name}: {what}: header declares shape {shape} ({declared} bytes), "
            f"file holds {actual} bytes of data"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def encode_idx(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file (the inverse of `parse_idx`)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, _IDX_UBYTE, array.ndim)
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def check_split(images: np.ndarray, labels: np.ndarray, where: str) -> None:
    """Check shapes, dtype and label range of one split; raise `DataError` naming `where`."""
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(
            f"{where}: images have shape {images.shape}; expected (N, {IMAGE_SIZE}, {IMAGE_SIZE})"
        )
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise DataError(f"{where}: expected uint8 images and labels")
    if labels.shape != (len(images),):
        raise DataError(f"{where}: {len(images)} images but labels have shape {labels.shape}")
    if len(images) == 0:
        raise DataError(f"{where}: holds no examples")
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        raise DataError(
            f"{where}: label {int(labels[bad[0]])} at index {int(bad[0])} is out of range "
            f"0..{NUM_CLASSES - 1} ({bad.size} such labels)"
        )


def parse_idx_split(
    images_data: bytes, labels_data: bytes, split: str
) -> tuple[np.ndarray, np.ndarray]:
    """Decode a split's two IDX files (already decompressed) and check them together."""
    images_name, labels_name = IDX_FILES[split]
    images = parse_idx(images_data, images_name, ndim=3)
    labels = parse_idx(labels_data, labels_name, ndim=1)
    check_split(images, labels, f"{split} split ({images_name}, {labels_name})")
    return images, labels


def read_idx_dir(directory: str | Path) -> tuple[dict[str, Split], dict[str, str]]:
    """Every split from the decompressed IDX files in `directory`, and each file's SHA-256
    (read once: the hashes are the dataset version a package records)."""
    directory = Path(directory)
    splits, digests = {}, {}
    for split, names in IDX_FILES.items():
        blobs = []
        for name in names:
            path = directory / name
            try:
                blobs.append(path.read_bytes())
            except FileNotFoundError:
                raise DataError(f"{path}: missing; run `dvc repro fetch` to get the data") from None
            digests[name] = sha256(blobs[-1])
        splits[split] = parse_idx_split(*blobs, split)
    return splits, dict(sorted(digests.items()))


def parse_csv(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode a Kaggle-style CSV (`label,pixel1..pixel784`) into (images, labels)."""
    if len(data) > MAX_FILE_BYTES:
        raise DataError(f"{name}: larger than {MAX_FILE_BYTES} bytes")
    try:
        # utf-8-sig: a byte-order mark, as spreadsheet tools write, is not part of the header.
        frame = pd.read_csv(io.BytesIO(data), encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{name}: not a readable CSV ({str(exc).strip()})") from None
    columns = tuple(str(c) for c in frame.columns)
    if columns != CSV_COLUMNS:
        wrong = next(
            (
                f"column {i + 1} is '{got}', expected '{want}'"
                for i, (got, want) in enumerate(zip(columns, CSV_COLUMNS))
                if got != want
            ),
            f"it has {len(columns)} columns, expected {len(CSV_COLUMNS)}",
        )
        raise DataError(f"{name}: header is not label,pixel1..pixel{PIXELS}: {wrong}")
    if frame.empty:
        raise DataError(f"{name}: has a header but no rows")
    for column, dtype in frame.dtypes.items():
        if not pd.api.types.is_integer_dtype(dtype):
            cells = frame[column]
            numbers = pd.to_numeric(cells, errors="coerce")
            bad = np.flatnonzero((numbers.isna() | (numbers % 1 != 0)).to_numpy())
            # No such cell: whole numbers spelt as decimals ("3.0"), refused as well.
            row = int(bad[0]) if bad.size else 0
            cell = cells.iloc[row]
            plain = cell.item() if isinstance(cell, np.generic) else cell
            shown = "an empty or NaN cell" if pd.isna(cell) else repr(plain)
            raise DataError(f"{name}: row {row + 1}, column '{column}': {shown} is not an integer")
    values = frame.to_numpy()
    labels, pixels = values[:, 0], values[:, 1:]
    bad = np.argwhere((pixels < 0) | (pixels > 255))
    if bad.size:
        row, col = map(int, bad[0])
        raise DataError(
            f"{name}: row {row + 1}, column '{columns[col + 1]}': pixel {pixels[row, col]} "
            "is outside 0..255"
        )
    bad_labels = np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))
    if bad_labels.size:
        row = int(bad_labels[0])
        raise DataError(
            f"{name}: row {row + 1}: label {labels[row]} is out of range 0..{NUM_CLASSES - 1}"
        )
    images = pixels.astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    return images, labels.astype(np.uint8)


def encode_csv(images: np.ndarray, labels: np.ndarray) -> bytes:
    """Encode (images, labels) as a Kaggle-style CSV (the inverse of `parse_csv`)."""
    rows = np.concatenate([labels.reshape(-1, 1), images.reshape(len(images), -1)], axis=1)
    frame = pd.DataFrame(rows.astype(np.int64), columns=list(CSV_COLUMNS))
    return frame.to_csv(index=False).encode()


def encode_npz(images: np.ndarray, labels: np.ndarray) -> bytes:
    """A split as `.npz` bytes that depend only on the arrays."""
    return npz_bytes({"images": images, "labels": labels})


def npz_bytes(arrays: dict[str, np.ndarray], compress: bool = False) -> bytes:
    """Arrays as `.npz` bytes that depend only on the arrays.

    `np.savez` stamps the current time into the zip, which would give the same data a new
    DVC hash on every run; this writes a fixed one instead (`atomic.zip_entry`).
    """
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        for key, array in arrays.items():
            entry = atomic.zip_entry(f"{key}.npy")
            entry.compress_type = method
            with archive.open(entry, "w", force_zip64=True) as stream:
                np.lib.format.write_array(stream, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def load_split(path: str | Path) -> Split:
    """Read a split written by this stage, checking it is what the stage writes."""
    try:
        with np.load(path, allow_pickle=False) as data:
            images, labels = data["images"], data["labels"]
    except FileNotFoundError:
        raise DataError(f"{path}: missing; run `dvc repro prepare`") from None
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a prepared split ({exc}); run `dvc repro prepare`") from None
    check_split(images, labels, str(path))
    return images, labels


def version_summary(record: dict) -> str:
    """A dataset version's record (`fmnist.dataset_versions.describe`) in one line, e.g.
    `custom, against canonical Fashion-MNIST: train 60,200 examples (+200 added,
    50 relabelled), test 10,000 examples (unchanged)`."""
    if record.get("canonical"):
        return "canonical Fashion-MNIST"
    return f"custom, against canonical Fashion-MNIST: {split_changes(record)}"


def split_changes(record: dict) -> str:
    """Per split of a dataset record: its examples and what was added, removed, relabelled."""
    parts = []
    for split in IDX_FILES:
        counts = record.get(split)
        if not counts:
            continue
        moved = [
            f"{sign}{counts[key]:,} {key}"
            for key, sign in (("added", "+"), ("removed", "-"), ("relabelled", ""))
            if counts[key]
        ]
        parts.append(f"{split} {counts['examples']:,} examples ({', '.join(moved) or 'unchanged'})")
    return ", ".join(parts)
