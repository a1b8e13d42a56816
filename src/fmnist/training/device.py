"""The machine a stage runs on: seeding, determinism, precision, and a record of it all.

A training run's record has three parts. The model's numbers (`MODEL_FIELDS`) are a DVC
metric, `metrics/train.json`: they change only when the model does. How it was made differs
between two machines that train the same model: the device, what each `auto` setting resolved
to (precision here, the strategy in `fmnist.training.distribute`, oneDNN from the process), the
environment (`fmnist.environment.record`: the versions of Python, TensorFlow, Keras, NumPy and
DVC and the lock they were installed from). That record goes to `metrics/runs/train.json`, a
plain output that `dvc metrics diff` does not read and that `fmnist lineage` and the PR report
show on their own; the package copies it, so it holds nothing that changes when the same
machine trains the same model again. Time and speed do (`speed_record`): they go to
`metrics/runs/train_speed.json`, which no later stage reads, so that DVC skips `evaluate` and
`package` when a rerun trains the same bytes.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import keras
import tensorflow as tf
from tensorflow.python.util import _pywrap_util_port  # TensorFlow's own oneDNN check

from fmnist import environment
from fmnist.params import TrainParams

CPUINFO = Path("/proc/cpuinfo")
# CPU flags of native bfloat16 arithmetic: AMX tiles, or AVX-512's bfloat16 dot products.
BFLOAT16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
# The fields of a training record that describe the model it made.
MODEL_FIELDS = ("parameters", "epochs_run")


def cpu_info() -> dict[str, str]:
    """The first processor's fields in `CPUINFO` (empty where there is no such file)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # a blank line ends the first processor's block
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return info


def cpu_flags() -> set[str]:
    """The CPU feature flags Linux reports (empty elsewhere)."""
    return set(cpu_info().get("flags", "").split())


def cpu_model() -> str:
    """The CPU's model name, or the platform's processor string."""
    return cpu_info().get("model name") or platform.processor() or platform.machine()


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN kernels (see `fmnist.ONEDNN_VARIABLE`)."""
    return bool(_pywrap_util_port.IsMklEnabled())


def resolve_precision(requested: str, has_gpu: bool, flags: set[str]) -> str:
    """The Keras dtype policy for `train.precision`; `auto` picks by measurement per device.

    float16 mixed precision is the fast path on GPUs. On CPUs bfloat16 pays off where the CPU
    computes it: AMX, or AVX-512 BF16. Elsewhere it is emulated and slower than float32
    (docs/measurements.md has the figures).
    """
    if requested != "auto":
        return requested
    if has_gpu:
        return "mixed_float16"
    if flags & BFLOAT16_FLAGS:
        return "mixed_bfloat16"
    return "float32"


def device_name() -> str:
    """The devices TensorFlow computes on: its GPUs by name, else the CPU and its cores."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = [
            tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus
        ]
        return f"GPU x{len(gpus)} ({', '.join(details)})"
    return f"CPU ({cpu_model()}, {os.cpu_count()} cores)"


def machine() -> dict:
    """The record of the machine and software a stage runs on (training, packaging)."""
    return {
        "device": device_name(),
        "onednn": onednn_enabled(),  # moves CPU speed both ways (docs/measurements.md)
        **environment.record(),
        "platform": platform.platform(),
    }


def setup(p: TrainParams) -> dict:
    """Seed everything, set determinism and precision; return what ran where, for the record."""
    keras.utils.set_random_seed(p.seed)
    if p.deterministic:
        tf.config.experimental.enable_op_determinism()
    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    precision = resolve_precision(p.precision, has_gpu, cpu_flags())
    keras.mixed_precision.set_global_policy(precision)
    record = machine()
    return {
        "device": record.pop("device"),
        "precision": precision,
        "deterministic": p.deterministic,
        **record,
    }


def training_record(
    runtime: dict,
    *,
    global_batch_size: int,
    learning_rate: float,
    parameters: int,
    epochs_run: int,
    resumed_after_epoch: int,
) -> dict:
    """The record of how one training run made its model: `runtime` (what `setup` and the
    strategy's placement report), the settings it resolved, and the model it made."""
    return {
        **runtime,
        "global_batch_size": global_batch_size,
        "learning_rate": learning_rate,
        "parameters": parameters,
        "epochs_run": epochs_run,
        "resumed_after_epoch": resumed_after_epoch,
    }


def speed_record(seconds: float, images_trained: int) -> dict:
    """How long one training run took and how fast it went: of this process only, so a resumed
    run's epochs after the resume."""
    return {
        "train_seconds": round(seconds, 1),
        "images_per_second": round(images_trained / seconds, 1),
    }


def model_metrics(record: dict) -> dict:
    """The part of a training record that is about the model (the `train` stage's metric)."""
    return {key: record[key] for key in MODEL_FIELDS}
