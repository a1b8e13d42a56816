"""The prepare stage: validation, the seeded stratified split, statistics and outputs."""

from __future__ import annotations

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


def test_main_writes_arrays_manifest_stats_and_samples(tmp_path, tiny_data):
    raw = helpers.write_idx_dir(tmp_path / "raw", tiny_data, gz=False)
    params_file = tmp_path / "params.yaml"
    params_file.write_text((helpers.ROOT / "params.yaml").read_text())
    out, stats, samples = (
        tmp_path / "prepared",
        tmp_path / "m" / "data.json",
        tmp_path / "m" / "s.png",
    )
    args = [
        "--params",
        str(params_file),
        "--raw",
        str(raw),
        "--out",
        str(out),
        "--stats",
        str(stats),
        "--samples",
        str(samples),
    ]
    assert prepare.main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "test.npz",
        "train.npz",
        "val.npz",
    ]
    images, labels = load_split(out / "test.npz")
    assert np.array_equal(labels, tiny_data["test"][1])
    assert samples.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert prepare.main(args) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first  # same input, same bytes


def test_main_on_bad_raw_data_writes_nothing(tmp_path, tiny_data, capsys):
    raw = helpers.write_idx_dir(tmp_path / "raw", tiny_data, gz=False)
    (raw / "train-images-idx3-ubyte").write_bytes(
        (raw / "train-images-idx3-ubyte").read_bytes()[:-5]
    )
    out = tmp_path / "prepared"
    assert (
        prepare.main(
            [
                "--params",
                str(helpers.ROOT / "params.yaml"),
                "--raw",
                str(raw),
                "--out",
                str(out),
                "--stats",
                str(tmp_path / "d.json"),
                "--samples",
                str(tmp_path / "s.png"),
            ]
        )
        == 1
    )
    assert "train-images-idx3-ubyte: truncated" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "d.json").exists()
