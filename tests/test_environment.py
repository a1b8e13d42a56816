"""The locked environment: the locks against pyproject.toml, the sync into a virtual environment
(with a tiny local wheel, offline), the Python-version check, and the record of it all."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from fmnist import environment
from fmnist.environment import EnvironmentSetupError
from helpers import ROOT, checkout_env

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCKS = {
    (python, gpu): environment.lock_path(ROOT, python, gpu)
    for python in environment.LOCKED_PYTHONS
    for gpu in (False, True)
}


def lock_entries(text: str) -> dict[str, tuple[str, set[str]]]:
    """name -> (version, hashes) of a lock."""
    entries = {}
    for block in re.split(r"\n(?=\S)", text):
        pin = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", block)
        if pin:
            name = environment.canonical(pin.group(1))
            entries[name] = (pin.group(2), set(re.findall(r"--hash=sha256:([0-9a-f]{64})", block)))
    return entries


# --- the committed locks -------------------------------------------------------------------


def test_there_is_a_cpu_and_a_gpu_lock_for_each_locked_python_and_nothing_else():
    assert sorted((ROOT / environment.LOCK_DIR).iterdir()) == sorted(LOCKS.values())
    # The PR workflow's Python is one the lock covers (the Dockerfile's: tests/test_vertex.py).
    workflow = (ROOT / ".github/workflows/pr.yml").read_text()
    (python,) = set(re.findall(r'python-version: "(\d+\.\d+)"', workflow))
    assert python in environment.LOCKED_PYTHONS


@pytest.mark.parametrize(("python", "gpu"), list(LOCKS))
def test_the_lock_pins_every_dependency_pyproject_names_in_its_range(python, gpu):
    text = LOCKS[python, gpu].read_text()
    extras = (*environment.EXTRAS, environment.GPU_EXTRA) if gpu else environment.EXTRAS
    requirements = environment.declared(PYPROJECT, extras)
    assert environment.unpinned(requirements, text) == []
    pinned = environment.pins(text)
    for spec in requirements:
        requirement = Requirement(spec)
        version = pinned[environment.canonical(requirement.name)]
        assert requirement.specifier.contains(version, prereleases=True), (spec, version)
    assert "tensorflow" in pinned and "pytest" in pinned and "setuptools" in pinned
    assert ("nvidia-cudnn-cu12" in pinned) == gpu  # tensorflow[and-cuda]'s libraries


@pytest.mark.parametrize(("python", "gpu"), list(LOCKS))
def test_the_lock_holds_names_versions_and_hashes_only_no_url(python, gpu):
    text = LOCKS[python, gpu].read_text()
    assert not re.search(r"[a-z][a-z0-9+.-]*://|--(extra-)?index-url|--find-links|--trusted", text)
    assert not re.search(r"^\s*-[fie]\s", text, re.M)
    for line in text.splitlines():
        assert (
            re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!_-]+ \\", line)
            or re.fullmatch(r"    --hash=sha256:[0-9a-f]{64}( \\)?", line)
            or re.fullmatch(r"\s*#.*", line)
        ), line
        if line.lstrip().startswith("#"):
            assert "/" not in line.replace("requirements/lock-", ""), line  # no path or host
    entries = lock_entries(text)
    assert entries and all(hashes for _, hashes in entries.values())


def test_the_gpu_lock_is_the_cpu_lock_plus_the_cuda_libraries():
    for python in environment.LOCKED_PYTHONS:
        cpu = lock_entries(LOCKS[python, False].read_text())
        gpu = lock_entries(LOCKS[python, True].read_text())
        assert {name: gpu[name] for name in cpu} == cpu  # same versions, same hashes
        added = set(gpu) - set(cpu)
        assert added and all(name.startswith("nvidia-") for name in added), added


def test_a_dependency_missing_from_the_lock_is_named_with_the_fix(tmp_path):
    lock = environment.lock_path(tmp_path, "3.11")
    lock.parent.mkdir()
    lock.write_text("numpy==2.4.6 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "p"\n'
        'dependencies = ["numpy>=2", "Pydantic_Core[x]>=2 ; python_version >= \'3\'"]\n'
        "[project.optional-dependencies]\ndev = []\n"
    )
    with pytest.raises(EnvironmentSetupError) as error:
        environment.check_lock(tmp_path, "3.11")
    message = str(error.value)
    assert "does not match pyproject.toml: it pins no version of Pydantic_Core[x]>=2" in message
    assert "Run `make lock`" in message and "numpy" not in message.split("of ")[1]
    lock.write_text(lock.read_text() + "pydantic-core==2.50.5 \\\n    --hash=sha256:" + "1" * 64)
    assert environment.check_lock(tmp_path, "3.11") == lock
    with pytest.raises(
        EnvironmentSetupError, match="lock-py3.11-gpu.txt is missing: run `make lock`"
    ):
        environment.check_lock(tmp_path, "3.11", gpu=True)


# --- the Python version ----------------------------------------------------------------------


def test_a_python_the_lock_does_not_cover_gets_the_supported_versions():
    assert environment.check_python((3, 11, 7)) == "3.11"
    with pytest.raises(EnvironmentSetupError) as error:
        environment.check_python((3, 12, 1), "/usr/bin/python3")
    assert str(error.value) == (
        "Python 3.12.1 (/usr/bin/python3) is not a version the lock covers: requirements/ has "
        "locks for Python 3.11 only. Install Python 3.11 and run `make PYTHON=python3.11 ...`"
    )


def fake_python(directory: Path, version: str) -> Path:
    """An executable that answers the version query as Python `version` would, and does
    nothing else (so any attempt to build with it would fail loudly)."""
    path = directory / "python"
    path.write_text(
        f'#!/bin/sh\ncase "$*" in *python_version*) echo {version};; *) exit 99;; esac\n'
    )
    path.chmod(0o755)
    return path


def test_sync_refuses_an_uncovered_python_before_creating_anything(tmp_path):
    python = fake_python(tmp_path, "3.12.1")
    venv = tmp_path / "venv"
    with pytest.raises(EnvironmentSetupError, match=r"Python 3\.12\.1 .* locks for Python 3\.11"):
        environment.sync(ROOT, venv, python=str(python))
    assert not venv.exists()


def other_pythons() -> list[str]:
    """Interpreters of versions the lock does not cover that this machine has (on PATH, or
    installed by pyenv)."""
    pyenv = Path(os.environ.get("PYENV_ROOT", "~/.pyenv")).expanduser() / "versions"
    found = []
    for version in ("3.8", "3.10", "3.12", "3.13"):
        candidates = [shutil.which(f"python{version}") or ""]
        candidates += sorted(str(p) for p in pyenv.glob(f"{version}.*/bin/python{version}"))
        for path in candidates:
            if path and subprocess.run([path, "-c", ""], capture_output=True).returncode == 0:
                found.append(path)
                break
    return found


@pytest.mark.skipif(not other_pythons(), reason="no Python other than the locked one here")
@pytest.mark.parametrize("python", other_pythons())
def test_the_makefile_command_on_another_python_says_which_versions_are_supported(python, tmp_path):
    # The module parses on Python 3.8+, so an old interpreter gets the sentence, not a SyntaxError.
    proc = subprocess.run(
        [
            python,
            "-m",
            "fmnist.environment",
            "--root",
            str(ROOT),
            "sync",
            "--venv",
            str(tmp_path / "v"),
        ],
        capture_output=True,
        text=True,
        env=checkout_env(),
    )
    assert proc.returncode == 1
    assert (
        proc.stderr.startswith("error: Python 3.") and "locks for Python 3.11 only" in proc.stderr
    )
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "v").exists()


# --- the sync, offline, with a tiny local wheel ---------------------------------------------


def tiny_wheel(directory: Path, name: str, version: str) -> Path:
    """A minimal pure-Python wheel `name==version` in `directory`."""
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        **dist_info(name, version, "py3-none-any"),
    }
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


def dist_info(name: str, version: str, tag: str, requires: str = "") -> dict[str, str]:
    """The .dist-info files of a wheel: METADATA, WHEEL and a RECORD of the others."""
    info = f"{name}-{version}.dist-info"
    files = {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + (f"Requires-Dist: {requires}\n" if requires else ""),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        f"Tag: {tag}\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    return files


# The tiny project's build backend (PEP 660, in its tree): an editable wheel holding a .pth file,
# so that the sync's editable install needs neither setuptools nor the network.
BACKEND = """
import os, zipfile

