"""The entry points' process settings, and that importing the package changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fmnist import launch
from helpers import ROOT, checkout_env

SRC = ROOT / "src"


def all_modules() -> list[str]:
    """Every module of the package, by dotted name (entry points' `__main__` excluded: running
    them is their purpose)."""
    names = []
    for path in sorted((SRC / "fmnist").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_importing_any_module_changes_nothing_in_the_environment():
    # One fresh interpreter imports every module in turn and compares the environment after
    # each with the one before the first import. TensorFlow sets variables of its own when
    # imported (TF2_BEHAVIOR, KMP_*, ...): it is imported first, so that only this package's
    # changes would show.
    script = (
        "import importlib, os, sys\n"
        "import tensorflow, keras\n"
        "before = dict(os.environ)\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n"
        "    changed = sorted(k for k in before.keys() | os.environ.keys()\n"
        "                     if before.get(k) != os.environ.get(k))\n"
        "    if changed:\n"
        "        sys.exit(f'importing {name} changed {changed}')\n"
        "print('imported', len(sys.argv) - 1)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    env["PYTHONPATH"] = str(SRC)
    modules = all_modules()
    assert "fmnist.stages.train" in modules and "fmnist.dataset" in modules
    proc = subprocess.run(
        [sys.executable, "-c", script, *modules], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["imported", str(len(modules))]


def test_configure_sets_defaults_that_the_user_can_override():
    env: dict[str, str] = {}
    launch.configure(env)
    assert env[launch.LOG_LEVEL_VARIABLE] == "3"
    if launch.platform.machine().lower() in ("x86_64", "amd64"):
        assert env[launch.ONEDNN_VARIABLE] == "1"
    mine = {launch.ONEDNN_VARIABLE: "0", launch.LOG_LEVEL_VARIABLE: "0"}
    launch.configure(mine)
    assert mine == {launch.ONEDNN_VARIABLE: "0", launch.LOG_LEVEL_VARIABLE: "0"}
    loud = {launch.VERBOSE_VARIABLE: "1"}
    launch.configure(loud)
    assert launch.LOG_LEVEL_VARIABLE not in loud


NOISE = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1795907606.124348    3240 cudart_stub.cc:31] Could not find cuda drivers\n"
    "W0000 00:00:1795907606.124348    3240 some_file.cc:12] a warning\n"
)


def held_back(text: str, enabled: bool = True) -> str:
    """What reaches stderr when a child writes `text` to fd 2 inside the context manager."""
    script = (
        "import os, sys\n"
        "from fmnist import launch\n"
        f"with launch.native_logs_held_back(enabled={enabled}):\n"
        "    os.write(2, sys.argv[1].encode())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, text],
        capture_output=True,
        text=True,
        env=checkout_env(),
        check=True,
    )
    return proc.stderr


def test_tensorflows_start_up_noise_is_held_back_and_the_rest_shown():
    real = "E0000 00:00:1795907606.1 3240 x.cc:1] a real error\nTraceback (most recent call last)\n"
    assert held_back(NOISE + real) == real


def test_verbose_shows_everything():
    assert held_back(NOISE, enabled=False) == NOISE


@pytest.mark.parametrize(
    "stage",
    ["fetch", pytest.param("train", marks=pytest.mark.slow)],  # train: TensorFlow starts
)
def test_a_stage_prints_no_tensorflow_chatter(stage, tmp_path):
    # A stage's --help imports its module (and TensorFlow, for train) and prints only usage.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "FMNIST_"))}
    env["PYTHONPATH"] = str(SRC)
    proc = subprocess.run(
        [sys.executable, "-m", "fmnist.stages", stage, "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.startswith("usage:")


def test_ctrl_c_is_one_line(capsys):
    def interrupted(argv):
        raise KeyboardInterrupt

    assert launch.run(interrupted, [], "train") == 130
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == ["train: interrupted (Ctrl-C); nothing was half-written"]


def test_an_unknown_stage_is_one_usage_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fmnist.stages", "trian"],
        capture_output=True,
        text=True,
        env=checkout_env(),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("usage: python -m fmnist.stages {params,fetch,")


@pytest.mark.parametrize(
    "missing, call",
    [
        ("pandas", "from fmnist.stages.__main__ import run; sys.exit(run('fetch', ['--help']))"),
        ("pydantic", "from fmnist.stages.__main__ import run; sys.exit(run('params', []))"),
        ("yaml", "from fmnist.cli import main; sys.exit(main(['params', '--help']))"),
    ],
    ids=["a stage", "the params stage", "an fmnist command"],
)
def test_a_package_missing_from_this_python_is_one_line_that_names_the_venv(missing, call):
    # As a `python3` or `dvc` from outside the project's .venv would run it: importing a
    # module that sys.modules holds as None fails as a package that is not installed does.
    script = f"import sys\nsys.modules[{missing!r}] = None\n{call}\n"
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=checkout_env(), capture_output=True, text=True
    )
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(
        f"error: the Python package {missing!r} is not installed for {sys.executable}: "
    )
    assert "`make venv`" in line and "`source .venv/bin/activate`" in line
