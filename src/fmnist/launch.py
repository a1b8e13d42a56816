"""Settings of the process, applied by the entry points before TensorFlow is imported.

The stages (`python -m fmnist.stages NAME`, what `dvc.yaml` runs) and the `fmnist` command
call `run()`: it sets TensorFlow's environment, imports the stage or command module with
TensorFlow's start-up chatter held back, and turns Ctrl-C into one line. Importing a module
of this package changes nothing in the process; only these entry points do.

Quiet by default: TensorFlow's C++ log lines (`I0000 ...`, `W0000 ...` and a GPU-less
machine's `E0000 ... failed call to cuInit`) are hidden. `FMNIST_VERBOSE=1` shows them, as
does setting `TF_CPP_MIN_LOG_LEVEL` yourself. Python errors and warnings always show.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import platform
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, MutableMapping
from types import ModuleType

from fmnist import errors

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
VERBOSE_VARIABLE = "FMNIST_VERBOSE"

# What TensorFlow's C++ runtime prints while it loads, before its log level applies: the
# absl notice, and info and warning lines in absl's format (`I0000 00:00:1795907606.124348
# 3240 cudart_stub.cc:31] ...`: severity, date, time, thread, file:line).
_NATIVE_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)"
    r"|[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\]"
    r"|To enable the following instructions: .* rebuild TensorFlow)"
)


def verbose(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Whether the user asked to see TensorFlow's own log lines."""
    return environ.get(VERBOSE_VARIABLE, "") not in ("", "0") or LOG_LEVEL_VARIABLE in environ


def configure(environ: MutableMapping[str, str] = os.environ) -> None:
    """TensorFlow's process settings; a value the user already set wins.

    oneDNN kernels on x86-64 (TensorFlow turns them on by itself only on CPUs with VNNI or
    AMX; elsewhere they train this project's models faster than its Eigen kernels, and as
    deterministically: docs/measurements.md). `TF_ENABLE_ONEDNN_OPTS=0` turns them off.
    """
    if platform.machine().lower() in ("x86_64", "amd64"):
        environ.setdefault(ONEDNN_VARIABLE, "1")
    if not verbose(environ):
        environ[LOG_LEVEL_VARIABLE] = "3"


@contextlib.contextmanager
def native_logs_held_back(enabled: bool = True) -> Iterator[None]:
    """Capture file descriptor 2 (where C++ code logs) while the block runs, then replay all
    of it but TensorFlow's start-up noise. Everything else printed there, Python tracebacks
    and warnings included, still reaches the user."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [
                line
                for line in capture.read().decode(errors="replace").splitlines(keepends=True)
                if not _NATIVE_NOISE.match(line)
            ]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def load(module: str) -> ModuleType:
    """Import `module` with the process configured and TensorFlow's chatter held back.

    A third-party package missing from this Python is one `error:` line and exit code 1: the
    usual cause is a `python3` or `dvc` from outside the project's `.venv`.
    """
    quiet = not verbose()  # before `configure` sets TensorFlow's log level
    configure()
    try:
        with native_logs_held_back(enabled=quiet):
            return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if not exc.name or exc.name.partition(".")[0] == "fmnist":
            raise  # this package's own module: a bug, with its traceback
        missing = exc.name.partition(".")[0]
    line = (
        f"error: the Python package {missing!r} is not installed for {sys.executable}: run "
        "this project's commands in its environment: `make venv` builds .venv from the lock, "
        "then `source .venv/bin/activate` (a `dvc` alone from .venv/bin still runs the stages "
        "with the `python3` on PATH)"
    )
    print(errors.with_hint(line), file=sys.stderr)
    raise SystemExit(1)


def run(main: Callable[[list[str]], int], argv: list[str], what: str) -> int:
    """Call `main(argv)`; Ctrl-C becomes one line and exit code 130 (the shell's convention)."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        line = errors.with_hint(f"{what}: interrupted (Ctrl-C); nothing was half-written")
        print(f"\n{line}", file=sys.stderr)
        return 130