FILES = {files!r}


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    name = "tinyproj-0.1-0.editable-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as zf:
        zf.writestr("tinyproj.pth", os.path.abspath("src") + "\\n")
        for path, text in FILES.items():
            zf.writestr(path, text)
    return name
"""


def entry(wheel: Path, digest: str | None = None) -> str:
    """The lock entry of a wheel, with its hash or `digest`."""
    name, version = wheel.name.split("-")[:2]
    digest = digest or hashlib.sha256(wheel.read_bytes()).hexdigest()
    return f"{name}=={version} \\\n    --hash=sha256:{digest}\n"


@pytest.fixture
def tiny_project(tmp_path, monkeypatch):
    """A project needing `tinydep>=1`, a directory for its wheels, pip kept offline."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    root = tmp_path / "project"
    (root / "src/tinyproj").mkdir(parents=True)
    (root / "src/tinyproj/__init__.py").write_text("")
    # The .pth file is not in the RECORD: pip writes its own RECORD on install.
    files = dist_info("tinyproj", "0.1", "py3-none-any", requires="tinydep>=1")
    (root / "tinybackend.py").write_text(BACKEND.format(files=files))
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "tinybackend"\nbackend-path = ["."]\n'
        '[project]\nname = "tinyproj"\nversion = "0.1"\ndependencies = ["tinydep>=1"]\n'
        "[project.optional-dependencies]\ndev = []\n"
    )
    (root / environment.LOCK_DIR).mkdir()
    # Offline: the tiny wheels only, whatever the machine's pip configuration says.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    return root, wheels


