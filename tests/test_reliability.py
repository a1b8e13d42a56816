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
from fmnist import atomic, processes
from fmnist.training import history
from helpers import dvc

pytestmark = pytest.mark.slow

RUN_RECORD = "metrics/runs/train.json"


def outputs(repo) -> dict:
    """The files that must not change when nothing that made them changed."""
    return {
        "model": (repo / "models/model.keras").read_bytes(),
        "package model": (repo / "models/package/model.keras").read_bytes(),
        "eval": (repo / "metrics/eval.json").read_text(),
        "per class": (repo / "metrics/per_class.csv").read_text(),
        "predictions": (repo / "metrics/predictions.csv").read_text(),
        "train metrics": (repo / "metrics/train.json").read_text(),
        # Whole: the run's time and speed are in metrics/runs/train_speed.json.
        "run record": json.loads((repo / RUN_RECORD).read_text()),
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


def test_retraining_the_same_model_leaves_evaluate_and_package_to_be_skipped(
    reproduced_repo, tmp_path
):
    repo = tmp_path / "copy"
    shutil.copytree(reproduced_repo, repo, symlinks=True)
    speed = json.loads((repo / "metrics/runs/train_speed.json").read_text())
    assert speed["train_seconds"] > 0 and speed["images_per_second"] > 0
    out = dvc("repro", "-f", "-s", "train", cwd=repo).stdout
    assert "Running stage 'train'" in out
    # The timings changed, but no later stage reads them: every input is as it was.
    out = dvc("repro", cwd=repo).stdout
    assert "Running stage" not in out, out
    assert "Stage 'package' didn't change, skipping" in out


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

    run = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "train"],
        cwd=repo,
        env=helpers.checkout_env(),
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


def writer(path, then: str) -> list[str]:
    """The command of a real writer of `path` that writes "theirs" to its temporary sibling
    inside `atomic_path`, then runs the Python line `then` before the write is moved into place."""
    code = (
        "import os, sys\n"
        "from fmnist import atomic\n"
        "with atomic.atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_text('theirs')\n"
        f"    {then}\n"
    )
    return [sys.executable, "-c", code, str(path)]


def write_killed(path) -> None:
    """A real writer of `path` SIGKILLed inside `atomic_path`, its temporary sibling written."""
    killed = helpers.run(writer(path, "os.kill(os.getpid(), 9)"), cwd=helpers.ROOT, check=False)
    assert killed.returncode == -signal.SIGKILL


def names(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_the_next_write_of_a_path_removes_what_a_killed_writer_of_it_left(tmp_path):
    """A SIGKILL mid-write leaves a temporary sibling that git does not see; the next write of
    that path removes it, and older versions' (no machine or PID in their names) too, and no
    other path's."""
    out = tmp_path / "metrics"
    write_killed(out / "eval.json")
    write_killed(out / "eval.json.bak")  # another path whose name starts the same
    (out / ".eval.json.q1w2e3r4.tmp").mkdir()  # left by a version without PIDs in the names
    # and by one without the machine: a PID above Linux's largest, so no process has it
    (out / ".eval.json.4194305-q1w2e3r4.tmp").mkdir()
    # Numbers no process can have, which `os.kill` would read as this process's group or
    # refuse as too large: no writer of them is running.
    (out / ".eval.json.0-q1w2e3r4.tmp").mkdir()
    (out / f".eval.json.{atomic._machine()}-99999999999-q1w2e3r4.tmp").mkdir()
    partials = names(out)
    assert len(partials) == 6 and all(n.endswith(".tmp") for n in partials), partials
    shutil.copy(helpers.ROOT / ".gitignore", tmp_path)
    helpers.git("init", "-q", cwd=tmp_path)
    assert helpers.git("status", "--porcelain", "-uall", cwd=tmp_path).split() == [
        "??",
        ".gitignore",
    ]

    atomic.write_json(out / "eval.json", {"accuracy": 0.9})
    assert json.loads((out / "eval.json").read_text()) == {"accuracy": 0.9}
    [left] = [n for n in names(out) if n != "eval.json"]
    assert left.startswith(".eval.json.bak.")  # another path's: its next write removes it
    atomic.write_text(out / "eval.json.bak", "done")
    assert names(out) == ["eval.json", "eval.json.bak"]


def test_a_write_removes_a_killed_writers_sibling_whose_pid_a_later_process_has(tmp_path):
    """PIDs are reused: a sibling last written before the process now holding its PID started
    is that process's only by number, and goes; one written since is left to it."""
    target = tmp_path / "eval.json"
    me, started = os.getpid(), processes.start_time(os.getpid())
    stale = tmp_path / f".eval.json.{atomic._machine()}-{me}-q1w2e3r4.tmp"
    live = tmp_path / f".eval.json.{atomic._machine()}-{me}-a1s2d3f4.tmp"
    stale.mkdir()
    live.mkdir()
    os.utime(stale, (started - 3600, started - 3600))  # an hour before this process started

    atomic.write_json(target, {"accuracy": 0.9})
    assert names(tmp_path) == [live.name, "eval.json"]


def test_a_write_leaves_what_a_writer_on_another_machine_left_alone(tmp_path, monkeypatch):
    """On a filesystem two machines share, a PID names a process only on the machine that
    wrote it: this machine cannot tell whether another's writer is still running."""
    target = tmp_path / "eval.json"
    write_killed(target)
    [here] = names(tmp_path)  # `.eval.json.MACHINE-PID-RANDOM.tmp`
    there = here.replace(atomic._machine(), "0badc0de")
    shutil.copytree(tmp_path / here, tmp_path / there)
    assert atomic._machine() != "0badc0de"

    atomic.write_json(target, {"accuracy": 0.9})
    assert names(tmp_path) == [there, "eval.json"]
    # That machine's next write of the path, its writer gone, removes it.
    monkeypatch.setattr(atomic, "_machine", lambda: "0badc0de")
    atomic.write_json(target, {"accuracy": 0.8})
    assert names(tmp_path) == ["eval.json"]


def test_a_write_leaves_a_running_writer_of_the_same_path_alone(tmp_path):
    """Two writers of one path at once: neither removes the other's temporary sibling; the one
    that finishes last wins, whole."""
    target = tmp_path / "out.txt"
    cmd = writer(target, "print('written', flush=True); sys.stdin.readline()")
    with subprocess.Popen(
        cmd, env=helpers.checkout_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as slow:
        assert slow.stdout.readline() == "written\n"
        atomic.write_text(target, "fast")
        assert target.read_text() == "fast"
        assert len(names(tmp_path)) == 2  # the running writer's partial is still there
        slow.stdin.write("go\n")
        slow.stdin.flush()
        assert slow.wait(timeout=60) == 0
    assert names(tmp_path) == ["out.txt"] and target.read_text() == "theirs"


def test_a_backup_removed_after_success_takes_a_write_a_kill_cut_short_with_it(tmp_path):
    """The training backup a resumed run removes when it succeeds: with it goes what a kill
    during one of its writes left (the SIGKILL test above, when the kill lands mid-write)."""
    backups = tmp_path / "train-backup"
    for name in ("abc", "other-run"):
        with atomic.atomic_path(backups / name) as tmp:
            tmp.mkdir()
    write_killed(backups / "abc")
    assert len(names(backups)) == 3  # the two backups and the cut-short write
    atomic.remove(backups / "abc")
    assert names(backups) == ["other-run"]


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
