"""The prepare stage: validation, the seeded stratified split, statistics and outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

import helpers
from fmnist.dataset import NUM_CLASSES, load_split
from fmnist.errors import DataError
from fmnist.params import PrepareParams
from fmnist.stages import prepare


def test_split_is_stratified_seeded_and_matches_the_notebook(tiny_data):
    images, labels = tiny_data["train"]
    (x_tr, y_tr), (x_val, y_val) = prepare.split_train_val(images, labels, 0.1, 42)
    _, nb_val, _, nb_y_val = train_test_split(
        images, labels, test_size=0.1, random_state=42, stratify=labels
    )
    assert np.array_equal(x_val, nb_val) and np.array_equal(y_val, nb_y_val)
    assert len(y_val) == 30 and np.all(np.bincount(y_val, minlength=NUM_CLASSES) == 3)
    assert len(y_tr) + len(y_val) == len(labels)
    (_, _), (other_val, _) = prepare.split_train_val(images, labels, 0.1, 7)
    assert not np.array_equal(other_val, x_val)


def test_duplicates_between_train_and_test_are_refused(tiny_data):
    train, test = tiny_data["train"], tiny_data["test"]
    leaked = (test[0].copy(), test[1])
    leaked[0][4] = train[0][17]
    assert list(prepare.find_duplicates(train[0], leaked[0])) == [4]
    with pytest.raises(
        DataError, match="1 test images also appear in the training set .*test index 4"
    ):
        prepare.prepare(train, leaked, PrepareParams())


def test_missing_class_and_imbalance_are_refused(tiny_data):
    images, labels = tiny_data["train"]
    keep = labels != 6
    with pytest.raises(DataError, match="train split: no examples of Shirt"):
        prepare.prepare((images[keep], labels[keep]), tiny_data["test"], PrepareParams())
    keep = (labels != 2) | (np.cumsum(labels == 2) <= 10)
    with pytest.raises(
        DataError, match="imbalanced .* ratio 3.00 > prepare.max_class_imbalance 1.5"
    ):
        prepare.prepare((images[keep], labels[keep]), tiny_data["test"], PrepareParams())


def test_statistics_count_every_class_per_split(tiny_data):
    splits = prepare.prepare(tiny_data["train"], tiny_data["test"], PrepareParams())
    stats = prepare.statistics(splits)
    assert stats["train"]["examples"] == 270 and stats["val"]["examples"] == 30
    assert stats["test"]["per_class"]["Ankle boot"] == 10


def main_args(tmp_path, raw) -> list[str]:
    """prepare's arguments, every output under `tmp_path`."""
    return [
        *("--params", str(helpers.ROOT / "params.yaml"), "--raw", str(raw)),
        *("--out", str(tmp_path / "prepared"), "--stats", str(tmp_path / "m" / "data.json")),
        *("--dataset", str(tmp_path / "m" / "dataset.json")),
        *("--samples", str(tmp_path / "m" / "s.png")),
        *("--provenance", str(tmp_path / "m" / "provenance.json")),
    ]


def test_main_writes_arrays_manifest_stats_and_samples(tmp_path, tiny_data):
    raw = helpers.write_raw_dir(tmp_path / "raw", tiny_data)
    out, samples = tmp_path / "prepared", tmp_path / "m" / "s.png"
    args = main_args(tmp_path, raw)
    assert prepare.main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "test.npz",
        "train.npz",
        "val.npz",
    ]
    images, labels = load_split(out / "test.npz")
    assert np.array_equal(np.sort(labels), np.sort(tiny_data["test"][1]))
    assert samples.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert prepare.main(args) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first  # same input, same bytes


def test_main_on_bad_raw_data_writes_nothing(tmp_path, tiny_data, capsys):
    raw = helpers.write_raw_dir(tmp_path / "raw", tiny_data)
    (raw / "train-images-idx3-ubyte").write_bytes(
        (raw / "train-images-idx3-ubyte").read_bytes()[:-5]
    )
    assert prepare.main(main_args(tmp_path, raw)) == 1
    assert "train-images-idx3-ubyte: truncated" in capsys.readouterr().err
    assert not (tmp_path / "prepared").exists() and not (tmp_path / "m").exists()


def test_the_dataset_metric_says_how_the_version_differs(tmp_path, monkeypatch, tiny_data):
    helpers.use_as_canonical(monkeypatch, tiny_data)
    raw = helpers.write_raw_dir(tmp_path / "raw", tiny_data)
    assert prepare.main(main_args(tmp_path, raw)) == 0
    unchanged = {"added": 0, "removed": 0, "relabelled": 0}
    assert json.loads((tmp_path / "m" / "dataset.json").read_text()) == {
        "canonical": True,
        "train": {"examples": 300, **unchanged},
        "test": {"examples": 100, **unchanged},
    }

    images, labels = tiny_data["test"]
    labels = labels.copy()
    labels[:2] = (labels[:2] + 1) % NUM_CLASSES
    raw = helpers.write_raw_dir(tmp_path / "raw2", {**tiny_data, "test": (images, labels)})
    assert prepare.main(main_args(tmp_path, raw)) == 0
    record = json.loads((tmp_path / "m" / "dataset.json").read_text())
    assert not record["canonical"]
    assert record["test"] == {"examples": 100, "added": 0, "removed": 0, "relabelled": 2}
    manifest = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    assert manifest["dataset"] == record  # what a package records of its data


def test_raw_data_not_in_canonical_form_is_refused(tmp_path, tiny_data, capsys):
    raw = helpers.write_idx_dir(tmp_path / "raw", tiny_data, gz=False)  # the order it came in
    assert prepare.main(main_args(tmp_path, raw)) == 1
    err = capsys.readouterr().err
    assert "is not in the canonical order `fetch` writes" in err and "dvc repro fetch" in err
    assert not (tmp_path / "prepared").exists()
