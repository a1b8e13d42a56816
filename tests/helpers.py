"""Shared test helpers: tiny synthetic Fashion-MNIST in the real file formats, and a tiny repo.

The synthetic images are learnable (each class has its own stripes), so a couple of epochs on
a few hundred of them give a model that is clearly better than chance.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import yaml

from fmnist.dataset import (
    CSV_FILES,
    IDX_FILES,
    IMAGE_SIZE,
    NUM_CLASSES,
    encode_csv,
    encode_idx,
    sha256,
)
from fmnist.dataset_versions import canonical_files
from fmnist.params import ModelParams, Params, with_overrides
from fmnist.tools import recipe

ROOT = Path(__file__).resolve().parents[1]


def synthetic_split(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`per_class` noisy images of each class; a class is a stripe direction and period.

    Stripes rather than positions, so that a translation-invariant model (global average
    pooling) can tell the classes apart as easily as a dense one.
    """
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(NUM_CLASSES, dtype=np.uint8), per_class)
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(len(labels), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    grid = np.arange(IMAGE_SIZE)
    for i, c in enumerate(labels):
        period = 2 + int(c) % 5
        on = (grid + i) % period == 0  # a random phase per image
        if c < 5:
            images[i, on, :] = 220
        else:
            images[i, :, on] = 220
    return images, labels


def synthetic_dataset(train_per_class: int = 30, test_per_class: int = 10, seed: int = 0) -> dict:
    """{"train": (images, labels), "test": (images, labels)} with no train/test duplicates."""
    return {
        "train": synthetic_split(train_per_class, seed),
        "test": synthetic_split(test_per_class, seed + 1),
    }


def write_idx_dir(directory: Path, data: dict, gz: bool = True) -> Path:
    """Write `data` as the four IDX files (gzipped by default) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, (images_name, labels_name) in IDX_FILES.items():
        images, labels = data[split]
        for name, array in ((images_name, images), (labels_name, labels)):
            blob = encode_idx(array)
            if gz:
                (directory / f"{name}.gz").write_bytes(gzip.compress(blob, mtime=0))
            else:
                (directory / name).write_bytes(blob)
    return directory


def write_csv_dir(directory: Path, data: dict) -> Path:
    """Write `data` as the Kaggle CSV pair into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, name in CSV_FILES.items():
        (directory / name).write_bytes(encode_csv(*data[split]))
    return directory


# A training record's environment fields, as `device.setup` writes them (lineage, report tests).
TRAINING_ENVIRONMENT = {
    "python": "3.11.7",
    "tensorflow": "2.21.0",
    "keras": "3.15.1",
    "numpy": "2.4.6",
    "dvc": "3.67.1",
    "lock_file": "requirements/lock-py3.11.txt",
    "lock_sha256": "8" * 64,
    "lock_drift": [],
    "device": "CPU (AMD EPYC, 2 cores)",
    "precision": "mixed_bfloat16",
    "distribute": "none",
    "onednn": True,
    "deterministic": True,
}


def write_raw_dir(directory: Path, data: dict) -> Path:
    """Write `data` into `directory` as `fetch` writes `data/raw`: canonical form."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, blob in canonical_files(data).items():
        (directory / name).write_bytes(blob)
    return directory


def shuffled(data: dict, seed: int = 3) -> dict:
    """`data` with the examples of every split in another order."""
    out = {}
    for split, (images, labels) in data.items():
        order = np.random.default_rng(seed).permutation(len(labels))
        out[split] = (images[order], labels[order])
    return out


def use_as_canonical(monkeypatch, data: dict) -> None:
    """Make `data` the canonical dataset for this test (its checksums and reference)."""
    from fmnist import dataset_versions

    digests = {name: sha256(blob) for name, blob in canonical_files(data).items()}
    reference = np.load(io.BytesIO(dataset_versions.reference_of(data)))
    monkeypatch.setattr(dataset_versions, "CANONICAL_SHA256", digests)
    monkeypatch.setattr(
        dataset_versions,
        "canonical_reference",
        lambda: {s: (reference[f"{s}_digests"], reference[f"{s}_labels"]) for s in data},
    )


TINY_PARAMS = {
    "train.epochs": 2,
    "train.batch_size": 16,
    "train.learning_rate": 0.01,
    "train.early_stopping.patience": 0,
    "train.reduce_lr.patience": 0,
    "evaluate.batch_size": 50,
    "evaluate.misclassified": 5,
    "prepare.samples_per_class": 2,
    "package.latency_runs": 10,
    "package.throughput_batch_size": 64,
    "package.throughput_runs": 2,
    "package.ood_set_size": 20,
}


def recipe_params(name: str) -> Params:
    """The params of a named recipe in recipes.yaml (`notebook`, `writeup`, ...)."""
    table = recipe.load_recipes(ROOT / "recipes.yaml")
    return recipe.recipe_params(name, table, yaml.safe_load((ROOT / "params.yaml").read_text()))


def set_params(params_file: Path, overrides: dict) -> None:
    """Set existing dotted keys in a params file (like `dvc exp run -S`)."""
    data = with_overrides(yaml.safe_load(params_file.read_text()), overrides)
    params_file.write_text(yaml.safe_dump(data, sort_keys=False))


def make_targets() -> set[str]:
    """The targets the project's Makefile defines."""
    return set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))