def write_lock(root: Path, *entries: str) -> Path:
    lock = environment.lock_path(root, environment.LOCKED_PYTHONS[0])
    lock.write_text("# test lock\n" + "".join(entries))
    return lock


def site(venv: Path) -> Path:
    return Path(environment.site_packages(venv)[0])


@pytest.mark.slow  # creates a virtual environment and runs pip (offline)
def test_sync_installs_the_lock_checks_it_and_refreshes_only_on_change(tiny_project, capfd):
    root, wheels = tiny_project
    venv = root / ".venv"
    dep = tiny_wheel(wheels, "tinydep", "1.0")
    extra = tiny_wheel(wheels, "tinyextra", "1.0")

    # A tampered hash: pip refuses, the tool's error is shown, nothing is stamped or installed.
    write_lock(root, entry(dep, "0" * 64))
    with pytest.raises(EnvironmentSetupError, match=r"installing requirements/lock-py3\.11\.txt"):
        environment.sync(root, venv)
    assert "THESE PACKAGES DO NOT MATCH THE HASHES" in capfd.readouterr().err
    assert environment.read_stamp(venv) is None
    assert not list(site(venv).glob("tinydep*"))

    # A lock that does not satisfy pyproject.toml: pip check says so, nothing is stamped.
    write_lock(root, entry(tiny_wheel(wheels, "tinydep", "0.9")))  # pyproject: tinydep>=1
    with pytest.raises(EnvironmentSetupError, match="checking that every requirement is met"):
        environment.sync(root, venv)
    out = capfd.readouterr().out
    assert "tinyproj 0.1 has requirement tinydep>=1, but you have tinydep 0.9" in out
    assert environment.read_stamp(venv) is None

    # The right hashes: the lock, then the project; the stamp names the lock.
    lock = write_lock(root, entry(dep), entry(extra))
    assert environment.sync(root, venv).startswith(".venv built from requirements/lock-py3.11")
    stamp = environment.read_stamp(venv)
    assert stamp["lock_sha256"] == environment.sha256(lock)
    assert stamp["pins"] == {"tinydep": "1.0", "tinyextra": "1.0"}
    installed = environment.installed(environment.site_packages(venv))
    assert installed["tinydep"] == "1.0" and installed["tinyproj"] == "0.1"
    assert "setuptools" not in installed  # the venv's seed, which the lock does not pin

    # Unchanged: nothing runs (pip would have touched site-packages).
    before = site(venv).stat().st_mtime_ns
    capfd.readouterr()
    assert "is up to date with requirements/lock-py3.11.txt" in environment.sync(root, venv)
    assert site(venv).stat().st_mtime_ns == before
    assert "pip" not in capfd.readouterr().out

    # A new lock: the new version in, what the lock no longer pins out, the project kept.
    write_lock(root, entry(tiny_wheel(wheels, "tinydep", "1.1")))
    environment.sync(root, venv)
    installed = environment.installed(environment.site_packages(venv))
    assert installed["tinydep"] == "1.1" and "tinyextra" not in installed
    assert installed["tinyproj"] == "0.1"


