"""The fetch stage: source order, the formats it accepts, one canonical form, checksums, and
dataset versions of your own."""

from __future__ import annotations

import dataclasses
import gzip

import numpy as np
import pytest

import helpers
from fmnist import dataset
from fmnist import dataset_versions as versions
from fmnist.errors import DataError, ParamsError
from fmnist.params import FetchParams
from fmnist.stages import fetch

OFFLINE = FetchParams(system_dir="", base_url="")


@pytest.fixture
def canonical(monkeypatch, tiny_data):
    """The tiny dataset stands for the canonical one in this test."""
    helpers.use_as_canonical(monkeypatch, tiny_data)
    return tiny_data


def relabelled(data: dict, split: str, count: int) -> dict:
    """`data` with the first `count` labels of `split` moved to the next class."""
    images, labels = data[split]
    labels = labels.copy()
    labels[:count] = (labels[:count] + 1) % dataset.NUM_CLASSES
    return {**data, split: (images, labels)}


def test_sources_in_documented_order():
    params = FetchParams(source_dir="/mine", system_dir="/sys", base_url="http://x/")
    found = fetch.sources(params, {fetch.ENV_DATA_DIR: "/env"})
    assert [(s.origin, s.location) for s in found] == [
        ("fetch.source_dir", "/mine"),
        ("$FMNIST_DATA_DIR", "/env"),
        ("fetch.system_dir", "/sys"),
        ("fetch.base_url", "http://x/"),
    ]


def test_a_custom_dataset_comes_from_source_dir_only():
    params = FetchParams(dataset="custom", source_dir="/mine", system_dir="/sys")
    found = fetch.sources(params, {fetch.ENV_DATA_DIR: "/env"})
    assert [(s.origin, s.location) for s in found] == [("fetch.source_dir", "/mine")]
    with pytest.raises(ParamsError, match="fetch.dataset is custom: set fetch.source_dir"):
        FetchParams(dataset="custom")


def write_source(kind: str, directory, data: dict):
    """`data` in one of the forms a source may hold it."""
    if kind == "idx_gz":
        return helpers.write_idx_dir(directory, data)
    if kind == "idx_plain_shuffled":
        return helpers.write_idx_dir(directory, helpers.shuffled(data), gz=False)
    if kind == "csv":
        return helpers.write_csv_dir(directory, data)
    directory.mkdir()
    rng_data = helpers.shuffled(data, seed=7)
    for split, name in dataset.CSV_FILES.items():
        text = dataset.encode_csv(*rng_data[split]).replace(b"\n", b"\r\n")
        if kind == "csv_shuffled_crlf":
            (directory / name).write_bytes(text)
        elif kind == "csv_shuffled_crlf_bom_gz":
            (directory / f"{name}.gz").write_bytes(gzip.compress(b"\xef\xbb\xbf" + text))
    return directory


SOURCE_KINDS = [
    "idx_gz",
    "idx_plain_shuffled",
    "csv",
    "csv_shuffled_crlf",
    "csv_shuffled_crlf_bom_gz",
]


@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_every_source_form_gives_the_same_canonical_files(tmp_path, canonical, kind):
    source = write_source(kind, tmp_path / kind, canonical)
    got = fetch.fetch(dataclasses.replace(OFFLINE, source_dir=str(source)), {})
    assert got.source.location == str(source)
    assert got.files == versions.canonical_files(canonical)
    assert got.record["canonical"]  # verified, whatever order and encoding it came in
    assert got.files != {  # canonical form is not simply the order it came in
        name: dataset.encode_idx(array)
        for split, names in dataset.IDX_FILES.items()
        for name, array in zip(names, canonical[split])
    }


def test_missing_sources_are_skipped_in_order(tmp_path, canonical, idx_source):
    params = dataclasses.replace(OFFLINE, source_dir=str(tmp_path / "nope"))
    got = fetch.fetch(params, {fetch.ENV_DATA_DIR: str(idx_source)})
    assert got.source.origin == "$FMNIST_DATA_DIR"


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


def test_a_corrupt_file_stops_the_stage_instead_of_falling_through(tmp_path, canonical, idx_source):
    target = idx_source / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:-20])
    good = helpers.write_idx_dir(tmp_path / "good", canonical)
    params = dataclasses.replace(OFFLINE, source_dir=str(idx_source))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: corrupt or truncated gzip"):
        fetch.fetch(params, {fetch.ENV_DATA_DIR: str(good)})