def checkout_env(**extra: str) -> dict[str, str]:
    """This process's environment with this checkout's code first on the import path, plus
    `extra`: what a subprocess of the tests runs with."""
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), **extra}


def run(cmd: list[str], cwd: Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run a command, capturing text output; on an unexpected failure show what it printed."""
    env = checkout_env(**kwargs.pop("env", {}))
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc


def dvc(*args: str, cwd: Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run the real `dvc` CLI in `cwd`."""
    return run([sys.executable, "-m", "dvc", *args], cwd=cwd, check=check, **kwargs)


def git(*args: str, cwd: Path) -> str:
    """Run git in `cwd` and return its stdout."""
    return run(["git", *args], cwd=cwd).stdout


def experiments_of_head(repo: Path) -> dict[str, dict]:
    """Name -> the `data` (params, metrics, ...) of each experiment of HEAD, from
    `dvc exp show --json`."""
    head = git("rev-parse", "HEAD", cwd=repo).strip()
    table = json.loads(dvc("exp", "show", "--json", cwd=repo).stdout)
    (baseline,) = [row for row in table if row["rev"] == head]
    return {exp["name"]: exp["revs"][0]["data"] for exp in baseline.get("experiments") or []}


def make_tiny_repo(path: Path, source: Path, overrides: dict | None = None) -> Path:
    """A git+DVC repo at `path` with this project's pipeline, reading tiny data from `source`."""
    path.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", ".gitignore", ".gto"):
        shutil.copy(ROOT / name, path / name)
    shutil.copytree(
        ROOT / "src", path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    set_params(
        path / "params.yaml",
        {
            "fetch.source_dir": str(source),
            "fetch.system_dir": "",
            "fetch.base_url": "",
            "fetch.dataset": "custom",
            **TINY_PARAMS,
            **(overrides or {}),
        },
    )
    git("init", "-q", cwd=path)
    git("config", "user.email", "test@example.com", cwd=path)
    git("config", "user.name", "test", cwd=path)
    dvc("init", "-q", cwd=path)
    dvc("config", "core.autostage", "true", cwd=path)
    git("add", "-A", cwd=path)
    git("commit", "-qm", "tiny pipeline", cwd=path)
    return path


# A small network, fast to export, with the default's ten test-time views.
SERVED_PARAMS = ModelParams(arch="bn_gap_cnn", filters=(4, 6, 8))


def export_untrained(path: Path, data: dict):
    """Export an untrained `SERVED_PARAMS` model (seeded) with a detector fitted on `data`'s
    training images and a threshold at the median score of its test images, to `path`;
    return (model, detector, path)."""
    import keras

    from fmnist.dataset import NUM_CLASSES
    from fmnist.model import architectures, saving, tta
    from fmnist.serving import ood, signatures

    keras.utils.set_random_seed(0)
    p = SERVED_PARAMS
    model = saving.for_inference(architectures.build(p), p)
    single = signatures.with_features(tta.network(model), ModelParams(tta_flip=False, tta_shift=0))
    images, labels = data["train"]
    detector = ood.fit(signatures.features_of(single, images)[1], labels, NUM_CLASSES)
    scores = detector.score(signatures.features_of(single, data["test"][0])[1])
    detector = detector.with_threshold(float(np.median(scores)))
    signatures.export_saved_model(model, path, p, detector)
    return model, detector, path


def png_header(width: int, height: int, color_type: int = 0) -> bytes:
    """A PNG that declares `width`×`height` 8-bit pixels (grey; 2: RGB) and holds none."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
