"""A remote that dies during a push or pull: one error line within a bounded wait, never a
traceback, and a later transfer completes. The slow tests kill fake-gcs-server mid-transfer."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import helpers
from fake_gcs import FakeGcs
from fmnist.tools import remote
from fmnist.tools.remote import RemoteError
from helpers import dvc, git

BUCKET = "fmnist"


def test_the_wait_comes_from_the_option_the_environment_or_the_default():
    assert remote.transfer_timeout(None, {}) == remote.DEFAULT_TIMEOUT_S
    assert remote.transfer_timeout(None, {remote.TIMEOUT_ENV: "5"}) == 5.0
    assert remote.transfer_timeout(2.5, {remote.TIMEOUT_ENV: "5"}) == 2.5
    for bad in ("soon", "0", "-1", "inf"):
        with pytest.raises(RemoteError, match=f"{remote.TIMEOUT_ENV} must be a number"):
            remote.transfer_timeout(None, {remote.TIMEOUT_ENV: bad})


def sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def test_supervise_stops_a_transfer_whose_remote_stays_unreachable():
    proc = sleeper()
    probes = []

    def down(address):
        probes.append(address)
        return "Connection refused"

    assert remote.supervise(proc, ("host", 1), 1.5, probe=down) == "Connection refused"
    assert proc.returncode is not None  # stopped, not left running
    assert len(probes) >= 2 and set(probes) == {("host", 1)}


def test_supervise_waits_out_a_remote_that_comes_back():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(4)"])
    answers = iter(["Connection refused", None, "Connection refused", None] + [None] * 100)
    assert remote.supervise(proc, ("host", 1), 1.5, probe=lambda _: next(answers)) is None
    assert proc.returncode == 0  # ran to its end: each outage was shorter than the wait


def test_supervise_does_not_probe_a_local_remote():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    assert remote.supervise(proc, None, 0.1, probe=lambda _: pytest.fail("probed")) is None


# --- the real thing: fake-gcs-server killed during a transfer -------------------------------


def fmnist(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "fmnist.cli", *args]
    return helpers.run(cmd, cwd=cwd, check=False, timeout=300, **kwargs)


def use_server(repo: Path, server: FakeGcs) -> None:
    (repo / ".dvc/config.local").write_text(
        f"['remote \"gcs\"']\n    endpointurl = {server.url}\n    allow_anonymous_login = true\n"
    )


def kill_when(server: FakeGcs, started) -> threading.Thread:
    """Kill the server, as a crash would, once `started()` says the transfer is under way."""

    def watch():
        deadline = time.monotonic() + 120
        while not started() and time.monotonic() < deadline:
            time.sleep(0.01)
        server.process.kill()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def one_error_line(stderr: str) -> str:
    """The one error line of a failed transfer (no traceback, no second error)."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.lower().startswith("error")]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.fixture
def data_repo(tmp_path):
    """A git+DVC repo with 40 MB in 20 files under DVC, and a `gcs` remote on a fake server."""
    repo = tmp_path / "repo"
    (repo / "blobs").mkdir(parents=True)
    git("init", "-q", cwd=repo)
    dvc("init", "-q", cwd=repo)
    for i in range(20):
        (repo / "blobs" / f"{i:02d}.bin").write_bytes(os.urandom(2 * 2**20))
    dvc("add", "blobs", cwd=repo)
    dvc("remote", "add", "-d", "gcs", f"gs://{BUCKET}/store", cwd=repo)
    git("add", "-A", cwd=repo)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "data", cwd=repo)
    server = FakeGcs(tmp_path / "gcs").start()
    server.create_bucket(BUCKET)
    use_server(repo, server)
    yield repo, server
    server.stop()


@pytest.mark.slow
def test_a_server_killed_during_a_push_gives_one_line_and_a_later_push_completes(data_repo):
    repo, server = data_repo
    store = server.root / BUCKET / "store" / "files"
    killer = kill_when(server, lambda: store.exists() and any(store.rglob("*")))
    failed = fmnist("push", "-r", "gcs", "--timeout", "3", cwd=repo)
    killer.join()
    assert failed.returncode == 1
    line = one_error_line(failed.stderr)
    assert line.startswith(f"error: remote 'gcs' (gs://{BUCKET}/store): 127.0.0.1:{server.port}")
    assert "stopped answering during `dvc push` (Connection refused for 3 s;" in line
    assert line.endswith(
        "rerun `fmnist push -r gcs` to finish (only what is missing is transferred)"
    )

    server.start()  # same port, same data
    assert len(server.objects(BUCKET)) < 21  # cut off: not all of 20 files and a manifest
    done = fmnist("push", "-r", "gcs", cwd=repo)
    assert done.returncode == 0, done.stderr
    assert len(server.objects(BUCKET)) == 21
    assert fmnist("verify-remote", "-r", "gcs", cwd=repo).returncode == 0


@pytest.mark.slow
def test_a_server_killed_during_a_pull_gives_one_line_and_a_later_pull_completes(
    data_repo, tmp_path
):
    repo, server = data_repo
    assert fmnist("push", "-r", "gcs", cwd=repo).returncode == 0
    clone = tmp_path / "clone"
    shutil.copytree(repo, clone, ignore=shutil.ignore_patterns("cache", "blobs", "tmp"))
    cache = clone / ".dvc" / "cache" / "files"
    killer = kill_when(server, lambda: cache.exists() and any(cache.rglob("*")))
    failed = fmnist("pull", "-r", "gcs", "--timeout", "3", cwd=clone)
    killer.join()
    assert failed.returncode == 1
    assert "stopped answering during `dvc pull`" in one_error_line(failed.stderr)

    server.start()
    done = fmnist("pull", "-r", "gcs", cwd=clone)
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in (repo / "blobs").iterdir())
    assert sorted(p.name for p in (clone / "blobs").iterdir()) == names
    match, mismatch, errors = filecmp.cmpfiles(repo / "blobs", clone / "blobs", names, False)
    assert len(match) == 20 and not mismatch and not errors
