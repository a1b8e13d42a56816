"""The IDX and CSV readers: exact round trips, and a clear error for every kind of damage."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from fmnist import dataset
from fmnist.errors import DataError


def test_idx_round_trip(tiny_data):
    images, labels = tiny_data["train"]
    assert np.array_equal(dataset.parse_idx(dataset.encode_idx(images), "x", ndim=3), images)
    assert np.array_equal(dataset.parse_idx(dataset.encode_idx(labels), "y", ndim=1), labels)


def test_idx_header_layout():
    blob = dataset.encode_idx(np.zeros((2, 28, 28), np.uint8))
    assert blob[:4] == bytes([0, 0, 8, 3])
    assert int.from_bytes(blob[4:8], "big") == 2
    assert len(blob) == 16 + 2 * 784


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda b: b[:-1], "truncated: header declares shape"),
        (lambda b: b + b"\0", "longer than declared"),
        (lambda b: b"\x01" + b[1:], "bad IDX magic number"),
        (lambda b: b[:2] + b"\x0d" + b[3:], "bad IDX magic number"),
        (lambda b: b[:3] + b"\x02" + b[4:], "has 2 dimensions; expected 3"),
        (lambda b: b[:10], "truncated in its header"),
        (lambda b: b[:2], "too short for an IDX header"),
        (lambda b: b"", "too short"),
        # A header declaring ~4 billion images must fail on size, not try to allocate them.
        (lambda b: b[:4] + (2**32 - 1).to_bytes(4, "big") + b[8:], "truncated: header declares"),
    ],
)
def test_damaged_idx_is_refused_with_the_reason(mangle, message):
    blob = dataset.encode_idx(np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match=message):
        dataset.parse_idx(mangle(blob), "images.idx", ndim=3)


def test_decompress_passes_plain_data_and_refuses_broken_gzip():
    assert dataset.decompress(b"plain", "f") == b"plain"
    assert dataset.decompress(gzip.compress(b"abc"), "f") == b"abc"
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        dataset.decompress(gzip.compress(b"abc" * 1000)[:-12], "f.gz")


def test_decompress_bounds_the_output(monkeypatch):
    monkeypatch.setattr(dataset, "MAX_FILE_BYTES", 1000)
    with pytest.raises(DataError, match="decompresses to more than 1000 bytes"):
        dataset.decompress(gzip.compress(b"\0" * 5000), "bomb.gz")


def test_split_checks_label_range_and_lengths(tiny_data):
    images, labels = tiny_data["test"]
    bad = labels.copy()
    bad[3] = 10
    with pytest.raises(DataError, match="label 10 at index 3 is out of range 0..9"):
        dataset.check_split(images, bad, "test")
    with pytest.raises(DataError, match="labels have shape"):
        dataset.check_split(images, labels[:-1], "test")
    with pytest.raises(DataError, match=r"expected \(N, 28, 28\)"):
        dataset.check_split(images[:, :20], labels, "test")


def test_csv_round_trip(tiny_data):
    images, labels = tiny_data["test"]
    back_images, back_labels = dataset.parse_csv(dataset.encode_csv(images, labels), "t.csv")
    assert np.array_equal(back_images, images) and np.array_equal(back_labels, labels)


def _csv(rows: list[str]) -> bytes:
    return ("\n".join([",".join(dataset.CSV_COLUMNS), *rows]) + "\n").encode()


def _row(label="3", pixel="0") -> str:
    return ",".join([label] + [pixel] * dataset.PIXELS)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_csv([_row(label="10")]), "row 1: label 10 is out of range 0..9"),
        (_csv([_row(), _row(label="-1")]), "row 2: label -1 is out of range"),
        (_csv([_row(pixel="256")]), "pixel 256 is outside 0..255"),
        (_csv([_row(), _row(pixel="x")]), "row 2, column 'pixel1': 'x' is not an integer"),
        (_csv([_row(pixel="")]), "row 1, column 'pixel1'.* is not an integer"),
        (_csv([_row(pixel="1.5")]), "is not an integer"),
        (_csv([]), "has a header but no rows"),
        (b"", "not a readable CSV"),
        (
            _csv([_row()]).replace(b"pixel7,", b"pixel7x,", 1),
            "column 8 is 'pixel7x', expected 'pixel7'",
        ),
        (b"label,pixel1\n3,0\n", "it has 2 columns, expected 785"),
    ],
)
def test_bad_csv_is_refused_with_the_reason(data, message):
    with pytest.raises(DataError, match=message):
        dataset.parse_csv(data, "train.csv")


def test_npz_bytes_depend_only_on_the_arrays(tiny_data, tmp_path):
    images, labels = tiny_data["test"]
    first = dataset.encode_npz(images, labels)
    assert dataset.encode_npz(images, labels) == first
    path = tmp_path / "test.npz"
    path.write_bytes(first)
    back_images, back_labels = dataset.load_split(path)
    assert np.array_equal(back_images, images) and np.array_equal(back_labels, labels)


def test_load_split_names_missing_and_foreign_files(tmp_path):
    with pytest.raises(DataError, match="missing; run `dvc repro prepare`"):
        dataset.load_split(tmp_path / "absent.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a prepared split"):
        dataset.load_split(junk)
