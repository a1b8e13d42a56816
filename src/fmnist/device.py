"""The machine a stage runs on: seeding, determinism, precision, and a record of it all."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import keras
import tensorflow as tf
from tensorflow.python.util import _pywrap_util_port  # TensorFlow's own oneDNN check

from fmnist.params import TrainParams


def cpu_flags() -> set[str]:
    """The CPU feature flags Linux reports (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_model() -> str:
    """The CPU's model name, or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN kernels (see `fmnist.ONEDNN_VARIABLE`)."""
    return bool(_pywrap_util_port.IsMklEnabled())


def resolve_precision(requested: str, has_gpu: bool, flags: set[str]) -> str:
    """The Keras dtype policy for `train.precision`; `auto` picks by measurement per device.

    float16 mixed precision is the fast path on GPUs; on CPUs bfloat16 only pays off with AMX
    (without it, bfloat16 is emulated and slower than float32).
    """
    if requested != "auto":
        return requested
    if has_gpu:
        return "mixed_float16"
    if "amx_bf16" in flags:
        return "mixed_bfloat16"
    return "float32"


def setup(p: TrainParams) -> dict:
    """Seed everything, set determinism and precision; return what ran where, for the record."""
    keras.utils.set_random_seed(p.seed)
    if p.deterministic:
        tf.config.experimental.enable_op_determinism()
    gpus = tf.config.list_physical_devices("GPU")
    precision = resolve_precision(p.precision, bool(gpus), cpu_flags())
    keras.mixed_precision.set_global_policy(precision)
    if gpus:
        details = [
            tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus
        ]
        device = f"GPU x{len(gpus)} ({', '.join(details)})"
    else:
        device = f"CPU ({cpu_model()}, {os.cpu_count()} cores)"
    return {
        "device": device,
        "precision": precision,
        "deterministic": p.deterministic,
        "onednn": onednn_enabled(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