# --- the record ---------------------------------------------------------------------------


def test_the_record_names_versions_the_lock_and_any_drift_from_it(tmp_path):
    present = environment.installed()
    stamp = {
        "lock_file": "requirements/lock-py3.11.txt",
        "lock_sha256": "ab" * 32,
        "pins": {"numpy": present["numpy"], "keras": "0.0.1"},
    }
    (tmp_path / environment.STAMP).write_text(json.dumps(stamp))
    record = environment.record(str(tmp_path))
    assert record["python"] == ".".join(map(str, sys.version_info[:3]))
    assert record["numpy"] == present["numpy"] and record["tensorflow"] == present["tensorflow"]
    assert record["lock_sha256"] == "ab" * 32
    assert record["lock_drift"] == [f"keras {present['keras']} (lock 0.0.1)"]
    unlocked = environment.record(str(tmp_path / "elsewhere"))
    assert unlocked["lock_sha256"] is None and unlocked["lock_drift"] is None
    assert set(environment.ENVIRONMENT_FIELDS) >= set(record)


def test_stamping_an_environment_that_differs_from_the_lock_is_refused(tmp_path):
    lock = environment.lock_path(tmp_path, "3.11")
    lock.parent.mkdir()
    lock.write_text("numpy==0.0.1 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "p"\n')
    with pytest.raises(EnvironmentSetupError, match=r"does not match .*numpy \S+ \(lock 0\.0\.1\)"):
        environment.write_stamp(tmp_path, lock, prefix=str(tmp_path))
    assert not (tmp_path / environment.STAMP).exists()


# --- the Makefile ---------------------------------------------------------------------------


def make(*args: str) -> str:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_make_runs_everything_in_the_project_venv_after_checking_python():
    shown = make("--eval", "show-path: ; @echo $$PATH", "show-path").strip()
    assert shown.split(":")[0] == str(ROOT / ".venv/bin")
    for target in ("repro", "test"):
        steps = make("-n", target, "GPU=0").splitlines()
        check = next(i for i, s in enumerate(steps) if "fmnist.environment check" in s)
        sync = next(i for i, s in enumerate(steps) if "fmnist.environment sync" in s)
        assert check == 0 and check < sync
        assert not any(re.search(r"pip\S* install", s) for s in steps)  # only the sync installs
    repro = make("-n", "repro", "GPU=0")
    # The Python version is checked before anything is installed, the dataset package included.
    assert repro.index("fmnist.environment check") < repro.index("dataset-fashion-mnist")
    assert "--gpu" in make("-n", "venv", "GPU=1") and "--cpu" in make("-n", "venv", "GPU=0")


def test_activating_the_venv_gives_the_commands_the_readme_uses():
    """The README: after `make repro`, `source .venv/bin/activate` in a new shell, and `dvc`,
    `fmnist` and `gto` are the locked ones, and run."""
    venv = ROOT / ".venv"
    if environment.read_stamp(venv) is None:
        pytest.skip("no .venv built by `make venv` in this checkout")
    script = (
        f"source {venv}/bin/activate\n"
        "command -v dvc fmnist gto\n"
        "dvc --version >/dev/null && fmnist --help >/dev/null && gto --help >/dev/null\n"
    )
    # A new shell's environment: nothing of this process's PATH or PYTHONPATH.
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    proc = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(venv / "bin" / name) for name in ("dvc", "fmnist", "gto")]
