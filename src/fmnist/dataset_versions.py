"""Dataset versions: one canonical form for every version, the canonical Fashion-MNIST's
checksums and reference, and how a version differs from it.

`fetch` writes every dataset version in one canonical form: per split, the examples sorted by
a digest of their pixels (then by label), as uncompressed IDX. The order depends on the
examples alone, so the same examples give the same bytes, hence the same DVC hash, from any
source, row order, line ending or compression. A digest order rather than (label, pixels):
the classes stay interleaved as in the official files, so what takes the first images of a
split (evaluate.feature_map_image, the predictions file) sees every class; and a relabelled
image keeps its place, so a version that only corrects labels changes only the labels files.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmnist.dataset import IDX_FILES, NUM_CLASSES, PIXELS, Split, encode_idx, npz_bytes

# SHA-256 of each IDX file in canonical form (`canonical_files`): examples in canonical order,
# uncompressed. Equal for the same examples whichever source, row order, line ending or
# compression they came in, so this is the one checksum of the canonical dataset.
CANONICAL_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "3cc80f009b23664be9073083e4b6248badf1d8294e26bc90fb74df9fac5ea6f3",
    "train-labels-idx1-ubyte": "04a9b80c2ae65e3ba49e3b76668557d726f766dabd934e7f790cf39ab0001fc4",
    "t10k-images-idx3-ubyte": "f48d707808f10ad8a89ae0222a0534393ba4718d87935316cb973effd737c206",
    "t10k-labels-idx1-ubyte": "04b61d6e8e6e1c4d1ec23cc2bc444944e93c3508e3407a0be4be05501cc64b8b",
}
# The canonical dataset example by example (each image's digest and label, in canonical
# order), so that any version can say how it differs from it without the data at hand.
# Written by `benchmarks/dataset_version.py --write-reference` from the real files.
CANONICAL_REFERENCE = Path(__file__).with_name("canonical_reference.npz")


# An example's key: its image digest's first word with the low bits holding its label.
LABEL_BITS = 4
assert NUM_CLASSES <= 1 << LABEL_BITS


def image_digests(images: np.ndarray) -> np.ndarray:
    """(N, 2) uint64: each image's BLAKE2b-128 digest of its pixels, as two big-endian words."""
    pixels = memoryview(np.ascontiguousarray(images, dtype=np.uint8)).cast("B")
    size = PIXELS
    blob = b"".join(
        hashlib.blake2b(pixels[start : start + size], digest_size=16).digest()
        for start in range(0, len(pixels), size)
    )
    return np.frombuffer(blob, dtype=">u8").astype(np.uint64).reshape(len(images), 2)


def canonical_order(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The permutation that puts a split in canonical order: by image digest, then label."""
    digests = image_digests(images)
    return np.lexsort((labels, digests[:, 1], digests[:, 0]))


def canonical_files(splits: dict[str, Split]) -> dict[str, bytes]:
    """The four IDX files (name -> bytes) of `splits` in canonical form."""
    files = {}
    for split, (images_name, labels_name) in IDX_FILES.items():
        images, labels = splits[split]
        order = canonical_order(images, labels)
        files[images_name] = encode_idx(images[order])
        files[labels_name] = encode_idx(labels[order])
    return files


def differing_files(digests: dict[str, str]) -> list[str]:
    """The IDX files whose SHA-256 (of the canonical form) is not the canonical dataset's."""
    return [name for name, digest in CANONICAL_SHA256.items() if digests.get(name) != digest]


@dataclass(frozen=True)
class SplitChanges:
    """How one split of a dataset version differs from the same split of another.

    Examples are matched by image: an image in both with another label is `relabelled`; an
    image only in this version is `added`, only in the other `removed`.
    """

    examples: int
    added: int
    removed: int
    relabelled: int

    @property
    def unchanged(self) -> bool:
        """True when the two splits hold the same examples."""
        return not (self.added or self.removed or self.relabelled)


def example_keys(digests: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) uint64: each example as one number, its image digest's first 60 bits and its label;
    `key >> LABEL_BITS` is the image alone."""
    image = digests.astype(np.uint64) >> np.uint64(LABEL_BITS) << np.uint64(LABEL_BITS)
    return image | labels.astype(np.uint64)


def _minus(keys, counts, other_keys, other_counts) -> np.ndarray:
    """For each of the unique `keys`, its count less the other multiset's (at least 0)."""
    _, mine, theirs = np.intersect1d(keys, other_keys, assume_unique=True, return_indices=True)
    left = counts.copy()
    left[mine] -= np.minimum(counts[mine], other_counts[theirs])
    return left


def _per_image(keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The images of the sorted example `keys`, and the `counts` summed per image."""
    if not len(keys):
        return keys, counts
    images, starts = np.unique(keys >> np.uint64(LABEL_BITS), return_index=True)
    return images, np.add.reduceat(counts, starts)


def compare(
    images: np.ndarray, labels: np.ndarray, reference: tuple[np.ndarray, np.ndarray]
) -> SplitChanges:
    """How (images, labels) differ from `reference`: (64-bit image digests, labels).

    Examples count as multisets (a duplicate is an example too). Images are matched by the
    first 60 bits of their digest (`image_digests`): two different images share them with
    probability 2^-60, so the counts are exact in practice.
    """
    ours, ours_n = np.unique(example_keys(image_digests(images)[:, 0], labels), return_counts=True)
    ref, ref_n = np.unique(example_keys(*reference), return_counts=True)
    only_ours, only_ref = _minus(ours, ours_n, ref, ref_n), _minus(ref, ref_n, ours, ours_n)
    our_images, our_left = _per_image(ours, only_ours)
    ref_images, ref_left = _per_image(ref, only_ref)
    _, mine, theirs = np.intersect1d(
        our_images, ref_images, assume_unique=True, return_indices=True
    )
    relabelled = int(np.minimum(our_left[mine], ref_left[theirs]).sum())
    return SplitChanges(
        examples=len(labels),
        added=int(only_ours.sum()) - relabelled,
        removed=int(only_ref.sum()) - relabelled,
        relabelled=relabelled,
    )


def reference_of(splits: dict[str, Split]) -> bytes:
    """`splits` example by example, as `CANONICAL_REFERENCE` holds the canonical dataset:
    per split the first digest word of each image and its label, in canonical order."""
    arrays = {}
    for split, (images, labels) in splits.items():
        order = canonical_order(images, labels)
        arrays[f"{split}_digests"] = image_digests(images[order])[:, 0]
        arrays[f"{split}_labels"] = labels[order]
    return npz_bytes(arrays, compress=True)


@functools.cache
def canonical_reference() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per split, the canonical dataset's (image digests, labels) from `CANONICAL_REFERENCE`."""
    with np.load(CANONICAL_REFERENCE, allow_pickle=False) as data:
        return {s: (data[f"{s}_digests"], data[f"{s}_labels"]) for s in IDX_FILES}


def describe(splits: dict[str, Split], digests: dict[str, str]) -> dict:
    """The record of a dataset version: whether it is the canonical Fashion-MNIST (its IDX
    files' SHA-256 `digests` are the canonical ones) and, per split, its examples and what
    was added, removed and relabelled against the canonical dataset."""
    reference = canonical_reference()
    record: dict = {"canonical": not differing_files(digests)}
    for split, (images, labels) in splits.items():
        record[split] = dataclasses.asdict(compare(images, labels, reference[split]))
    return record
