"""Fixtures shared by the test tiers."""

from __future__ import annotations

import os

import pytest

import helpers

# Quiet TensorFlow's start-up chatter in subprocesses and here.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def tiny_data():
    """The synthetic dataset as arrays: {"train": (images, labels), "test": ...}."""
    return helpers.synthetic_dataset()


@pytest.fixture
def idx_source(tmp_path, tiny_data):
    """A directory holding the synthetic dataset as the four gzipped IDX files."""
    return helpers.write_idx_dir(tmp_path / "source", tiny_data)


@pytest.fixture
def tiny_repo(tmp_path, idx_source):
    """A fresh git+DVC repo with this project's pipeline configured for the tiny dataset."""
    return helpers.make_tiny_repo(tmp_path / "repo", idx_source)


@pytest.fixture(scope="session")
def reproduced_repo(tmp_path_factory):
    """One tiny repo on which `dvc repro` has run, shared (read-only!) by slow tests."""
    base = tmp_path_factory.mktemp("reproduced")
    source = helpers.write_idx_dir(base / "source", helpers.synthetic_dataset())
    repo = helpers.make_tiny_repo(base / "repo", source)
    helpers.dvc("repro", cwd=repo)
    return repo


@pytest.fixture(scope="session")
def exported(tmp_path_factory, tiny_data):
    """An untrained small model (seeded) as `train` saves it, averaged over `helpers.
    SERVED_PARAMS`' ten views; its out-of-distribution detector fitted on the tiny training
    images, half the tiny test images over its threshold; and its SavedModel:
    (model, detector, path)."""
    return helpers.export_untrained(tmp_path_factory.mktemp("saved") / "model", tiny_data)
