"""The runtime the package sets up for TensorFlow before TensorFlow starts."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

import fmnist
from helpers import ROOT

ASK = "import fmnist.device as d; print(d.onednn_enabled())"


def onednn_in_a_fresh_process(value: str | None) -> str:
    """What `device.onednn_enabled()` says in a new Python with the variable set to `value`."""
    env = {k: v for k, v in os.environ.items() if k != fmnist.ONEDNN_VARIABLE}
    if value is not None:
        env[fmnist.ONEDNN_VARIABLE] = value
    env["PYTHONPATH"] = str(ROOT / "src")
    proc = subprocess.run(
        [sys.executable, "-c", ASK], capture_output=True, text=True, env=env, check=True
    )
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the default applies to x86-64")
def test_importing_the_package_turns_onednn_on_on_x86_64():
    assert onednn_in_a_fresh_process(None) == "True"


def test_an_explicit_setting_in_the_environment_wins():
    assert onednn_in_a_fresh_process("0") == "False"