def test_incomplete_idx_set_is_named(idx_source):
    (idx_source / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="not train-labels-idx1-ubyte"):
        fetch.fetch(dataclasses.replace(OFFLINE, source_dir=str(idx_source)), {})


def test_other_data_is_not_taken_for_the_canonical_dataset(tmp_path, idx_source):
    # The tiny dataset is not Fashion-MNIST: the real checksums refuse it.
    params = dataclasses.replace(OFFLINE, source_dir=str(idx_source))
    with pytest.raises(DataError) as info:
        fetch.fetch(params, {})
    text = str(info.value)
    assert text.startswith(f"fetch.source_dir: {idx_source}: not the canonical Fashion-MNIST")
    assert "train 300 examples (+300 added, -60,000 removed)" in text
    assert "set fetch.dataset: custom" in text


def test_an_edited_canonical_dataset_names_what_changed(tmp_path, canonical):
    edited = relabelled(canonical, "train", 3)
    source = helpers.write_csv_dir(tmp_path / "csv", helpers.shuffled(edited))
    with pytest.raises(DataError) as info:
        fetch.fetch(dataclasses.replace(OFFLINE, source_dir=str(source)), {})
    text = str(info.value)
    assert "train 300 examples (3 relabelled), test 100 examples (unchanged)" in text
    # Only the labels changed: the images file in canonical form is still the canonical one.
    assert "SHA-256 of train-labels-idx1-ubyte in canonical form differs" in text


def test_a_custom_dataset_records_how_it_differs(tmp_path, canonical):
    images, labels = relabelled(canonical, "train", 3)["train"]
    extra_images, extra_labels = helpers.synthetic_split(1, seed=9)  # 10 new images
    version = {
        "train": (np.concatenate([images, extra_images]), np.concatenate([labels, extra_labels])),
        "test": (canonical["test"][0][5:], canonical["test"][1][5:]),  # 5 removed
    }
    source = helpers.write_idx_dir(tmp_path / "v2", version)
    params = FetchParams(dataset="custom", source_dir=str(source), system_dir="", base_url="")
    got = fetch.fetch(params, {})
    assert got.record == {
        "canonical": False,
        "train": {"examples": 310, "added": 10, "removed": 0, "relabelled": 3},
        "test": {"examples": 95, "added": 0, "removed": 5, "relabelled": 0},
    }
    assert got.files == versions.canonical_files(version)
    line = fetch.report_line(got, "custom")
    assert line == (
        f"fetch: 310 train + 95 test examples from fetch.source_dir: {source} (custom, against "
        "canonical Fashion-MNIST: train 310 examples (+10 added, 3 relabelled), "
        "test 95 examples (-5 removed))"
    )


def test_a_custom_dataset_that_is_canonical_says_so(canonical, idx_source):
    params = FetchParams(dataset="custom", source_dir=str(idx_source), system_dir="", base_url="")
    got = fetch.fetch(params, {})
    assert got.record["canonical"]
    assert "identical to the canonical Fashion-MNIST" in fetch.report_line(got, "custom")


def test_a_missing_custom_dataset_is_an_error_not_a_fallback(tmp_path, canonical, idx_source):
    params = FetchParams(dataset="custom", source_dir=str(tmp_path / "gone"))
    with pytest.raises(DataError, match="fetch.dataset is custom, so the data comes from"):
        fetch.fetch(params, {fetch.ENV_DATA_DIR: str(idx_source)})


def test_main_writes_raw_dir_and_nothing_on_failure(tmp_path, idx_source, capsys):
    params_file = tmp_path / "params.yaml"
    params_file.write_text((helpers.ROOT / "params.yaml").read_text())
    helpers.set_params(
        params_file,
        {
            "fetch.dataset": "custom",
            "fetch.source_dir": str(idx_source),
            "fetch.system_dir": "",
            "fetch.base_url": "",
        },
    )
    out = tmp_path / "data" / "raw"
    record = ["--provenance", str(tmp_path / "provenance.json")]  # not the project's own
    assert fetch.main(["--params", str(params_file), "--out", str(out), *record]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(fetch._all_idx_names())
    assert "custom, against canonical Fashion-MNIST" in capsys.readouterr().out

    helpers.set_params(params_file, {"fetch.source_dir": str(tmp_path / "gone")})
    fresh = tmp_path / "fresh" / "raw"
    assert fetch.main(["--params", str(params_file), "--out", str(fresh), *record]) == 1
    assert "fetch.dataset is custom, so the data comes from" in capsys.readouterr().err
    assert not fresh.parent.exists()  # not even a temporary directory was left behind
