"""Dataset versions: one canonical form, the canonical reference, and how versions differ."""

from __future__ import annotations

import io

import numpy as np

import helpers
from fmnist import dataset
from fmnist import dataset_versions as versions


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
