"""The fast tier's guard: a test not marked slow cannot train a model or run `dvc`."""

from __future__ import annotations

import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import runs_dvc_or_trains


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["dvc", "repro"], True),
        ([sys.executable, "-m", "dvc", "exp", "run"], True),
        ("/usr/bin/dvc status", True),
        ([sys.executable, "-m", "fmnist.stages", "train", "--data", "d"], True),
        ([sys.executable, "-m", "fmnist.stages", "train", "--help"], False),
        ([sys.executable, "-m", "fmnist.stages", "prepare"], False),
        (["git", "status"], False),
        ([], False),
    ],
)
def test_the_guard_knows_dvc_and_the_train_stage(args, expected):
    assert runs_dvc_or_trains(args) is expected


def test_a_fast_test_cannot_run_dvc():
    with pytest.raises(AssertionError, match="mark the test @pytest.mark.slow"):
        subprocess.run([sys.executable, "-m", "dvc", "--version"], capture_output=True)


def test_a_fast_test_cannot_train():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(AssertionError, match=r"Model\.fit.*mark the test"):
        model.fit(np.zeros((4, 2)), np.zeros((4, 1)), verbose=0)


@pytest.mark.slow
def test_a_slow_test_may_do_both():
    proc = subprocess.run([sys.executable, "-m", "dvc", "--version"], capture_output=True)
    assert proc.returncode == 0
