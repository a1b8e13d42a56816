"""What the benchmarks ran on, and the machine's fp32 and bfloat16 peaks (nominal, and a measured
GEMM's), for the tables."""

from __future__ import annotations

import os
import time

# First, so that TensorFlow starts with the process settings the stages run with, and its
# start-up lines are held back as the stages hold them back.
from fmnist import launch

launch.load("tensorflow")

# isort: split
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from fmnist.training import device  # noqa: E402


def cpu_ghz() -> float | None:
    """The current clock of the first core, as Linux reports it."""
    mhz = device.cpu_info().get("cpu MHz")
    return float(mhz) / 1000 if mhz else None


def fp32_flops_per_cycle(info: dict[str, str]) -> int:
    """fp32 FLOPs per cycle and core: two FMA units × SIMD lanes × 2 (multiply and add).

    AMD's Zen 4 (family 25 with AVX-512) runs AVX-512 on its two 256-bit FMA units, two passes
    per instruction, so it peaks as AVX2 does.
    """
    flags = set(info.get("flags", "").split())
    zen4 = info.get("vendor_id") == "AuthenticAMD" and info.get("cpu family") == "25"
    if "avx512f" in flags and not zen4:
        return 64
    return 32 if {"avx2", "fma"} <= flags else 16


def flops_per_cycle(info: dict[str, str], precision: str) -> int:
    """FLOPs per cycle and core in `precision` ("float32" or "bfloat16").

    bfloat16: AMX's tiles do 1,024 per cycle (Intel's figure for Sapphire Rapids). AVX-512 BF16's
    dot product (VDPBF16PS) does two multiply-adds per fp32 lane in one instruction on the same
    units as an FMA: twice fp32's. Without either, bfloat16 computes in fp32 units: fp32's.
    """
    fp32 = fp32_flops_per_cycle(info)
    if precision == "float32":
        return fp32
    if precision != "bfloat16":
        raise ValueError(f"precision {precision!r}: expected 'float32' or 'bfloat16'")
    flags = set(info.get("flags", "").split())
    if "amx_bf16" in flags:
        return 1024
    return 2 * fp32 if "avx512_bf16" in flags else fp32


def peak_gflops(precision: str = "float32") -> tuple[float | None, str]:
    """Cores × GHz × FLOPs per cycle and core in `precision` (see `flops_per_cycle`)."""
    per_cycle = flops_per_cycle(device.cpu_info(), precision)
    ghz = cpu_ghz()
    cores = os.cpu_count() or 1
    if ghz is None:
        return None, f"{per_cycle} FLOP/cycle/core, clock unknown"
    return cores * ghz * per_cycle, f"{cores} cores × {ghz:.2f} GHz × {per_cycle} FLOP/cycle"


def gemm_gflops(precision: str = "float32", size: int = 2048, repeats: int = 10) -> float:
    """The best rate, in GFLOP/s, of a `size` × `size` matrix product in `precision` ("float32"
    or "bfloat16") through TensorFlow's kernels (oneDNN's GEMM where they are on).

    A measured ceiling beside the nominal peak: `peak_gflops` takes the clock Linux reports,
    which a CPU that boosts runs above, so a run can exceed the nominal peak. A convolution
    network's training reaches less than a large GEMM: its matrices are small and its other ops
    are memory-bound.
    """
    dtype = tf.as_dtype(precision)
    a = tf.cast(tf.random.stateless_normal([size, size], seed=[0, 0]), dtype)
    matmul = tf.function(tf.matmul)
    matmul(a, a).numpy()  # trace and warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, a).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def usable_cores() -> set[int]:
    """The cores this process may run on (fewer than the machine's under `taskset`)."""
    return os.sched_getaffinity(0)


def speed_probe() -> float:
    """Seconds for a fixed single-threaded loop (best of 3): how fast the CPU is right now.

    On a shared virtual machine the host can slow the guest down for minutes at a time, and the
    probe then reads up to twice its idle value (docs/measurements.md). Compare only figures
    measured with similar probes.
    """
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        sum(range(50_000_000))
        best = min(best, time.perf_counter() - start)
    return best


def describe() -> str:
    """One line: CPU, cores, ISA extensions that matter, TF and Keras versions."""
    flags = device.cpu_flags()
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    gpus = tf.config.list_physical_devices("GPU")
    return (
        f"{device.cpu_model()}, {os.cpu_count()} cores ({' '.join(isa) or 'no AVX'}), "
        f"{len(gpus)} GPU(s), TensorFlow {tf.__version__} (oneDNN "
        f"{'on' if device.onednn_enabled() else 'off'}), Keras {keras.__version__}; "
        f"speed probe {speed_probe():.2f} s (see machine.speed_probe)"
    )


def forward_flops(model: keras.Model) -> int:
    """Multiply-adds ×2 of one image's forward pass through the Conv2D and Dense layers."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            k_h, k_w, c_in, _ = layer.kernel.shape
            total += 2 * h * w * k_h * k_w * c_in * c_out
        elif isinstance(layer, keras.layers.Dense):
            c_in, c_out = layer.kernel.shape
            total += 2 * c_in * c_out
    return total
