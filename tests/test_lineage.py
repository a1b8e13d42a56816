"""Lineage and remote checks on small hand-written dvc.lock files; the project's remote config."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from fake_gcs import free_port
from fmnist.dvcfiles import lock_outputs, lock_params
from fmnist.errors import PipelineError
from fmnist.tools.lineage import (
    DATASET_RECORD,
    NOT_RECORDED,
    TRAIN_RECORD,
    format_lineage,
    lineage_at,
)
from fmnist.tools.remote import (
    CacheObject,
    RemoteError,
    check_credentials,
    check_reachable,
    dvcfile_objects,
    endpoint,
    manifest_entries,
    referenced_objects,
    remote_errors,
)
from helpers import ROOT, TRAINING_ENVIRONMENT, git

SPEC = {
    "stages": {
        "fetch": {"outs": ["data/raw"]},
        "prepare": {
            "outs": ["data/prepared"],
            "metrics": [{"metrics/data.json": {"cache": False}}],
        },
        "train": {"outs": ["models/model.keras"]},
    }
}
LOCK = {
    "schema": "2.0",
    "stages": {
        "fetch": {
            "params": {"params.yaml": {"fetch.timeout_s": 30.0}},
            "outs": [{"path": "data/raw", "hash": "md5", "md5": "aa11.dir", "nfiles": 4}],
        },
        "prepare": {
            "deps": [{"path": "data/raw", "hash": "md5", "md5": "aa11.dir"}],
            "params": {"params.yaml": {"prepare.seed": 42}},
            "outs": [
                {"path": "data/prepared", "hash": "md5", "md5": "bb22.dir"},
                {"path": "metrics/data.json", "hash": "md5", "md5": "cc33"},
            ],
        },
        "train": {
            "params": {"params.yaml": {"train": {"epochs": 2, "reduce_lr": {"factor": 0.5}}}},
            "outs": [{"path": "models/model.keras", "md5": "dd44"}],  # a DVC 2 lock entry
        },
    },
}


def test_lock_outputs_flags_uncached_and_legacy_outputs():
    outs = {o.path: o for o in lock_outputs(LOCK, SPEC)}
    assert set(outs) == {"data/raw", "data/prepared", "metrics/data.json", "models/model.keras"}
    assert not outs["metrics/data.json"].cached and outs["data/prepared"].cached
    assert outs["models/model.keras"].legacy and not outs["data/raw"].legacy
    assert outs["data/prepared"].stage == "prepare" and outs["data/raw"].md5 == "aa11.dir"


def test_lock_params_merges_every_stage_into_dotted_keys():
    assert lock_params(LOCK) == {
        "fetch.timeout_s": 30.0,
        "prepare.seed": 42,
        "train.epochs": 2,
        "train.reduce_lr.factor": 0.5,
    }


def test_dvcfile_outputs_are_relative_to_the_repo_and_skip_uncached_ones():
    dvcfile = {
        "outs": [
            {"path": "images", "md5": "ee55.dir", "hash": "md5"},
            {"path": "notes.txt", "md5": "ff66", "hash": "md5", "cache": False},
        ]
    }
    assert dvcfile_objects(dvcfile, "extra/images.dvc") == [
        CacheObject("extra/images", "ee55.dir", legacy=False)
    ]


def test_manifest_entries_name_each_file_of_a_directory():
    manifest = json.dumps([{"md5": "01", "relpath": "a.npz"}, {"md5": "02", "relpath": "b/c"}])
    entries = manifest_entries(CacheObject("data/prepared", "bb22.dir", False), manifest.encode())
    assert entries == [
        CacheObject("data/prepared/a.npz", "01", False),
        CacheObject("data/prepared/b/c", "02", False),
    ]


def test_endpoint_of_gcs_emulator_and_local_remotes():
    assert endpoint({"url": "gs://b/p"}) == ("storage.googleapis.com", 443)
    assert endpoint({"url": "gs://b/p", "endpointurl": "http://127.0.0.1:4443"}) == (
        "127.0.0.1",
        4443,
    )
    assert endpoint({"url": "/srv/dvc-store"}) is None


def test_an_unreachable_endpoint_is_named_with_its_remote():
    port = free_port()  # nothing listens there
    config = {"url": "gs://b/p", "endpointurl": f"http://127.0.0.1:{port}"}
    with pytest.raises(RemoteError, match=rf"remote 'gcs' \(gs://b/p\).*127\.0\.0\.1:{port}"):
        check_reachable("gcs", config, timeout=2)


def test_credential_files_are_checked_before_use(tmp_path):
    key = tmp_path / "key.json"
    with pytest.raises(RemoteError, match="credentialpath .*key.json"):
        check_credentials("gcs", {"credentialpath": str(key)})  # absent
    key.write_text("{not json")
    with pytest.raises(RemoteError, match="is not JSON"):
        check_credentials("gcs", {"credentialpath": str(key)})
    key.write_text('{"client_email": "x"}')
    with pytest.raises(RemoteError, match="not a Google credentials file"):
        check_credentials("gcs", {"credentialpath": str(key)})
    key.write_text('{"type": "service_account"}')
    check_credentials("gcs", {"credentialpath": str(key)})
    check_credentials("gcs", {})  # application default credentials: nothing to check here


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (FileNotFoundError("b/fmnist"), "not found"),
        (OSError("Forbidden: b/fmnist/o"), "access denied"),
        (RuntimeError("401 Invalid Credentials"), "access denied"),
        (RuntimeError("boom"), "boom"),
    ],
)
def test_storage_errors_become_one_sentence_naming_the_remote(error, expected):
    expected_message = rf"remote 'gcs' \(gs://fmnist/s\): .*{expected}"
    with pytest.raises(RemoteError, match=expected_message), remote_errors("gcs", "gs://fmnist/s"):
        raise error


LOCK_FILE = "requirements/lock-py3.11.txt"
LOCK_TEXT = "numpy==2.4.6 \\\n    --hash=sha256:00\n"
LOCK_SHA256 = hashlib.sha256(LOCK_TEXT.encode()).hexdigest()
# What `device.setup` records, the environment and the resolved `auto` settings among it.
RECORD = {
    **TRAINING_ENVIRONMENT,
    "lock_file": LOCK_FILE,
    "lock_sha256": LOCK_SHA256,
    "train_seconds": 465.1,
}
CUSTOM = {
    "canonical": False,
    "train": {"examples": 60_010, "added": 10, "removed": 0, "relabelled": 2},
    "test": {"examples": 10_000, "added": 0, "removed": 0, "relabelled": 0},
}


@pytest.fixture
def lock_repo(tmp_path):
    """A git repo with a committed dvc.yaml, dvc.lock and one `.dvc` file (no DVC run)."""
    repo = tmp_path / "repo"
    (repo / "extra").mkdir(parents=True)
    git("init", "-q", cwd=repo)
    git("config", "user.email", "test@example.com", cwd=repo)
    git("config", "user.name", "test", cwd=repo)
    (repo / "README").write_text("before the pipeline ran\n")
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "start", cwd=repo)
    (repo / "dvc.yaml").write_text(yaml.safe_dump(SPEC))
    (repo / "dvc.lock").write_text(yaml.safe_dump(LOCK))
    (repo / "extra/images.dvc").write_text(
        yaml.safe_dump({"outs": [{"path": "images", "md5": "ee55.dir", "hash": "md5"}]})
    )
    (repo / "requirements").mkdir()
    (repo / LOCK_FILE).write_text(LOCK_TEXT)
    (repo / TRAIN_RECORD).parent.mkdir(parents=True)
    (repo / TRAIN_RECORD).write_text(json.dumps(RECORD))
    (repo / DATASET_RECORD).write_text(json.dumps(CUSTOM))
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "ran", cwd=repo)
    git("tag", "model@v1.0.0", cwd=repo)
    (repo / "dvc.lock").write_text("changed in the workspace only")
    return repo


def test_lineage_reads_what_is_committed_at_a_rev(lock_repo):
    record = lineage_at(lock_repo, "model@v1.0.0")
    assert record["commit"] == git("rev-parse", "HEAD", cwd=lock_repo).strip()
    assert record["data"] == {"data/raw": "aa11.dir", "data/prepared": "bb22.dir"}
    assert record["model"] == {"models/model.keras": "dd44"}
    assert record["params"]["train.epochs"] == 2
    with pytest.raises(PipelineError, match="HEAD~1 has no dvc.lock"):
        lineage_at(lock_repo, "HEAD~1")
    with pytest.raises(PipelineError, match="'nope' is not a commit"):
        lineage_at(lock_repo, "nope")


def test_lineage_holds_the_training_environment_and_the_committed_lock(lock_repo):
    record = lineage_at(lock_repo, "model@v1.0.0")
    assert record["environment"] == {k: v for k, v in RECORD.items() if k != "train_seconds"}
    assert record["locks"] == {LOCK_FILE: LOCK_SHA256}
    text = format_lineage(record)
    assert f"env      lock_sha256 = {LOCK_SHA256}" in text.splitlines()
    assert "env      precision = mixed_bfloat16" in text.splitlines()
    assert "env      tensorflow = 2.21.0" in text.splitlines()
    assert f"lock     {LOCK_SHA256}  {LOCK_FILE}" in text.splitlines()
    assert "note" not in text


def test_lineage_notes_a_lock_changed_after_training_and_a_record_without_environment(
    lock_repo,
):
    (lock_repo / LOCK_FILE).write_text(LOCK_TEXT.replace("2.4.6", "2.4.7"))
    git("commit", "-qm", "relock without retraining", LOCK_FILE, cwd=lock_repo)
    text = format_lineage(lineage_at(lock_repo, "HEAD"))
    assert f"note     the model was trained with another {LOCK_FILE}" in text
    # A record from before the environment was recorded: every field says so.
    (lock_repo / TRAIN_RECORD).write_text(json.dumps({"precision": "float32"}))
    git("commit", "-qm", "an old record", TRAIN_RECORD, cwd=lock_repo)
    env = lineage_at(lock_repo, "HEAD")["environment"]
    assert env["precision"] == "float32" and env["lock_sha256"] == NOT_RECORDED
    (lock_repo / TRAIN_RECORD).write_text("{oops")
    git("commit", "-qm", "a broken record", TRAIN_RECORD, cwd=lock_repo)
    with pytest.raises(PipelineError, match=r"metrics/runs/train.json at [0-9a-f]{40} is not JSON"):
        lineage_at(lock_repo, "HEAD")


def test_lineage_says_which_dataset_version_made_the_model(lock_repo):
    record = lineage_at(lock_repo, "model@v1.0.0")
    assert record["dataset"] == CUSTOM
    text = format_lineage(record)
    assert (
        "dataset  custom, against canonical Fashion-MNIST: train 60,010 examples (+10 added, "
        "2 relabelled), test 10,000 examples (unchanged)"
    ) in text.splitlines()
    git("rm", "-q", DATASET_RECORD, cwd=lock_repo)
    git("commit", "-qm", "no record", cwd=lock_repo)
    text = format_lineage(lineage_at(lock_repo, "HEAD"))
    assert "dataset  unknown (no metrics/dataset.json at this rev)" in text


def test_referenced_objects_cover_the_lock_and_dvc_files(lock_repo):
    objects = referenced_objects(lock_repo, "HEAD")
    assert [(o.path, o.md5) for o in objects] == [
        ("data/prepared", "bb22.dir"),
        ("data/raw", "aa11.dir"),
        ("extra/images", "ee55.dir"),
        ("models/model.keras", "dd44"),
    ]  # metrics/data.json is `cache: false`: kept in git, never pushed


def test_the_project_has_a_default_local_remote_and_a_gcs_remote():
    config = (ROOT / ".dvc/config").read_text()
    remotes = dict(re.findall(r"\['remote \"(\w+)\"'\]\s+url = (\S+)", config))
    assert re.search(r"^\s*remote = local$", config, re.M)
    assert remotes["gcs"].startswith("gs://")
    # Relative to .dvc/: a sibling of the repo, so the store is never inside the workspace.
    assert (ROOT / ".dvc" / remotes["local"]).resolve().parent == ROOT.parent.resolve()
    assert "/config.local" in (ROOT / ".dvc/.gitignore").read_text().split()
    # Credentials are per machine: config.local, application default credentials, the env.
    assert not re.search(r"credentialpath|keyfile|access_key|secret", config)


KEY_NAMES = re.compile(r"(^|/)(config\.local|.*credential.*\.json|.*\.(pem|p12|key))$", re.I)
# Spelled in pieces so that this file (and the tests that mention the words) do not match.
PRIVATE_KEY_FIELD = '"private' + '_key"'
KEY_TEXT = re.compile(PRIVATE_KEY_FIELD + "|-----BEGIN [A-Z ]*PRIVATE" + " KEY-----")


def tracked_secrets(repo: Path) -> list[str]:
    """Tracked files that are, or hold, a credential (a key file, a private key, config.local)."""
    names = subprocess.run(
        ["git", "ls-files"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.split()
    found = []
    for name in names:
        path = repo / name
        text = path.read_text(errors="ignore") if path.is_file() else ""
        if KEY_NAMES.search(name) or KEY_TEXT.search(text):
            found.append(name)
    return found


def test_no_credential_file_or_key_is_tracked_by_git():
    assert tracked_secrets(ROOT) == []


def test_the_credential_guard_finds_a_committed_key(tmp_path):
    repo = tmp_path / "repo"
    (repo / ".dvc").mkdir(parents=True)
    git("init", "-q", cwd=repo)
    (repo / "sa.json").write_text('{"type": "service_account", ' + PRIVATE_KEY_FIELD + ': "x"}')
    (repo / ".dvc/config.local").write_text("")
    (repo / "ok.txt").write_text("nothing secret")
    git("add", "-A", cwd=repo)
    assert tracked_secrets(repo) == [".dvc/config.local", "sa.json"]
