"""Dataset versions: one canonical form, the canonical reference, and how versions differ."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest
import yaml

import helpers
from fmnist import dataset
from fmnist import dataset_versions as versions
from helpers import ROOT, dvc, git


def test_canonical_form_depends_on_the_examples_not_their_order(tiny_data):
    files = versions.canonical_files(tiny_data)
    assert versions.canonical_files(helpers.shuffled(tiny_data)) == files
    images, labels = tiny_data["train"]
    changed = labels.copy()
    changed[0] = (changed[0] + 1) % 10
    edited = versions.canonical_files({**tiny_data, "train": (images, changed)})
    # A relabelled image keeps its place: only the labels file changes.
    assert [n for n in files if files[n] != edited[n]] == ["train-labels-idx1-ubyte"]
    # The classes stay interleaved (digest order), not sorted by label.
    canonical_labels = dataset.parse_idx(files["train-labels-idx1-ubyte"], "labels", ndim=1)
    assert len(set(canonical_labels[:20].tolist())) > 5


def test_compare_counts_added_removed_and_relabelled_examples(tiny_data):
    images, labels = tiny_data["train"]
    reference = np.load(io.BytesIO(versions.reference_of(tiny_data)))
    ref = (reference["train_digests"], reference["train_labels"])
    assert versions.compare(images, labels, ref) == versions.SplitChanges(300, 0, 0, 0)

    new_labels = labels.copy()
    new_labels[:4] = (new_labels[:4] + 1) % 10  # 4 relabelled
    new_images = np.concatenate([images[10:], images[:2]])  # 10 removed, 2 of them back
    new_labels = np.concatenate([new_labels[10:], new_labels[:2]])
    extra = helpers.synthetic_split(1, seed=5)[0][:3]  # 3 new images
    new_images = np.concatenate([new_images, extra, images[20:21]])  # and 1 duplicate
    new_labels = np.concatenate([new_labels, [0, 1, 2], labels[20:21]])
    assert versions.compare(new_images, new_labels, ref) == versions.SplitChanges(
        examples=296, added=4, removed=8, relabelled=2
    )


def test_the_canonical_reference_is_fashion_mnist(tiny_data):
    # Checked against the canonical checksums without the data: the labels it holds, in
    # canonical order, are the canonical labels files.
    reference = versions.canonical_reference()
    for split, (_, labels_name) in dataset.IDX_FILES.items():
        digests, labels = reference[split]
        assert dataset.sha256(dataset.encode_idx(labels)) == versions.CANONICAL_SHA256[labels_name]
        assert len(digests) == len(labels) == {"train": 60_000, "test": 10_000}[split]
        assert np.all(digests[1:] >= digests[:-1])  # canonical order
        assert np.all(np.bincount(labels) == len(labels) // 10)
    record = versions.describe(tiny_data, {})
    assert record["train"] == {"examples": 300, "added": 300, "removed": 60_000, "relabelled": 0}
    assert not record["canonical"]


def test_summary_names_the_version_in_one_line():
    assert dataset.version_summary({"canonical": True}) == "canonical Fashion-MNIST"
    record = {
        "canonical": False,
        "train": {"examples": 60_200, "added": 200, "removed": 0, "relabelled": 50},
        "test": {"examples": 10_000, "added": 0, "removed": 0, "relabelled": 0},
    }
    assert dataset.version_summary(record) == (
        "custom, against canonical Fashion-MNIST: train 60,200 examples (+200 added, "
        "50 relabelled), test 10,000 examples (unchanged)"
    )


# --- end to end, with real `dvc` on the tiny data ------------------------------------------


@pytest.mark.slow
def test_the_same_examples_from_any_source_give_the_same_data_raw_hash(idx_source):
    # benchmarks/dataset_version.py runs `dvc repro fetch` on the IDX files and on the Kaggle
    # CSV pair of the same examples (rows shuffled, CRLF; plain and gzipped).
    script = ROOT / "benchmarks" / "dataset_version.py"
    cmd = [sys.executable, str(script), "--data", str(idx_source), "--dataset", "custom"]
    proc = helpers.run(cmd, cwd=ROOT, env={"PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'benchmarks'}"})
    rows = [line.split(" | ") for line in proc.stdout.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 3
    hashes = {row[1] for row in rows}
    assert len(hashes) == 1 and hashes.pop().endswith(".dir")
    assert proc.stdout.splitlines()[-1] == "equal"


@pytest.mark.slow
def test_a_new_dataset_version_shows_in_metrics_lineage_and_the_report(tiny_repo, tmp_path):
    dvc("repro", "prepare", cwd=tiny_repo)
    git("add", "-A", cwd=tiny_repo)
    git("commit", "-qm", "version 1", cwd=tiny_repo)
    v1 = yaml.safe_load((tiny_repo / "dvc.lock").read_text())["stages"]["fetch"]["outs"][0]

    # Version 2: the same examples, 3 labels corrected, 5 images added, as a Kaggle CSV pair.
    data = helpers.synthetic_dataset()
    images, labels = data["train"]
    labels = labels.copy()
    labels[:3] = (labels[:3] + 1) % 10
    extra_images, extra_labels = helpers.synthetic_split(1, seed=11)
    version = {
        **data,
        "train": (
            np.concatenate([images, extra_images[:5]]),
            np.concatenate([labels, extra_labels[:5]]),
        ),
    }
    source = helpers.write_csv_dir(tmp_path / "v2", version)
    helpers.set_params(tiny_repo / "params.yaml", {"fetch.source_dir": str(source)})
    out = dvc("repro", "prepare", cwd=tiny_repo).stdout
    assert "fetch: 305 train + 100 test examples" in out
    v2 = yaml.safe_load((tiny_repo / "dvc.lock").read_text())["stages"]["fetch"]["outs"][0]
    assert v2["md5"] != v1["md5"]  # a new dataset version, a new hash

    diff = json.loads(dvc("metrics", "diff", "--json", cwd=tiny_repo).stdout)
    # Against canonical Fashion-MNIST, in which no synthetic image is: all added.
    assert diff["metrics/dataset.json"]["train.examples"] == {"old": 300, "new": 305, "diff": 5}
    assert diff["metrics/dataset.json"]["train.added"] == {"old": 300, "new": 305, "diff": 5}
    assert "test.added" not in diff["metrics/dataset.json"]  # unchanged split: not shown

    git("add", "-A", cwd=tiny_repo)
    git("commit", "-qm", "version 2", cwd=tiny_repo)
    fmnist = [sys.executable, "-m", "fmnist.cli"]
    lineage = helpers.run([*fmnist, "lineage", "--json"], cwd=tiny_repo).stdout
    record = json.loads(lineage)
    assert record["data"]["data/raw"] == v2["md5"]
    assert record["dataset"]["train"]["examples"] == 305
    assert record["params"]["fetch.dataset"] == "custom"
    assert record["params"]["fetch.source_dir"] == str(source)
    text = helpers.run([*fmnist, "lineage"], cwd=tiny_repo).stdout
    assert "dataset  custom, against canonical Fashion-MNIST: train 305 examples" in text

    helpers.run([*fmnist, "report", "--base", "HEAD~1", "--rev", "HEAD"], cwd=tiny_repo)
    report = (tiny_repo / "report.md").read_text()
    assert "train 300 examples (+300 added, -60,000 removed)" in report
    assert "train 305 examples (+305 added, -60,000 removed)" in report
    assert f"`{v1['md5']}` | `{v2['md5']}` | **changed** |" in report
