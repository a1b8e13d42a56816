"""Fixtures shared by the test tiers."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import helpers

# Quiet TensorFlow's start-up chatter in subprocesses and here.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def project_files() -> dict[str, str]:
    """Hashes of this checkout's committed pipeline state: what a stage's default paths write."""
    files = [
        *(helpers.ROOT / "metrics").rglob("*"),
        helpers.ROOT / "dvc.lock",
        helpers.ROOT / "params.yaml",
    ]
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}


@pytest.fixture(scope="session", autouse=True)
def the_checkout_is_left_alone():
    """No test writes into this checkout's metrics, dvc.lock or params (a stage run in-process
    with its default output paths would): each must give its outputs a temporary path."""
    before = project_files()
    yield
    after = project_files()
    changed = sorted(f for f in before.keys() | after.keys() if before.get(f) != after.get(f))
    assert not changed, f"tests changed the checkout's files: {changed}"


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


def runs_dvc_or_trains(args) -> bool:
    """Whether a command line runs `dvc` or the `train` stage (its `--help` does not train)."""
    argv = args.split() if isinstance(args, str) else [str(a) for a in args]
    if not argv:
        return False
    if Path(argv[0]).name == "dvc" or argv[1:3] == ["-m", "dvc"]:
        return True
    stage = [i for i in range(len(argv)) if argv[i : i + 3] == ["-m", "fmnist.stages", "train"]]
    return bool(stage) and not {"-h", "--help"} & set(argv)


@pytest.fixture(autouse=True)
def fast_tier_neither_trains_nor_runs_dvc(request, monkeypatch):
    """The fast tier (`make test-fast`: `-m "not slow"`) stays fast because its tests neither
    train a model nor run `dvc`: in a test not marked slow, either fails, naming the marker."""
    if request.node.get_closest_marker("slow"):
        return
    hint = "; mark the test @pytest.mark.slow"
    keras = sys.modules.get("keras")  # loaded by the test's imports, if it uses Keras

    if keras is not None:

        def fit(*args, **kwargs):
            raise AssertionError(f"a fast test trains a model (Model.fit){hint}")

        monkeypatch.setattr(keras.Model, "fit", fit)
    popen_init = subprocess.Popen.__init__

    def guarded_init(self, args, *more, **kwargs):
        if runs_dvc_or_trains(args):
            raise AssertionError(f"a fast test runs {' '.join(map(str, args))!r}{hint}")
        popen_init(self, args, *more, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded_init)


@pytest.fixture(scope="session")
def exported(tmp_path_factory, tiny_data):
    """An untrained small model (seeded) as `train` saves it, averaged over `helpers.
    SERVED_PARAMS`' ten views; its out-of-distribution detector fitted on the tiny training
    images, half the tiny test images over its threshold; and its SavedModel:
    (model, detector, path)."""
    return helpers.export_untrained(tmp_path_factory.mktemp("saved") / "model", tiny_data)
