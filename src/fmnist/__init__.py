"""Fashion-MNIST CNN classifier: a DVC pipeline from raw IDX files to a packaged model."""

import os
import platform

__version__ = "0.1.0"

# TensorFlow's oneDNN kernels, on by default on x86-64. TensorFlow turns them on by itself only
# on CPUs with AVX-512 VNNI, AVX-VNNI or AMX; on an AVX2-only CPU they trained this project's
# models faster than the Eigen kernels it uses otherwise, and as deterministically (README,
# "Training throughput"). TensorFlow reads the variable once, when it is first imported:
# importing this package first sets it in time for every stage and command. A value already in
# the environment wins (TF_ENABLE_ONEDNN_OPTS=0: off).
ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault(ONEDNN_VARIABLE, "1")
