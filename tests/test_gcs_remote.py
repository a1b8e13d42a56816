"""The `gcs` DVC remote against a real GCS API (fake-gcs-server on loopback), with real `dvc`.

One module-scoped repo holds two model versions (two commits, different params) pushed to the
emulator; the tests clone it, pull, ask for lineage, break the bucket and stop the server.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import helpers
from fake_gcs import FakeGcs
from helpers import dvc, git

pytestmark = pytest.mark.slow

BUCKET = "fmnist"
MODEL = "models/model.keras"
# gcsfs asks a gRPC API the emulator lacks for the bucket layout (60 s per try) unless told
# not to; the fmnist commands set this themselves when `endpointurl` is set, plain dvc not.
DVC_ENV = {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


def fmnist(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return helpers.run([sys.executable, "-m", "fmnist.cli", *args], cwd=cwd, check=check)


def gcs_dvc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return dvc(*args, cwd=cwd, check=check, env=DVC_ENV)


def use_server(repo: Path, server: FakeGcs, url: str | None = None, **extra: str) -> None:
    """This machine's settings for the `gcs` remote in config.local, as for real credentials.

    Written directly rather than with three `dvc remote modify --local` calls, to save time.
    """
    settings = {"endpointurl": server.url, "allow_anonymous_login": "true", **extra}
    if url:
        settings["url"] = url
    lines = "".join(f"    {key} = {value}\n" for key, value in settings.items())
    (repo / ".dvc/config.local").write_text(f"['remote \"gcs\"']\n{lines}")


def snapshot(repo: Path) -> dict[str, str]:
    """md5 of every file of the workspace and DVC cache (not git's, not DVC's tmp/locks)."""
    return {
        str(path.relative_to(repo)): hashlib.md5(path.read_bytes()).hexdigest()
        for path in sorted(repo.rglob("*"))
        if path.is_file() and not path.is_symlink()
        and not str(path.relative_to(repo)).startswith((".git/", ".dvc/tmp/"))
    }  # fmt: skip


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    server = FakeGcs(tmp_path_factory.mktemp("gcs")).start()
    server.create_bucket(BUCKET)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def versions(reproduced_repo, gcs, tmp_path_factory):
    """A repo with two model versions (v1 tagged model@v1.0.0), both pushed to the emulator."""
    origin = tmp_path_factory.mktemp("versions") / "origin"
    shutil.copytree(reproduced_repo, origin, symlinks=True)
    # The remote is part of the project (committed); where it is served from is per machine.
    dvc("remote", "add", "-d", "gcs", f"gs://{BUCKET}/store", cwd=origin)
    use_server(origin, gcs)
    git("add", "-A", cwd=origin)
    git("commit", "-qm", "v1", cwd=origin)
    git("tag", "model@v1.0.0", cwd=origin)
    v1 = (origin / MODEL).read_bytes()
    fmnist("push", "-r", "gcs", cwd=origin)

    helpers.set_params(origin / "params.yaml", {"train.learning_rate": 0.005})
    dvc("repro", cwd=origin)
    git("add", "-A", cwd=origin)
    git("commit", "-qm", "v2", cwd=origin)
    v2 = (origin / MODEL).read_bytes()
    fmnist("push", "-r", "gcs", cwd=origin)
    assert v1 != v2
    return {"origin": origin, "v1": v1, "v2": v2}


def test_fresh_clone_pulls_exactly_the_pushed_pipeline(versions, gcs, tmp_path):
    clone = tmp_path / "clone"
    git("clone", "-q", str(versions["origin"]), str(clone), cwd=tmp_path)
    assert not (clone / ".dvc/cache").exists() and not (clone / MODEL).exists()
    use_server(clone, gcs)

    fmnist("pull", "-r", "gcs", cwd=clone)
    assert (clone / MODEL).read_bytes() == versions["v2"]
    assert "up to date" in dvc("status", cwd=clone).stdout
    assert "Running stage" not in dvc("repro", cwd=clone).stdout

    # The first model version, from the same remote, byte for byte.
    git("checkout", "-q", "model@v1.0.0", cwd=clone)
    gcs_dvc("pull", "-r", "gcs", cwd=clone)
    assert (clone / MODEL).read_bytes() == versions["v1"]
    assert "up to date" in dvc("status", cwd=clone).stdout


def test_lineage_names_data_params_code_and_model_of_each_version(versions):
    origin = versions["origin"]
    v1 = json.loads(fmnist("lineage", "model@v1.0.0", "--json", cwd=origin).stdout)
    v2 = json.loads(fmnist("lineage", "--json", cwd=origin).stdout)

    assert v1["commit"] == git("rev-parse", "model@v1.0.0", cwd=origin).strip()
    assert v2["commit"] == git("rev-parse", "HEAD", cwd=origin).strip()
    # DVC's hash of a file is the MD5 of its bytes: the model each version really made.
    assert v1["model"][MODEL] == hashlib.md5(versions["v1"]).hexdigest()
    assert v2["model"][MODEL] == hashlib.md5(versions["v2"]).hexdigest()
    assert v1["params"]["train.learning_rate"] == 0.01
    assert v2["params"]["train.learning_rate"] == 0.005
    # Same data for both versions: a directory's hash is its manifest's, ending in ".dir".
    for path in ("data/raw", "data/prepared"):
        assert v1["data"][path] == v2["data"][path] and v1["data"][path].endswith(".dir")
    text = fmnist("lineage", "model@v1.0.0", cwd=origin).stdout
    assert v1["data"]["data/raw"] in text and "train.learning_rate = 0.01" in text


def test_verify_remote_finds_an_object_deleted_from_the_bucket(versions, gcs, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(versions["origin"], repo, symlinks=True)
    use_server(repo, gcs, url=f"gs://{BUCKET}/verify")
    fmnist("push", "-r", "gcs", cwd=repo)
    out = fmnist("verify-remote", "-r", "gcs", cwd=repo).stdout
    assert "has all" in out

    # One file inside the data/prepared directory output disappears from the bucket.
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    prepared = lock["stages"]["prepare"]["outs"][0]
    assert prepared["path"] == "data/prepared"
    manifest = repo / ".dvc/cache/files/md5" / prepared["md5"][:2] / prepared["md5"][2:]
    entry = next(e for e in json.loads(manifest.read_text()) if e["relpath"] == "train.npz")
    gcs.delete(BUCKET, f"verify/files/md5/{entry['md5'][:2]}/{entry['md5'][2:]}")
    # DVC takes a directory whose manifest is in the remote to be complete: it pushes nothing.
    assert "up to date" in gcs_dvc("push", "-r", "gcs", cwd=repo).stdout

    broken = fmnist("verify-remote", "-r", "gcs", cwd=repo, check=False)
    assert broken.returncode == 1
    assert f"missing: data/prepared/train.npz (md5 {entry['md5']})" in broken.stdout
    assert broken.stdout.count("missing:") == 1
    assert "remote 'gcs' lacks 1 of the" in broken.stderr

    repaired = fmnist("verify-remote", "-r", "gcs", "--repair", cwd=repo)
    assert "uploaded: data/prepared/train.npz" in repaired.stdout
    assert fmnist("verify-remote", "-r", "gcs", cwd=repo).returncode == 0


def test_a_push_cut_off_when_the_server_stops_completes_later(versions, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(versions["origin"], repo, symlinks=True)
    server = FakeGcs(tmp_path / "gcs").start()
    try:
        server.create_bucket(BUCKET)
        use_server(repo, server)
        fmnist("push", "-r", "gcs", "fetch", cwd=repo)  # the raw data gets there ...
        pushed = server.objects(BUCKET)
        before = snapshot(repo)
        server.stop()  # ... then the server goes away

        failed = fmnist("push", "-r", "gcs", cwd=repo, check=False)
        assert failed.returncode == 1
        assert "remote 'gcs'" in failed.stderr and "cannot connect" in failed.stderr
        assert snapshot(repo) == before

        server.start()  # same port, same data: what was pushed is still there
        assert server.objects(BUCKET) == pushed
        assert fmnist("verify-remote", "-r", "gcs", cwd=repo, check=False).returncode == 1
        fmnist("push", "-r", "gcs", cwd=repo)
        assert fmnist("verify-remote", "-r", "gcs", cwd=repo).returncode == 0
        assert snapshot(repo) == before
    finally:
        server.stop()


def test_a_missing_bucket_is_named_and_a_push_after_creating_it_succeeds(versions, gcs, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(versions["origin"], repo, symlinks=True)
    use_server(repo, gcs, url="gs://absent/store")
    before = snapshot(repo)

    for command in ("push", "pull"):
        failed = fmnist(command, "-r", "gcs", cwd=repo, check=False)
        assert failed.returncode == 1
        assert "remote 'gcs'" in failed.stderr and "bucket 'absent' does not exist" in failed.stderr
    assert snapshot(repo) == before

    gcs.create_bucket("absent")
    fmnist("push", "-r", "gcs", cwd=repo)
    assert fmnist("verify-remote", "-r", "gcs", cwd=repo).returncode == 0


def test_bad_credentials_are_named_before_any_transfer(versions, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(versions["origin"], repo, symlinks=True)
    key = tmp_path / "key.json"
    key.write_text("not a key")
    use_server(repo, FakeGcs(tmp_path), credentialpath=str(key))  # never started
    before = snapshot(repo)
    failed = fmnist("push", "-r", "gcs", cwd=repo, check=False)
    assert failed.returncode == 1
    assert f"remote 'gcs': credentialpath {key} is not JSON" in failed.stderr
    assert snapshot(repo) == before
