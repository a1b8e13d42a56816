"""The Python environment: the lock of exact versions, the project's `.venv`, and a record of it.

`requirements/lock-pyX.Y.txt` pins every runtime, dev and build dependency of `pyproject.toml`
to one version with the SHA-256 of each of its files on PyPI; `lock-pyX.Y-gpu.txt` is the same
lock plus the `gpu` extra's CUDA libraries. `make lock` writes them (`uv pip compile`, names,
versions and hashes only); `make venv` (and so `make repro`, `make test`) runs `sync`, which
builds `.venv` from the lock with `pip install --require-hashes` and leaves a stamp, so that an
unchanged lock installs nothing the next time.

This module runs before anything is installed, under whatever `python3` the machine has: it
uses the standard library only and parses on Python 3.8, so that an unsupported Python gets a
sentence naming the supported versions rather than a syntax error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from fmnist.errors import PipelineError, report_errors

# The Python versions a lock exists for: `make lock` writes one pair of locks per version.
LOCKED_PYTHONS = ("3.11",)
LOCK_DIR = "requirements"
# The extras every lock installs; the `gpu` lock adds GPU_EXTRA.
EXTRAS = ("dev",)
GPU_EXTRA = "gpu"
# Written into the environment's prefix (`.venv/`, or /usr/local in the Docker image) once it
# holds exactly what a lock pins.
STAMP = "fmnist-lock.json"
# The packages whose versions every training record and package lineage name.
RECORDED_PACKAGES = ("tensorflow", "keras", "numpy", "dvc")
# The fields of a training record that describe its environment: versions, the lock, and what
# each `auto` setting resolved to (shown by `fmnist lineage`, compared by `fmnist report`).
ENVIRONMENT_FIELDS = (
    "python",
    *RECORDED_PACKAGES,
    "lock_file",
    "lock_sha256",
    "lock_drift",
    "device",
    "precision",
    "distribute",
    "onednn",
    "deterministic",
)
# Installed but never pinned: pip runs the install, the project is installed from its checkout.
UNPINNED = ("pip",)

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)", re.M)
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


class EnvironmentSetupError(PipelineError):
    """The interpreter, the lock or pyproject.toml do not allow building the environment."""


def canonical(name: str) -> str:
    """A distribution name as the lock and pip compare them (PEP 503: `Foo_Bar` is `foo-bar`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_path(root: Path, python: str, gpu: bool = False) -> Path:
    """The lock for Python `python` ("3.11"), with the CUDA libraries if `gpu`."""
    return Path(root) / LOCK_DIR / f"lock-py{python}{'-gpu' if gpu else ''}.txt"


def sha256(path: Path) -> str:
    """The SHA-256 of a file, as hex."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def pins(lock_text: str) -> dict[str, str]:
    """Every `name==version` of a lock, by canonical name."""
    return {canonical(name): version for name, version in _PIN.findall(lock_text)}


def check_python(version: tuple = tuple(sys.version_info[:3]), executable: str = "") -> str:
    """The lock's name for this interpreter's version ("3.11"), or an error naming the versions
    there are locks for."""
    short = f"{version[0]}.{version[1]}"
    if short in LOCKED_PYTHONS:
        return short
    supported = " or ".join(LOCKED_PYTHONS)
    where = f" ({executable})" if executable else ""
    raise EnvironmentSetupError(
        f"Python {'.'.join(map(str, version))}{where} is not a version the lock covers: "
        f"{LOCK_DIR}/ has locks for Python {supported} only. Install Python {LOCKED_PYTHONS[0]} "
        f"and run `make PYTHON=python{LOCKED_PYTHONS[0]} ...`"
    )


def read_pyproject(root: Path) -> dict:
    """pyproject.toml as a dict (tomllib: Python 3.11+, which `check_python` has ensured)."""
    import tomllib

    with open(Path(root) / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def declared(pyproject: dict, extras: tuple = EXTRAS) -> list[str]:
    """The requirements the lock must cover: the project's dependencies, those of `extras`, and
    the build system's (the project is installed without build isolation, from the lock)."""
    project = pyproject.get("project", {})
    optional = project.get("optional-dependencies", {})
    unknown = [extra for extra in extras if extra not in optional]
    if unknown:
        raise EnvironmentSetupError(f"pyproject.toml has no optional dependencies {unknown}")
    found = list(project.get("dependencies", []))
    for extra in extras:
        found += optional[extra]
    return found + list(pyproject.get("build-system", {}).get("requires", []))


def unpinned(requirements: list[str], lock_text: str) -> list[str]:
    """The requirements whose distribution the lock does not pin."""
    pinned = pins(lock_text)
    missing = []
    for requirement in requirements:
        match = _NAME.match(requirement)
        if match is None or canonical(match.group(1)) not in pinned:
            missing.append(requirement)
    return missing


def check_lock(root: Path, python: str, gpu: bool = False) -> Path:
    """The lock to install, once it is shown to exist and to pin everything pyproject.toml names."""
    lock = lock_path(root, python, gpu)
    shown = f"{LOCK_DIR}/{lock.name}"
    if not lock.is_file():
        raise EnvironmentSetupError(f"{shown} is missing: run `make lock` to generate it")
    extras = (*EXTRAS, GPU_EXTRA) if gpu else EXTRAS
    missing = unpinned(declared(read_pyproject(root), extras), lock.read_text())
    if missing:
        raise EnvironmentSetupError(
            f"{shown} does not match pyproject.toml: it pins no version of {', '.join(missing)}. "
            "Run `make lock` to regenerate it, and commit the lock with pyproject.toml"
        )
    return lock


def read_stamp(prefix: Path) -> dict | None:
    """What the environment at `prefix` was last synced from, or None."""
    try:
        return json.loads((Path(prefix) / STAMP).read_text())
    except (OSError, ValueError):
        return None


def stamp_for(root: Path, lock: Path, python_version: str) -> dict:
    """The stamp an environment built from `lock` carries: what a rebuild would change."""
    text = lock.read_text()
    return {
        "lock_file": lock.relative_to(root).as_posix(),
        "lock_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "pyproject_sha256": sha256(Path(root) / "pyproject.toml"),
        "python": python_version,
        "pins": pins(text),
    }


def installed(site_packages: list[str] | None = None) -> dict[str, str]:
    """The distributions installed on `site_packages` (default: this interpreter's path)."""
    from importlib import metadata

    dists = (
        metadata.distributions(path=site_packages) if site_packages else metadata.distributions()
    )
    return {canonical(d.metadata["Name"]): d.version for d in dists if d.metadata["Name"]}


def drift(locked: dict[str, str], present: dict[str, str]) -> list[str]:
    """Where the installed versions differ from the lock's pins (`name installed (lock pin)`)."""
    return [
        f"{name} {present.get(name, 'missing')} (lock {version})"
        for name, version in sorted(locked.items())
        if present.get(name) != version
    ]


def record(prefix: str = sys.prefix) -> dict:
    """The environment, for a training record or a package's lineage: the versions of Python
    and RECORDED_PACKAGES, and the lock the environment was built from with its SHA-256 and any
    drift from it since (all None when it was not built from a lock)."""
    present = installed()
    stamp = read_stamp(Path(prefix))
    result = {"python": platform.python_version()}
    result.update({name: present.get(canonical(name)) for name in RECORDED_PACKAGES})
    result["lock_file"] = stamp and stamp.get("lock_file")
    result["lock_sha256"] = stamp and stamp.get("lock_sha256")
    result["lock_drift"] = drift(stamp.get("pins", {}), present) if stamp else None
    return result


def venv_python(venv: Path) -> Path:
    """The interpreter of a virtual environment."""
    return Path(venv) / "bin" / "python"


def interpreter_version(python: Path) -> str | None:
    """The full version of an interpreter ("3.11.7"), or None if it does not run."""
    try:
        proc = subprocess.run(
            [str(python), "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except OSError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def site_packages(venv: Path) -> list[str]:
    """The site-packages directories of a virtual environment."""
    return [str(p) for p in sorted(Path(venv).glob("lib/python*/site-packages"))]


def _run(step: str, command: list[str], fix: str) -> None:
    """Run one install step, its output shown as it comes; a failure ends the sync with `fix`."""
    print(f"environment: {step}", flush=True)
    if subprocess.run(command).returncode != 0:
        raise EnvironmentSetupError(f"{step} failed (its error is above). {fix}")


def sync(root: Path, venv: Path, gpu: bool | None = None, python: str = sys.executable) -> str:
    """Create or refresh `venv` from the lock for this Python: install exactly what the lock
    pins, hash-checked, then the project itself (editable); nothing when the stamp says the
    environment already matches the lock and pyproject.toml. Returns what it did, in a line.

    `gpu` None keeps the lock kind the environment has (the CPU lock for a new one).
    """
    root, venv = Path(root).resolve(), Path(venv).resolve()
    version = interpreter_version(Path(python)) or platform.python_version()
    short = check_python(tuple(int(p) for p in re.findall(r"\d+", version)[:3]), python)
    old = read_stamp(venv)
    if gpu is None:
        gpu = bool(old and old.get("lock_file", "").endswith("-gpu.txt"))
    lock = check_lock(root, short, gpu)
    wanted = stamp_for(root, lock, version)
    current = interpreter_version(venv_python(venv))
    if current == version and old == wanted:
        return (
            f"{venv.name} is up to date with {wanted['lock_file']} ({wanted['lock_sha256'][:12]})"
        )

    if current != version:
        if venv.exists():
            print(f"environment: {venv} runs Python {current}, not {version}: rebuilding it")
        _run(
            f"creating {venv} with Python {version}",
            [python, "-m", "venv", "--clear", str(venv)],
            "On Debian/Ubuntu, `apt-get install python3-venv` provides the venv module",
        )
    (venv / STAMP).unlink(missing_ok=True)  # a sync cut short is not up to date
    target = str(venv_python(venv))
    regenerate = "If the lock is at fault, regenerate it with `make lock`"
    _run(
        f"installing {lock.relative_to(root)} (hash-checked)",
        [target, "-m", "pip", "install", "--require-hashes", "-r", str(lock)],
        regenerate,
    )
    project = canonical(read_pyproject(root)["project"]["name"])
    extra = sorted(set(installed(site_packages(venv))) - set(wanted["pins"]) - {project, *UNPINNED})
    if extra:
        _run(
            f"removing what the lock does not pin: {', '.join(extra)}",
            [target, "-m", "pip", "uninstall", "-y", *extra],
            f"Remove {venv} and run `make venv` again",
        )
    _run(
        "installing the project (editable, no dependencies: the lock has them all)",
        [target, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-e", str(root)],
        regenerate,
    )
    _run("checking that every requirement is met", [target, "-m", "pip", "check"], regenerate)
    (venv / STAMP).write_text(json.dumps(wanted, indent=1, sort_keys=True) + "\n")
    return f"{venv.name} built from {wanted['lock_file']} ({wanted['lock_sha256'][:12]})"


def write_stamp(root: Path, lock: Path, prefix: str = sys.prefix) -> str:
    """Stamp this interpreter's environment as built from `lock`, once every pin is installed
    (for an environment that pip installed from the lock directly, e.g. the Docker image)."""
    wanted = stamp_for(Path(root), Path(lock), platform.python_version())
    differences = drift(wanted["pins"], installed())
    if differences:
        raise EnvironmentSetupError(
            f"this environment does not match {lock}: {', '.join(differences)}"
        )
    (Path(prefix) / STAMP).write_text(json.dumps(wanted, indent=1, sort_keys=True) + "\n")
    return f"{prefix} stamped as built from {wanted['lock_file']}"


def uv_command(root: Path, venv: Path) -> str:
    """The `uv` to compile locks with: on PATH, or installed into `venv` from the lock's pin."""
    found = shutil.which("uv")
    if found:
        return found
    candidate = Path(venv) / "bin" / "uv"
    if candidate.exists():
        return str(candidate)
    lock = lock_path(root, LOCKED_PYTHONS[0])
    entry = re.search(
        r"^uv==.*?(?=^\S|\Z)", lock.read_text() if lock.is_file() else "", re.M | re.S
    )
    if entry is None:
        raise EnvironmentSetupError("uv is not installed: `pip install uv`, then `make lock`")
    if not venv_python(venv).exists():
        _run(f"creating {venv}", [sys.executable, "-m", "venv", str(venv)], "")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(entry.group(0))
    try:
        _run(
            "installing uv from the lock",
            [str(venv_python(venv)), "-m", "pip", "install", "--require-hashes", "-r", f.name],
            "Install uv by hand (`pip install uv`), then run `make lock`",
        )
    finally:
        os.unlink(f.name)
    return str(candidate)


def compile_command(
    uv: str, python: str, out: Path, gpu: bool, upgrade: bool, constraint: Path | None
) -> list[str]:
    """The `uv pip compile` that writes one lock: names, versions and hashes, no index URLs."""
    extras = (*EXTRAS, GPU_EXTRA) if gpu else EXTRAS
    command = [
        uv, "pip", "compile", "pyproject.toml", "-",  # stdin: the build system's requirements
        *(arg for extra in extras for arg in ("--extra", extra)),
        "--generate-hashes",
        "--python-version", python,
        "--python-platform", "linux",
        "--no-config",  # a user's uv.toml must not change the lock (or add index URLs to it)
        "--custom-compile-command", "make lock",
        "--quiet",
        "-o", str(out),
    ]  # fmt: skip
    if constraint is not None:
        command += ["-c", str(constraint)]
    if upgrade:
        command.append("--upgrade")
    return command


def regenerate(root: Path, venv: Path, upgrade: bool = False) -> list[Path]:
    """Write every lock from pyproject.toml; the GPU lock keeps the CPU lock's versions.

    Without `upgrade`, a version already in a lock stays unless pyproject.toml rules it out.
    """
    root = Path(root).resolve()
    uv = uv_command(root, venv)
    build = "\n".join(read_pyproject(root).get("build-system", {}).get("requires", []))
    written = []
    for python in LOCKED_PYTHONS:
        cpu = lock_path(root, python)
        cpu.parent.mkdir(exist_ok=True)
        for gpu in (False, True):
            out = lock_path(root, python, gpu).relative_to(root)
            constraint = cpu.relative_to(root) if gpu else None
            command = compile_command(uv, python, out, gpu, upgrade, constraint)
            proc = subprocess.run(command, cwd=root, input=build, text=True)
            if proc.returncode != 0:
                raise EnvironmentSetupError(f"uv could not write {out} (its error is above)")
            written.append(root / out)
    return written


@report_errors
def main(argv: list[str] | None = None) -> int:
    """`python3 -m fmnist.environment check|sync|stamp|lock` (PYTHONPATH=src; the Makefile)."""
    parser = argparse.ArgumentParser(prog="python3 -m fmnist.environment", description=__doc__)
    parser.add_argument("--root", type=Path, default=Path("."), help="the project checkout")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="is this Python covered, does the lock match?")
    sync_parser = sub.add_parser("sync", help="create or refresh the virtual environment")
    for p in (check, sync_parser):
        kind = p.add_mutually_exclusive_group()
        kind.add_argument("--gpu", action="store_true", default=None, help="the CUDA lock")
        kind.add_argument("--cpu", dest="gpu", action="store_false", help="the CPU lock")
    sync_parser.add_argument("--venv", type=Path, default=Path(".venv"))
    stamp = sub.add_parser("stamp", help="stamp this interpreter's environment (Docker)")
    stamp.add_argument("lock", type=Path)
    lock = sub.add_parser("lock", help="regenerate the locks from pyproject.toml")
    lock.add_argument("--venv", type=Path, default=Path(".venv"), help="where to install uv")
    lock.add_argument("--upgrade", action="store_true", help="newest versions allowed")
    args = parser.parse_args(argv)

    if args.command == "check":
        short = check_python(tuple(sys.version_info[:3]), sys.executable)
        print(f"environment: {check_lock(args.root, short, bool(args.gpu))} matches pyproject.toml")
    elif args.command == "sync":
        print(f"environment: {sync(args.root, args.venv, args.gpu)}")
    elif args.command == "stamp":
        print(f"environment: {write_stamp(args.root, args.root / args.lock)}")
    else:
        for path in regenerate(args.root, args.venv, args.upgrade):
            print(f"environment: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
