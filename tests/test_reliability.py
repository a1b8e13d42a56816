"""The pipeline's promises, tested by forcing the failure: reruns, SIGKILL, a full disk."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

import helpers
from fmnist import atomic
from fmnist.training import history
from helpers import dvc

pytestmark = pytest.mark.slow

# What the run record may legitimately change between two identical runs.
TIMING_FIELDS = ("train_seconds", "images_per_second")
RUN_RECORD = "metrics/runs/train.json"


def outputs(repo) -> dict:
    """The files that must not change when nothing that made them changed."""
    record = json.loads((repo / RUN_RECORD).read_text())
    return {
        "model": (repo / "models/model.keras").read_bytes(),
        "package model": (repo / "models/package/model.keras").read_bytes(),
        "eval": (repo / "metrics/eval.json").read_text(),
        "per class": (repo / "metrics/per_class.csv").read_text(),
        "predictions": (repo / "metrics/predictions.csv").read_text(),
        "train metrics": (repo / "metrics/train.json").read_text(),
        "run record": {k: v for k, v in record.items() if k not in TIMING_FIELDS},
        "log": history.read_history(repo / "metrics/train").to_dict("list"),
        "figures": {p.name: p.read_bytes() for p in (repo / "metrics/figures").glob("*.png")},
        # The whole package, its SavedModel included: the hash dvc.lock records for it.
        "package": atomic.dir_md5(repo / "models/package"),
    }


def test_forced_rerun_gives_byte_identical_model_and_metrics(reproduced_repo, tmp_path):
    repo = tmp_path / "copy"
    shutil.copytree(reproduced_repo, repo, symlinks=True)
    helpers.git("add", "-A", cwd=repo)
    helpers.git("commit", "-qm", "first run", cwd=repo)
    first = outputs(repo)
    out = dvc("repro", "-f", cwd=repo).stdout
    assert "Running stage 'train'" in out  # really retrained, not restored from the cache
    second = outputs(repo)
    for name in first:
        assert first[name] == second[name], f"{name} differs between two identical runs"
    # Its time and speed differ, but they are a record of the run, not a metric of the model.
    assert json.loads(dvc("metrics", "diff", "--json", cwd=repo).stdout) == {}
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["package"]["outs"]
    (locked,) = [out["md5"] for out in lock if out["path"] == "models/package"]
    assert locked == second["package"]  # run twice, one package hash: what is registered


# Long enough to be killed in the middle; the schedules are on so that their state must survive
# the kill (ReduceLROnPlateau cuts the rate, EarlyStopping keeps the best weights).
RESUMABLE = {
    "train.epochs": 8,
    "train.schedule": "plateau",
    "train.reduce_lr.patience": 1,
    "train.early_stopping.patience": 8,
}


def checkpointed_epochs(repo) -> int:
    """Epochs the training backup in `repo` holds (0 when there is none)."""
    states = list((repo / ".cache/train-backup").glob("*/state.json"))
    return json.loads(states[0].read_text())["epochs_done"] if states else 0


def test_training_killed_with_sigkill_resumes_and_matches_an_uninterrupted_run(
    tmp_path, idx_source
):
    reference = helpers.make_tiny_repo(tmp_path / "reference", idx_source, RESUMABLE)
    dvc("repro", "prepare", cwd=reference)
    repo = tmp_path / "killed"
    shutil.copytree(reference, repo, symlinks=True)  # the same data, prepared once
    dvc("repro", "train", cwd=reference)

    env = {**os.environ, "PYTHONPATH": str(helpers.ROOT / "src")}
    run = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "train"],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill reaches the stage too
    )
    while checkpointed_epochs(repo) < 1 and run.poll() is None:
        time.sleep(0.02)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    done = checkpointed_epochs(repo)
    assert 1 <= done < RESUMABLE["train.epochs"], "not killed in the middle of training"
    assert not (repo / "models/model.keras").exists()

    out = dvc("repro", "train", cwd=repo).stdout
    assert f"resuming after epoch {done}" in out
    assert f"Epoch {done + 1}/8" in out and "Epoch 1/8" not in out  # no epoch trained twice
    log = history.read_history(repo / "metrics/train")
    assert log["step"].tolist() == list(range(8))  # the log continued: each epoch once
    assert log.to_dict("list") == history.read_history(reference / "metrics/train").to_dict("list")
    assert (repo / "models/model.keras").read_bytes() == (
        reference / "models/model.keras"
    ).read_bytes()
    record = json.loads((repo / RUN_RECORD).read_text())
    assert record["epochs_run"] == 8 and record["resumed_after_epoch"] == done
    assert not list((repo / ".cache/train-backup").iterdir())  # removed after success


def test_a_backup_removed_after_success_takes_a_write_a_kill_cut_short_with_it(tmp_path):
    """A SIGKILL during a backup's write leaves its temporary sibling (the test above, when the
    kill lands mid-write); removing the backup after success removes that too, and only that."""
    backups = tmp_path / "train-backup"
    killed_mid_write = (
        "import os\n"
        "from fmnist import atomic\n"
        f"with atomic.atomic_path({str(backups / 'abc')!r}) as tmp:\n"
        "    tmp.mkdir()\n"
        "    (tmp / 'state.json').write_text('{}')\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(helpers.ROOT / "src")}
    proc = subprocess.run([sys.executable, "-c", killed_mid_write], env=env, check=False)
    assert proc.returncode == -signal.SIGKILL
    with atomic.atomic_path(backups / "abc") as tmp:  # the resumed run's backup, completed
        tmp.mkdir()
    with atomic.atomic_path(backups / "other-run") as tmp:
        tmp.mkdir()
    assert len(list(backups.iterdir())) == 3  # the two backups and the cut-short write
    atomic.remove(backups / "abc")
    assert [p.name for p in backups.iterdir()] == ["other-run"]


def limit_file_size(max_bytes: int):
    """For `preexec_fn`: files can grow to `max_bytes`, as on a disk that is almost full."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))


def test_a_full_disk_stops_a_stage_with_a_clear_error_and_no_partial_output(tiny_repo):
    dvc("repro", "fetch", cwd=tiny_repo)
    # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG, like ENOSPC would.
    proc = helpers.run(
        [sys.executable, "-m", "fmnist.stages.prepare"],
        cwd=tiny_repo,
        check=False,
        preexec_fn=limit_file_size(64 * 1024),
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: cannot write data/prepared")
    assert "File too large" in proc.stderr
    assert not (tiny_repo / "data/prepared").exists()
    assert not list((tiny_repo / "data").glob(".prepared.*"))  # no temporary left behind
