"""The fetch stage: source order, the formats it accepts, checksums, and errors that help."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib

import numpy as np
import pytest

import helpers
from fmnist import dataset
from fmnist.errors import DataError
from fmnist.params import FetchParams
from fmnist.stages import fetch

OFFLINE = FetchParams(system_dir="", base_url="", verify_checksums=False)


def test_sources_in_documented_order():
    params = FetchParams(source_dir="/mine", system_dir="/sys", base_url="http://x/")
    found = fetch.sources(params, {fetch.ENV_DATA_DIR: "/env"})
    assert [(s.origin, s.location) for s in found] == [
        ("fetch.source_dir", "/mine"),
        ("$FMNIST_DATA_DIR", "/env"),
        ("fetch.system_dir", "/sys"),
        ("fetch.base_url", "http://x/"),
    ]


@pytest.mark.parametrize("writer", ["idx_gz", "idx_plain", "csv"])
def test_every_source_format_gives_the_same_files(tmp_path, tiny_data, writer):
    source = tmp_path / writer
    if writer == "csv":
        helpers.write_csv_dir(source, tiny_data)
    else:
        helpers.write_idx_dir(source, tiny_data, gz=(writer == "idx_gz"))
    files, found = fetch.fetch(dataclasses.replace(OFFLINE, source_dir=str(source)), {})
    assert found.location == str(source)
    for split, (images_name, labels_name) in dataset.IDX_FILES.items():
        images, labels = tiny_data[split]
        assert files[images_name] == dataset.encode_idx(images)
        assert files[labels_name] == dataset.encode_idx(labels)


def test_missing_sources_are_skipped_in_order(tmp_path, idx_source):
    params = dataclasses.replace(OFFLINE, source_dir=str(tmp_path / "nope"))
    _, found = fetch.fetch(params, {fetch.ENV_DATA_DIR: str(idx_source)})
    assert found.origin == "$FMNIST_DATA_DIR"


def test_no_source_lists_every_place_tried_and_how_to_get_data(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    params = FetchParams(
        source_dir=str(empty),
        system_dir=str(tmp_path / "absent"),
        base_url="http://127.0.0.1:9/",
        timeout_s=2,
    )
    with pytest.raises(DataError) as info:
        fetch.fetch(params, {})
    text = str(info.value)
    assert f"fetch.source_dir: {empty}" in text and "holds neither the IDX files" in text
    assert f"no such directory {tmp_path / 'absent'}" in text
    assert "cannot download http://127.0.0.1:9/train-images-idx3-ubyte.gz" in text
    assert "apt-get install dataset-fashion-mnist" in text


def test_a_corrupt_file_stops_the_stage_instead_of_falling_through(tmp_path, idx_source):
    target = idx_source / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:-20])
    good = helpers.write_idx_dir(tmp_path / "good", helpers.synthetic_dataset())
    params = dataclasses.replace(OFFLINE, source_dir=str(idx_source))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: corrupt or truncated gzip"):
        fetch.fetch(params, {fetch.ENV_DATA_DIR: str(good)})


def test_incomplete_idx_set_is_named(idx_source):
    (idx_source / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="not train-labels-idx1-ubyte"):
        fetch.fetch(dataclasses.replace(OFFLINE, source_dir=str(idx_source)), {})


def test_checksum_mismatch_is_an_error(idx_source):
    params = FetchParams(
        source_dir=str(idx_source), system_dir="", base_url="", verify_checksums=True
    )
    with pytest.raises(DataError, match="SHA-256 of its decompressed content .* not the canonical"):
        fetch.fetch(params, {})


def test_checksums_are_of_decompressed_content(monkeypatch, tiny_data):
    files = {name: b"" for pair in dataset.IDX_FILES.values() for name in pair}
    for split, (images_name, labels_name) in dataset.IDX_FILES.items():
        files[images_name] = dataset.encode_idx(tiny_data[split][0])
        files[labels_name] = dataset.encode_idx(tiny_data[split][1])
    canonical = {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}
    monkeypatch.setattr(fetch, "CANONICAL_SHA256", canonical)
    fetch.verify(files, "idx")  # passes: same content, whatever gzip made the .gz
    assert gzip.compress(files["t10k-labels-idx1-ubyte"], compresslevel=1) != gzip.compress(
        files["t10k-labels-idx1-ubyte"], compresslevel=9
    )


def test_csv_source_is_verified_independently_of_row_order(monkeypatch, tmp_path, tiny_data):
    shuffled = {}
    for split, (images, labels) in tiny_data.items():
        order = np.random.default_rng(3).permutation(len(labels))
        shuffled[split] = (images[order], labels[order])
    digests = {s: dataset.content_digest(*tiny_data[s]) for s in tiny_data}
    monkeypatch.setattr(fetch, "CANONICAL_CONTENT_DIGEST", digests)
    source = helpers.write_csv_dir(tmp_path / "csv", shuffled)
    params = FetchParams(source_dir=str(source), system_dir="", base_url="", verify_checksums=True)
    fetch.fetch(params, {})
    edited = {**shuffled, "test": (shuffled["test"][0], (shuffled["test"][1] + 1) % 10)}
    helpers.write_csv_dir(source, edited)
    with pytest.raises(DataError, match="fashion-mnist_test.csv: its examples differ"):
        fetch.fetch(params, {})


def test_main_writes_raw_dir_and_nothing_on_failure(tmp_path, idx_source, capsys):
    params_file = tmp_path / "params.yaml"
    params_file.write_text((helpers.ROOT / "params.yaml").read_text())
    helpers.set_params(
        params_file,
        {
            "fetch.source_dir": str(idx_source),
            "fetch.system_dir": "",
            "fetch.base_url": "",
            "fetch.verify_checksums": False,
        },
    )
    out = tmp_path / "data" / "raw"
    assert fetch.main(["--params", str(params_file), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(fetch._all_idx_names())

    helpers.set_params(params_file, {"fetch.source_dir": str(tmp_path / "gone")})
    fresh = tmp_path / "fresh" / "raw"
    assert fetch.main(["--params", str(params_file), "--out", str(fresh)]) == 1
    assert "Fashion-MNIST was not found" in capsys.readouterr().err
    assert not fresh.parent.exists()  # not even a temporary directory was left behind
