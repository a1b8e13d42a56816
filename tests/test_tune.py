"""`fmnist tune`: the search space checked against the params schema, the objective, the study.

Fast tests check tune.yaml's parsing and validation and the pieces of a study; the slow ones
run real studies on the tiny repository: four trials as DVC experiments, stopped after the
second and resumed; and one study shared by two processes through a PostgreSQL server that
the test starts itself.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml

import helpers
from fmnist import processes
from fmnist.errors import ParamsError
from fmnist.tools import tune
from fmnist.tools.recipe import parse_set_options
from helpers import dvc, git

BASE = yaml.safe_load((helpers.ROOT / "params.yaml").read_text())
SHIPPED = yaml.safe_load((helpers.ROOT / "tune.yaml").read_text())


def config(**changes) -> dict:
    """A small valid tune.yaml mapping with `changes` on top (None removes a key)."""
    data = {
        "study": "s",
        "objective": {"metric": "metrics/train/metrics.json:val.accuracy", "direction": "maximize"},
        "budget": {"trials": 4},
        "sampler": {"seed": 1, "startup_trials": 2},
        "set": {"train.epochs": 1},
        "space": {
            "train.learning_rate": {"type": "float", "low": 0.001, "high": 0.05, "log": True},
            "model.dropout": {"type": "float", "low": 0.0, "high": 0.5},
        },
    }
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    return data


def checked(data: dict) -> tune.TuneConfig:
    parsed = tune.parse_config(data)
    tune.check_space(parsed, BASE)
    return parsed


# --- tune.yaml ------------------------------------------------------------------------------


def test_the_shipped_space_is_valid_and_searches_validation():
    parsed = checked(SHIPPED)
    assert parsed.metric_key.startswith("val.") and parsed.direction == "maximize"
    assert parsed.trials >= 1 and len(parsed.space) >= 3


@pytest.mark.parametrize(
    ("space", "named"),
    [
        ({"train.learnign_rate": {"type": "float", "low": 0.001, "high": 0.01}}, "learnign_rate"),
        ({"train.batch_size": {"type": "float", "low": 16, "high": 64}}, "expected an integer"),
        ({"model.dropout": {"type": "float", "low": 0.0, "high": 0.95}}, "<= 0.9"),
        ({"train.learning_rate": {"type": "float", "low": 0.0, "high": 0.1}}, "> 0"),
        ({"model.arch": {"type": "categorical", "choices": ["gap_cnn", "resnet"]}}, "resnet"),
        ({"model.filters": {"type": "categorical", "choices": [[16, 32]]}}, "three positive"),
    ],
)
def test_a_space_the_params_refuse_fails_naming_the_key(space, named):
    data = config(space=space)
    with pytest.raises(tune.TuneError, match=named) as caught:
        checked(data)
    assert f"space '{next(iter(space))}'" in str(caught.value)


def test_a_fixed_value_the_params_refuse_fails_naming_set():
    with pytest.raises(tune.TuneError, match=r"set: .*train\.epochs"):
        checked(config(set={"train.epochs": 0}))


def test_every_extreme_is_checked_alone_and_together():
    # Each bound alone is valid; together they break the cosine schedule's rule.
    space = {
        "train.schedule": {"type": "categorical", "choices": ["cosine", "plateau"]},
        "train.reduce_lr.patience": {"type": "int", "low": 0, "high": 3},
    }
    with pytest.raises(tune.TuneError, match="reduce_lr.patience"):
        checked(config(space=space))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "float", "low": 0.1, "high": 0.1}, "must be below high"),
        ({"type": "float", "low": 0.0, "high": 0.1, "log": True}, "log scale needs low > 0"),
        ({"type": "uniform", "low": 0, "high": 1}, "type must be one of"),
        ({"type": "categorical", "choices": []}, "non-empty list"),
        ({"type": "float", "low": 0, "high": 1, "sigma": 2}, "unknown field"),
        ({"type": "int", "low": 1, "high": 8, "step": 0}, "step must be > 0"),
        ("0.1..0.5", "expected a mapping"),
    ],
)
def test_a_malformed_distribution_fails_naming_the_key(spec, message):
    with pytest.raises(tune.TuneError, match=message) as caught:
        tune.parse_config(config(space={"model.dropout": spec}))
    assert "space 'model.dropout'" in str(caught.value)


@pytest.mark.parametrize(
    "metric",
    [
        "metrics/eval.json:test.accuracy",
        "metrics/eval.json:test.f1_macro",
        "metrics/test_scores.json:accuracy",
        "metrics/eval.json:accuracy_test",
    ],
)
def test_a_test_metric_is_refused(metric):
    data = config(objective={"metric": metric, "direction": "maximize"})
    with pytest.raises(tune.TuneError, match="is a test metric"):
        tune.parse_config(data)


@pytest.mark.parametrize(
    ("objective", "message"),
    [
        ({"metric": "val.accuracy", "direction": "maximize"}, "expected FILE:KEY"),
        ({"metric": "metrics/eval.json:val.loss", "direction": "lower"}, "maximize or minimize"),
    ],
)
def test_a_malformed_objective_is_refused(objective, message):
    with pytest.raises(tune.TuneError, match=message):
        tune.parse_config(config(objective=objective))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"study": "my study"}, "study 'my study'"),
        ({"budget": {"trials": 0}}, "trials >= 1"),
        ({"space": {}}, "space is empty"),
        ({"set": {"model.dropout": 0.1}}, "both fixed"),
        ({"bugdet": {"trials": 3}}, "unknown key"),
    ],
)
def test_a_malformed_config_is_refused(changes, message):
    with pytest.raises(tune.TuneError, match=message):
        tune.parse_config(config(**changes))


def test_trials_run_up_to_the_stage_that_writes_the_objective():
    spec = yaml.safe_load((helpers.ROOT / "dvc.yaml").read_text())
    assert tune.objective_stage(spec, "metrics/train/metrics.json") == "train"
    assert tune.objective_stage(spec, "metrics/eval.json") == "evaluate"
    with pytest.raises(tune.TuneError, match="no stage of dvc.yaml writes it"):
        tune.objective_stage(spec, "metrics/nowhere.json")


def test_dimensions_draw_inside_their_range_and_lists_survive_storage():
    dims = tune.parse_config(
        config(
            set={},
            space={
                "train.learning_rate": {"type": "float", "low": 0.001, "high": 0.05, "log": True},
                "train.epochs": {"type": "int", "low": 2, "high": 8, "step": 2},
                "model.filters": {"type": "categorical", "choices": [[16, 48, 64], [8, 16, 32]]},
            },
        )
    ).space
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        lr, epochs, filters = (d.suggest(trial) for d in dims)
        assert 0.001 <= lr <= 0.05 and epochs in (2, 4, 6, 8)
        assert filters in ([16, 48, 64], [8, 16, 32])
        assert tune.decode(trial.params["model.filters"]) == filters
        study.tell(trial, 0.0)


def test_the_baseline_is_the_workspace_params_when_the_space_holds_them():
    parsed = tune.parse_config(config())
    study = optuna.create_study()
    tune.enqueue_baseline(study, parsed, BASE)
    (waiting,) = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert waiting.system_attrs["fixed_params"] == {
        "train.learning_rate": BASE["train"]["learning_rate"],
        "model.dropout": BASE["model"]["dropout"],
    }
    narrow = tune.parse_config(
        config(space={"model.dropout": {"type": "float", "low": 0.2, "high": 0.4}})
    )
    outside = {**BASE, "model": {**BASE["model"], "dropout": 0.0}}
    other = optuna.create_study()
    tune.enqueue_baseline(other, narrow, outside)
    assert other.trials == []


def test_a_second_process_opening_a_new_study_mid_record_sees_none_or_all_of_it():
    # Two workers starting one shared study: the second may read the study's record between
    # any two of the first's writes. Each time, it must either find no record yet, or resume.
    parsed = tune.parse_config(config())
    storage = optuna.storages.InMemoryStorage()
    first, created = tune.open_study(storage, parsed)
    second, also_created = tune.open_study(storage, parsed)
    assert (created, also_created) == (True, False)
    seen = []
    write = first.set_user_attr

    def write_then_look(key, value):
        write(key, value)
        seen.append(bool(second.user_attrs.get("config")))
        if seen[-1]:
            tune.check_study(second, parsed, "abc123", BASE, created=False)  # whole: resumes

    first.set_user_attr = write_then_look
    tune.check_study(first, parsed, "abc123", BASE, created=True)
    assert seen == [False] * (len(seen) - 1) + [True]
    changed = {**BASE, "train": {**BASE["train"], "epochs": 1}}
    with pytest.raises(tune.TuneError, match=r"other workspace params \(train.epochs\)"):
        tune.check_study(second, parsed, "abc123", changed, created=False)


def test_of_two_workers_starting_together_only_the_creator_writes_the_record(monkeypatch):
    # The second worker, on another commit, opens the study before the first has written
    # anything: it waits for the first's record and is refused by it, instead of writing
    # its own over it.
    parsed = tune.parse_config(config())
    storage = optuna.storages.InMemoryStorage()
    first, _ = tune.open_study(storage, parsed)
    second, created = tune.open_study(storage, parsed)
    polls = []

    def first_writes_meanwhile(seconds):
        if not polls:
            tune.check_study(first, parsed, "aaaaaaaaaaaa", BASE, created=True)
        polls.append(seconds)

    monkeypatch.setattr(tune.time, "sleep", first_writes_meanwhile)
    with pytest.raises(tune.TuneError, match="started on commit aaaaaaaaa, and HEAD is bbbbbbbbb"):
        tune.check_study(second, parsed, "bbbbbbbbbbbb", BASE, created)
    assert polls == [tune.RECORD_POLL_S]
    assert first.user_attrs["baseline_rev"] == "aaaaaaaaaaaa"  # the first's record stands


def test_a_study_whose_creator_never_wrote_its_record_is_refused_with_a_way_out():
    parsed = tune.parse_config(config())
    storage = optuna.storages.InMemoryStorage()
    tune.open_study(storage, parsed)  # then stopped before check_study
    study, created = tune.open_study(storage, parsed)
    with pytest.raises(tune.TuneError, match="no record of what it searches.*delete-study"):
        tune.check_study(study, parsed, "abc123", BASE, created, wait_s=0)
    assert study.user_attrs == {}  # nothing written


def test_a_killed_runs_trial_is_failed_then_run_again_once_at_its_point():
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    cut = study.ask({"model.dropout": optuna.distributions.FloatDistribution(0, 0.5)})
    cut.set_user_attr("host", socket.gethostname())
    cut.set_user_attr("pid", dead.pid)
    live = study.ask()
    live.set_user_attr("host", socket.gethostname())
    live.set_user_attr("pid", os.getpid())  # still running: left alone
    # A trial whose PID a process started after the trial's own start has taken: dead too.
    reused = study.ask({"model.dropout": optuna.distributions.FloatDistribution(0, 0.5)})
    reused.set_user_attr("host", socket.gethostname())
    time.sleep(processes.START_SLACK_S + 0.5)
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as later:
        reused.set_user_attr("pid", later.pid)
        try:
            assert tune.fail_dead_local_trials(study, storage) == [cut.number, reused.number]
        finally:
            later.kill()
    assert tune.retry_interrupted(study) == [cut.number, reused.number]
    assert tune.retry_interrupted(study) == []  # once
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [w.system_attrs["fixed_params"] for w in waiting] == [cut.params, reused.params]
    assert [w.user_attrs["retry_of"] for w in waiting] == [cut.number, reused.number]
    assert study.trials[live.number].state == optuna.trial.TrialState.RUNNING


def test_set_options_are_read_as_yaml_like_dvc_does():
    # fmnist tune reads its -S options as the recipes and benchmarks do.
    assert parse_set_options(["train.epochs=3", "model.filters=[8,16,32]", "train.init_from="]) == {
        "train.epochs": 3,
        "model.filters": [8, 16, 32],
        "train.init_from": "",
    }
    with pytest.raises(ParamsError, match="KEY=VALUE"):
        parse_set_options(["train.epochs"])


def test_passwords_stay_out_of_messages():
    url = "postgresql+psycopg://optuna:s3cret@db.example:5432/studies"
    assert tune.redact(url) == "postgresql+psycopg://optuna:***@db.example:5432/studies"


def test_an_unreachable_storage_is_one_line(tmp_path):
    with pytest.raises(tune.TuneError, match="cannot open it"):
        tune.open_storage(f"postgresql+psycopg://u:p@127.0.0.1:{free_port()}/db")


# --- the command on a tiny repository ---------------------------------------------------------


def fmnist(*args: str, cwd: Path, **kwargs) -> subprocess.Popen:
    """`fmnist ARGS` with this checkout's code, output piped, in its own process group."""
    return subprocess.Popen(
        [sys.executable, "-m", "fmnist.cli", *args],
        cwd=cwd,
        env=helpers.checkout_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def write_config(repo: Path, data: dict) -> None:
    (repo / "tune.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.mark.slow  # a tiny repo: git and dvc
def test_a_typo_in_the_space_fails_before_any_trial(tiny_repo):
    space = {"train.learnign_rate": {"type": "float", "low": 0.001, "high": 0.01}}
    write_config(tiny_repo, config(space=space))
    proc = fmnist("tune", cwd=tiny_repo)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1
    (line,) = [line for line in out.splitlines() if line.strip()]
    assert line.startswith("error: tune.yaml: space 'train.learnign_rate'")
    assert "not a key of params.yaml" in line
    assert not (tiny_repo / "tune").exists()  # no study, no log, no experiment
    assert git("for-each-ref", "refs/exps", cwd=tiny_repo) == ""


def experiments(repo: Path) -> dict[str, dict]:
    """Name -> {"params", "metrics"} of each experiment of HEAD in `dvc exp show --json`."""
    return {
        name: {
            "params": data["params"]["params.yaml"]["data"],
            "metrics": data["metrics"]["metrics/train/metrics.json"]["data"],
        }
        for name, data in helpers.experiments_of_head(repo).items()
    }


STUDY = config(
    study="tiny",
    budget={"trials": 4},
    baseline=True,
    # Few, small and short: the cost of a trial is mostly starting DVC and TensorFlow.
    set={"train.epochs": 1, "model.filters": [8, 16, 16]},
)


def committed_copy(source: Path, dest: Path, tune_config: dict) -> Path:
    shutil.copytree(source, dest, symlinks=True)
    write_config(dest, tune_config)
    git("add", "-A", cwd=dest)
    git("commit", "-qm", "reproduced, with a search space", cwd=dest)
    return dest


def read_until(proc: subprocess.Popen, marker: str, timeout: float = 1800) -> list[str]:
    """Lines of `proc`'s output up to and including the first that contains `marker`."""
    lines, deadline = [], time.monotonic() + timeout
    for line in proc.stdout:
        lines.append(line)
        if marker in line:
            return lines
        assert time.monotonic() < deadline, "".join(lines)
    raise AssertionError(f"{marker!r} never came:\n{''.join(lines)}")


@pytest.fixture(scope="module")
def resumed_study(reproduced_repo, tmp_path_factory) -> Iterator[tuple[Path, str, str]]:
    """A 4-trial study stopped (SIGTERM) once its second trial finished, then run again."""
    repo = committed_copy(reproduced_repo, tmp_path_factory.mktemp("tune") / "repo", STUDY)
    first = fmnist("tune", cwd=repo)
    before = read_until(first, "trial 1 (tiny-t001) finished")
    first.send_signal(signal.SIGTERM)
    rest, _ = first.communicate(timeout=300)
    assert first.returncode == 130, "".join(before) + rest
    second = fmnist("tune", cwd=repo)
    after, _ = second.communicate(timeout=3600)
    assert second.returncode == 0, after
    yield repo, "".join(before) + rest, after


@pytest.mark.slow
def test_a_study_stopped_after_two_trials_resumes_and_runs_only_the_rest(resumed_study):
    repo, first, second = resumed_study
    assert "interrupted" in first
    started = [line.split()[2] for line in second.splitlines() if line.endswith("started") or
               " started: " in line]  # fmt: skip
    assert started and all(int(number) >= 2 for number in started)  # 0 and 1 are not rerun
    assert "2 finished, 2 to run" in second
    storage = tune.DEFAULT_STORAGE.replace("sqlite:///", f"sqlite:///{repo}/")
    study = optuna.load_study(study_name="tiny", storage=storage)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 4
    names = [t.user_attrs["experiment"] for t in complete]
    assert names[:2] == ["tiny-t000", "tiny-t001"] and len(set(names)) == 4
    assert complete[0].user_attrs.get("baseline")  # trial 0: the workspace's params
    # The trial the stop cut short (if it had started) is run again first, at its point.
    for cut in study.get_trials(states=(optuna.trial.TrialState.FAIL,)):
        assert cut.user_attrs["interrupted"]
        (retry,) = [t for t in complete if t.user_attrs.get("retry_of") == cut.number]
        assert retry.params == cut.params and retry.number == cut.number + 1
    # Each drew its own point: a resumed sampler does not repeat the first run's draws.
    assert len({t.params["model.dropout"] for t in complete}) == 4


@pytest.mark.slow
def test_every_trial_is_an_experiment_in_dvc_exp_show_with_its_params_and_metric(resumed_study):
    repo, _, _ = resumed_study
    storage = tune.DEFAULT_STORAGE.replace("sqlite:///", f"sqlite:///{repo}/")
    study = optuna.load_study(study_name="tiny", storage=storage)
    shown = experiments(repo)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert set(shown) == {t.user_attrs["experiment"] for t in complete}
    for t in complete:
        exp = shown[t.user_attrs["experiment"]]
        assert exp["params"]["train"]["learning_rate"] == pytest.approx(
            t.params["train.learning_rate"]
        )
        assert exp["params"]["model"]["dropout"] == pytest.approx(t.params["model.dropout"])
        assert exp["params"]["train"]["epochs"] == 1  # the fixed `set`
        assert exp["metrics"]["val"]["accuracy"] == pytest.approx(t.value)


@pytest.mark.slow
def test_the_result_names_the_best_experiment_its_diff_and_how_to_apply_it(resumed_study):
    repo, _, second = resumed_study
    best = json.loads((repo / "tune/tiny/best.json").read_text())
    shown = experiments(repo)
    values = {name: exp["metrics"]["val"]["accuracy"] for name, exp in shown.items()}
    assert best["best"]["experiment"] in shown
    assert best["best"]["value"] == pytest.approx(max(values.values()))
    changed = best["changed_from_workspace"]
    assert changed["train.epochs"] == {"workspace": 2, "best": 1}
    assert changed["model.filters"]["best"] == [8, 16, 16]
    assert f"dvc exp apply {best['best']['experiment']}" in second
    for name in ("optimization_history.png", "param_importances.png"):
        assert (repo / "tune/tiny" / name).read_bytes().startswith(b"\x89PNG")
    # The command it prints works: the best trial's params land in the workspace (of a copy:
    # the study's own workspace must keep the params it started with).
    copy = repo.parent / "applied"
    shutil.copytree(repo, copy, symlinks=True)
    dvc("exp", "apply", best["best"]["experiment"], cwd=copy)
    applied = yaml.safe_load((copy / "params.yaml").read_text())
    assert applied["model"]["dropout"] == pytest.approx(best["best"]["params"]["model.dropout"])


@pytest.mark.slow
def test_the_benchmark_prints_every_trial_and_the_baseline_against_the_best(resumed_study):
    repo, _, _ = resumed_study
    script = helpers.ROOT / "benchmarks" / "tune_study.py"
    env = {"PYTHONPATH": f"{helpers.ROOT / 'src'}:{helpers.ROOT / 'benchmarks'}"}
    out = helpers.run([sys.executable, str(script)], cwd=repo, env=env).stdout
    rows = [line for line in out.splitlines() if line.startswith("| ") and "experiment" not in line]
    storage = tune.DEFAULT_STORAGE.replace("sqlite:///", f"sqlite:///{repo}/")
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert len(rows) == len(study.trials)  # the cut-short trial too, marked failed
    assert rows[0].startswith("| 0 (baseline) | tiny-t000 |")
    assert f"best: trial {study.best_trial.number} " in out and "baseline: trial 0 " in out


@pytest.mark.slow
def test_the_benchmark_takes_the_committed_baseline_only_from_an_up_to_date_pipeline(
    resumed_study,
):
    repo, _, _ = resumed_study
    script = helpers.ROOT / "benchmarks" / "tune_study.py"
    env = {"PYTHONPATH": f"{helpers.ROOT / 'src'}:{helpers.ROOT / 'benchmarks'}"}

    def last_line(cwd, *options):
        done = helpers.run([sys.executable, str(script), "--full", "--committed-baseline",
                            *options], cwd=cwd, env=env, check=False)  # fmt: skip
        assert done.returncode == 1, done.stdout
        return done.stderr.strip().splitlines()[-1]

    epochs = yaml.safe_load((repo / "params.yaml").read_text())["train"]["epochs"]
    assert last_line(repo, "--full-epochs", str(epochs + 1)) == (
        f"--committed-baseline: the committed run trained {epochs} epochs, not {epochs + 1}; "
        "leave out --full-epochs or --committed-baseline"
    )
    changed = repo.parent / "changed"  # params that the committed run did not train
    shutil.copytree(repo, changed, symlinks=True)
    params = yaml.safe_load((changed / "params.yaml").read_text())
    params["evaluate"]["misclassified"] += 1
    (changed / "params.yaml").write_text(yaml.safe_dump(params))
    assert last_line(changed) == (
        "--committed-baseline: the pipeline is not up to date with params.yaml and the code "
        "(`dvc status`); run `dvc repro` or leave the option out"
    )
    experiments = dvc("exp", "list", "--name-only", cwd=changed).stdout.split()
    assert not [name for name in experiments if "-e" in name]  # nothing was trained


@pytest.mark.slow
def test_a_finished_study_reruns_nothing_and_another_space_needs_another_name(resumed_study):
    repo, _, _ = resumed_study
    again = fmnist("tune", cwd=repo)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0 and "nothing to run" in out and "started" not in out
    changed = config(
        **{**STUDY, "space": {"model.dropout": {"type": "float", "low": 0, "high": 1e-3}}}
    )
    write_config(repo, changed)
    other = fmnist("tune", cwd=repo)
    out, _ = other.communicate(timeout=600)
    assert other.returncode == 1 and "was started with another space" in out


# --- one study, two processes, a real PostgreSQL server ---------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin(name: str) -> str | None:
    """A PostgreSQL server program: on PATH, or where Debian's `postgresql` package puts it."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(versions[-1]) if versions else None


@pytest.fixture
def postgres() -> Iterator[str]:
    """A throw-away PostgreSQL server on a free local port: its SQLAlchemy URL."""
    initdb, pg_ctl = postgres_bin("initdb"), postgres_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL's server is not installed (`apt-get install postgresql`)")
    # The server refuses to run as root: run it as Debian's `postgres` user then.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data = Path(tempfile.mkdtemp(prefix="fmnist-pg-"))
    if as_user:
        shutil.chown(data, "postgres")
    port = free_port()
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True)  # noqa: E731
    run(initdb, "-D", str(data / "db"), "-U", "optuna", "--auth=trust")
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
    run(pg_ctl, "-D", str(data / "db"), "-o", options, "-l", str(data / "log"), "-w", "start")
    try:
        yield f"postgresql+psycopg://optuna@127.0.0.1:{port}/postgres"
    finally:
        run(pg_ctl, "-D", str(data / "db"), "-m", "immediate", "stop")
        shutil.rmtree(data, ignore_errors=True)


@pytest.mark.slow
def test_two_processes_share_one_study_in_postgresql(reproduced_repo, tmp_path, postgres):
    shared = config(study="shared", budget={"trials": 2}, baseline=False, set=STUDY["set"])
    one = committed_copy(reproduced_repo, tmp_path / "one", shared)
    two = tmp_path / "two"  # another machine's clone: the same commit
    shutil.copytree(one, two, symlinks=True)
    procs = [fmnist("tune", "--storage", postgres, cwd=repo) for repo in (one, two)]
    outputs = [proc.communicate(timeout=3600)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], "\n".join(outputs)
    study = optuna.load_study(study_name="shared", storage=postgres)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert sorted(t.number for t in complete) == [0, 1]
    assert len({t.user_attrs["pid"] for t in complete}) == 2  # one trial from each process
    ran = {repo: set(experiments(repo)) for repo in (one, two)}
    assert ran[one] | ran[two] == {"shared-t000", "shared-t001"}
    assert ran[one] and ran[two] and not ran[one] & ran[two]


@pytest.mark.slow
def test_jobs_run_trials_side_by_side(reproduced_repo, tmp_path):
    side = config(study="side", budget={"trials": 2}, baseline=False, set=STUDY["set"])
    repo = committed_copy(reproduced_repo, tmp_path / "repo", side)
    proc = fmnist("tune", "-j", "2", cwd=repo)
    out, _ = proc.communicate(timeout=3600)
    assert proc.returncode == 0, out
    storage = tune.DEFAULT_STORAGE.replace("sqlite:///", f"sqlite:///{repo}/")
    first, second = optuna.load_study(study_name="side", storage=storage).trials
    assert first.state == second.state == optuna.trial.TrialState.COMPLETE
    # The second started before the first finished: two `dvc exp run --temp` at once.
    assert second.datetime_start < first.datetime_complete
    assert set(experiments(repo)) == {"side-t000", "side-t001"}
