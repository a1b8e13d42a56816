"""The machine record, precision choice, and the process settings the entry points apply."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from fmnist import environment, launch
from fmnist.training import device
from helpers import ROOT

ASK = (
    "from fmnist import launch; launch.configure(); "
    "import fmnist.training.device as d; print(d.onednn_enabled())"
)


# Each starts TensorFlow in a fresh interpreter (seconds): the slow tier. The unit tests of
# `launch.configure` below cover the same settings in this process.
def onednn_in_a_fresh_process(value: str | None) -> str:
    """What `device.onednn_enabled()` says in a new Python with the variable set to `value`."""
    env = {k: v for k, v in os.environ.items() if k != launch.ONEDNN_VARIABLE}
    if value is not None:
        env[launch.ONEDNN_VARIABLE] = value
    env["PYTHONPATH"] = str(ROOT / "src")
    proc = subprocess.run(
        [sys.executable, "-c", ASK], capture_output=True, text=True, env=env, check=True
    )
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the default applies to x86-64")
@pytest.mark.slow
def test_the_entry_points_turn_onednn_on_on_x86_64():
    assert onednn_in_a_fresh_process(None) == "True"


@pytest.mark.slow
def test_an_explicit_setting_in_the_environment_wins():
    assert onednn_in_a_fresh_process("0") == "False"


CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu avx2 fma avx512f avx512_bf16

processor\t: 1
model name\t: another
flags\t\t: fpu
"""


def test_cpu_info_reads_the_first_processor(tmp_path, monkeypatch):
    (tmp_path / "cpuinfo").write_text(CPUINFO)
    monkeypatch.setattr(device, "CPUINFO", tmp_path / "cpuinfo")
    assert device.cpu_model() == "AMD EPYC"
    assert device.cpu_flags() == {"fpu", "avx2", "fma", "avx512f", "avx512_bf16"}
    monkeypatch.setattr(device, "CPUINFO", tmp_path / "absent")
    assert device.cpu_flags() == set()
    assert device.cpu_model()  # the platform's name instead


@pytest.mark.parametrize(
    ("has_gpu", "flags", "expected"),
    [
        (True, {"avx512_bf16"}, "mixed_float16"),
        (False, {"avx2", "amx_bf16"}, "mixed_bfloat16"),
        (False, {"avx512f", "avx512_bf16"}, "mixed_bfloat16"),
        (False, {"avx2", "fma", "avx512f", "avx512_vnni"}, "float32"),
        (False, set(), "float32"),
    ],
)
def test_auto_precision_is_bfloat16_only_where_the_cpu_computes_it(has_gpu, flags, expected):
    assert device.resolve_precision("auto", has_gpu, flags) == expected


def test_an_explicit_precision_is_kept_on_any_device():
    assert device.resolve_precision("float32", True, {"amx_bf16"}) == "float32"
    assert device.resolve_precision("mixed_bfloat16", False, set()) == "mixed_bfloat16"


def test_training_and_packaging_record_the_machine_the_same_way():
    from fmnist.params import TrainParams

    record = device.machine()
    assert set(record) == {"device", "onednn", "platform", *environment.record()}
    assert record["device"].startswith(("CPU (", "GPU x"))
    trained = device.setup(TrainParams(precision="float32", deterministic=False))
    assert trained | record == trained  # the training record is the machine record and more
    assert trained["precision"] == "float32" and trained["deterministic"] is False


def test_the_training_record_keeps_the_models_numbers_and_the_runs_speed_apart():
    runtime = {"device": "CPU (AMD EPYC, 2 cores)", "precision": "float32", "replicas": 1}
    record = device.training_record(
        runtime,
        global_batch_size=128,
        learning_rate=0.003,
        parameters=96282,
        epochs_run=3,
        resumed_after_epoch=1,
    )
    assert record["device"] == runtime["device"] and record["resumed_after_epoch"] == 1
    # Time and speed change on every run: a record of their own, which no later stage reads.
    assert not {"train_seconds", "images_per_second"} & set(record)
    assert device.speed_record(2.0, 1000) == {"train_seconds": 2.0, "images_per_second": 500.0}
    # The metric: what the model is, nothing of where or how fast it trained.
    assert device.model_metrics(record) == {"parameters": 96282, "epochs_run": 3}
