"""Stage `prepare`: validate the raw data, split train/validation, write compact arrays.

Writes `train.npz`, `val.npz` and `test.npz` (uint8 images (N, 28, 28) and labels) plus a
`manifest.json` with the SHA-256 of every raw file and array and the dataset record (the
dataset version a package records), the class counts per split (a record of the data, not a DVC
metric), and a grid of sample images. Data-quality monitoring: the `dataset.json` metric says
whether the raw data is the canonical Fashion-MNIST and what each split added, removed and
relabelled against it, so `dvc metrics diff` shows a new dataset version to a reviewer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from fmnist import atomic, provenance
from fmnist.dataset import (
    CLASS_NAMES,
    IDX_FILES,
    NUM_CLASSES,
    Split,
    encode_npz,
    read_idx_dir,
    sha256,
    version_summary,
)
from fmnist.dataset_versions import canonical_order, describe
from fmnist.errors import DataError, report_errors
from fmnist.params import PrepareParams, load_params


def class_counts(labels: np.ndarray) -> np.ndarray:
    """Examples per class, (NUM_CLASSES,)."""
    return np.bincount(labels, minlength=NUM_CLASSES)


def check_balance(labels: np.ndarray, max_ratio: float, where: str) -> None:
    """Every class present, and the largest class at most `max_ratio` times the smallest."""
    counts = class_counts(labels)
    missing = [CLASS_NAMES[i] for i in np.flatnonzero(counts == 0)]
    if missing:
        raise DataError(f"{where}: no examples of {', '.join(missing)}")
    ratio = counts.max() / counts.min()
    if ratio > max_ratio:
        raise DataError(
            f"{where}: classes are imbalanced ({counts.max()} vs {counts.min()} examples, "
            f"ratio {ratio:.2f} > prepare.max_class_imbalance {max_ratio})"
        )


def find_duplicates(train_images: np.ndarray, test_images: np.ndarray) -> np.ndarray:
    """Indices of test images that also appear, pixel for pixel, in the training set."""
    row = np.dtype((np.void, train_images[0].nbytes))
    train_rows = np.ascontiguousarray(train_images).reshape(len(train_images), -1).view(row).ravel()
    test_rows = np.ascontiguousarray(test_images).reshape(len(test_images), -1).view(row).ravel()
    return np.flatnonzero(np.isin(test_rows, train_rows))


def split_train_val(
    images: np.ndarray, labels: np.ndarray, fraction: float, seed: int
) -> tuple[Split, Split]:
    """Stratified, seeded hold-out split (the seed notebook's `train_test_split` call)."""
    try:
        x_train, x_val, y_train, y_val = train_test_split(
            images, labels, test_size=fraction, random_state=seed, stratify=labels
        )
    except ValueError as exc:
        raise DataError(
            f"cannot make a stratified split with prepare.val_fraction {fraction}: {exc}"
        ) from None
    return (x_train, y_train), (x_val, y_val)


def prepare(train: Split, test: Split, params: PrepareParams) -> dict[str, Split]:
    """Validate the raw splits and return the train/val/test arrays."""
    check_balance(train[1], params.max_class_imbalance, "train split")
    check_balance(test[1], params.max_class_imbalance, "test split")
    duplicates = find_duplicates(train[0], test[0])
    if duplicates.size:
        raise DataError(
            f"{duplicates.size} test images also appear in the training set (first: test index "
            f"{int(duplicates[0])}); the test accuracy would be inflated"
        )
    train_part, val_part = split_train_val(*train, params.val_fraction, params.seed)
    return {"train": train_part, "val": val_part, "test": test}


def check_canonical_form(raw: dict[str, Split], where: Path) -> None:
    """The raw splits are in the canonical order `fetch` writes, so their hash is the version."""
    for split, (images, labels) in raw.items():
        if not np.array_equal(canonical_order(images, labels), np.arange(len(labels))):
            raise DataError(
                f"{where}: the {split} split ({', '.join(IDX_FILES[split])}) is not in the "
                "canonical order `fetch` writes, so its hash would not name its dataset "
                "version; put data in data/raw only through `dvc repro fetch`"
            )


def statistics(splits: dict[str, Split]) -> dict:
    """Example and class counts per split, as the `data.json` metric."""
    return {
        name: {
            "examples": int(len(labels)),
            "per_class": {c: int(n) for c, n in zip(CLASS_NAMES, class_counts(labels))},
        }
        for name, (_, labels) in splits.items()
    }


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--raw", type=Path, default=Path("data/raw"))
    parser.add_argument("--out", type=Path, default=Path("data/prepared"))
    parser.add_argument("--stats", type=Path, default=Path("metrics/data.json"))
    parser.add_argument("--dataset", type=Path, default=Path("metrics/dataset.json"))
    parser.add_argument("--samples", type=Path, default=Path("metrics/figures/samples.png"))
    parser.add_argument("--provenance", type=Path, default=Path("metrics/provenance/prepare.json"))
    args = parser.parse_args(argv)
    all_params = load_params(args.params)
    params = all_params.prepare
    raw, raw_digests = read_idx_dir(args.raw)
    check_canonical_form(raw, args.raw)
    splits = prepare(raw["train"], raw["test"], params)
    record = describe(raw, raw_digests)

    from fmnist import figures  # matplotlib only once the data is known to be good

    manifest = {"raw": raw_digests, "dataset": record, "prepared": {}}
    with atomic.atomic_path(args.out) as tmp:
        tmp.mkdir()
        for name, (images, labels) in splits.items():
            blob = encode_npz(images, labels)
            (tmp / f"{name}.npz").write_bytes(blob)
            manifest["prepared"][f"{name}.npz"] = sha256(blob)
        atomic.write_json(tmp / "manifest.json", manifest)
    atomic.write_json(args.stats, statistics(splits))
    atomic.write_json(args.dataset, record)
    atomic.write_bytes(
        args.samples, figures.sample_grid(*splits["train"], params.samples_per_class)
    )
    provenance.write(args.provenance, "prepare", all_params)
    sizes = ", ".join(f"{name} {len(labels)}" for name, (_, labels) in splits.items())
    print(f"prepare: {sizes} examples written to {args.out} ({version_summary(record)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
