"""`fmnist tune`: a Bayesian search over params in which every trial is a DVC experiment.

An Optuna study (TPE, seeded) proposes params from the search space in `tune.yaml`; each trial
is `dvc exp run --temp -n STUDY-tNNN -S key=value ... STAGE`, DVC's own temporary-directory run,
so it appears in `dvc exp show` with its params and metrics and can be applied
(`dvc exp apply`) or branched (`dvc exp branch`) like any other experiment. The objective is a
validation metric the pipeline writes (`FILE:KEY`, never a test metric), read from the trial's
experiment commit. Before the first trial every key and bound of the space goes through the
params schema (`fmnist.params`), so a typo or a value the params would refuse fails at once.

The study lives in a database: a SQLite file by default (`tune/studies.db`), so that a killed
`fmnist tune` resumes where it stopped, or any SQLAlchemy URL (`--storage
postgresql+psycopg://...`) that several machines share. At the end (and whenever it is rerun
with nothing left to do) it prints the best trial's experiment, its params against the
workspace's and the commands that apply or branch it, and writes `tune/STUDY/best.json` with
Optuna's optimisation-history and param-importance plots beside it. docs/tuning.md has more.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from fmnist import atomic, git, processes
from fmnist.errors import ParamsError, PipelineError, report_errors
from fmnist.params import params_from_dict, with_overrides
from fmnist.tools import registry
from fmnist.tools.recipe import add_set_option, parse_set_options, set_arguments

CONFIG_FILE = "tune.yaml"
OUT_DIR = Path("tune")
DEFAULT_STORAGE = f"sqlite:///{OUT_DIR}/studies.db"
DIRECTIONS = ("maximize", "minimize")
KINDS = ("float", "int", "categorical")
# Study names become experiment names and git ref components.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,60}")
# A live trial's process updates its heartbeat this often; a trial whose heartbeat is older
# than the grace period (its machine died) is failed by the next trial that starts.
HEARTBEAT_S = 60
GRACE_S = 5 * HEARTBEAT_S
# Tries at opening the study's database (see open_storage).
STORAGE_ATTEMPTS = 3
# How long a worker that finds the study just created by another waits for its record (a few
# quick writes), and how often it looks.
RECORD_WAIT_S = 30.0
RECORD_POLL_S = 0.5
# Consecutive failed trials after which the study stops: something is broken, not unlucky.
MAX_FAILURES_IN_A_ROW = 3


class TuneError(PipelineError):
    """`tune.yaml`, the study or a trial is not usable: the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One params key of the search space and its Optuna distribution."""

    key: str
    kind: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def suggest(self, trial: Any) -> Any:
        """The value `trial` draws for this key (a categorical list decoded from its text)."""
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        return decode(trial.suggest_categorical(self.key, [encode(c) for c in self.choices]))

    def extremes(self) -> list:
        """The values at the edges of the range (every choice of a categorical)."""
        if self.kind == "categorical":
            return list(self.choices)
        cast = float if self.kind == "float" else int
        return [cast(self.low), cast(self.high)]

    def contains(self, value: Any) -> bool:
        """Whether `value` is a point of this dimension (for the baseline trial)."""
        if self.kind == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and not isinstance(value, int):
            return False
        return self.low <= value <= self.high


def encode(choice: Any) -> Any:
    """A categorical choice as Optuna stores it: lists (e.g. `model.filters`) as JSON text."""
    return json.dumps(choice, separators=(",", ":")) if isinstance(choice, list) else choice


def decode(choice: Any) -> Any:
    """The inverse of `encode`."""
    return json.loads(choice) if isinstance(choice, str) and choice.startswith("[") else choice


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """`tune.yaml`, checked for shape (the params schema checks the values: `check_space`)."""

    study: str
    metric: str  # FILE:KEY, as `dvc exp show --sort-by` names it
    direction: str
    trials: int
    minutes: float  # 0: no wall-clock limit
    seed: int
    startup_trials: int
    baseline: bool
    fixed: dict  # dotted key -> value, the same in every trial
    space: tuple[Dimension, ...]

    @property
    def metric_file(self) -> str:
        """The metrics file the objective is read from."""
        return self.metric.partition(":")[0]

    @property
    def metric_key(self) -> str:
        """The dotted key of the objective inside its file."""
        return self.metric.partition(":")[2]

    def fingerprint(self) -> dict:
        """What makes two runs the same study: space, objective and fixed params."""
        space = {
            d.key: {k: v for k, v in dataclasses.asdict(d).items() if v not in (None, ())}
            for d in self.space
        }
        return json.loads(
            json.dumps(
                {
                    "metric": self.metric,
                    "direction": self.direction,
                    "fixed": self.fixed,
                    "space": space,
                }
            )
        )


def _get(mapping: dict, key: str, kind: type | tuple, default: Any, where: str) -> Any:
    value = mapping.get(key, default)
    if kind in (int, float) and isinstance(value, bool):
        raise TuneError(f"{where}: '{key}' must be a number, got {value!r}")
    if kind is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, kind):
        raise TuneError(f"{where}: '{key}' has the wrong type: {value!r}")
    return value


def parse_dimension(key: str, spec: Any, where: str) -> Dimension:
    """One entry of `space:`; a missing or wrong field fails, naming the key."""
    here = f"{where}: space '{key}'"
    if not isinstance(spec, dict):
        raise TuneError(f"{here}: expected a mapping such as {{type: float, low: 0, high: 1}}")
    unknown = set(spec) - {"type", "low", "high", "log", "step", "choices"}
    if unknown:
        raise TuneError(f"{here}: unknown field(s) {', '.join(sorted(unknown))}")
    kind = spec.get("type")
    if kind not in KINDS:
        raise TuneError(f"{here}: type must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise TuneError(f"{here}: a categorical needs a non-empty list of choices")
        if set(spec) - {"type", "choices"}:
            raise TuneError(f"{here}: a categorical takes only choices")
        return Dimension(key, kind, choices=tuple(choices))
    number = float if kind == "float" else int
    low, high = (_get(spec, f, number, None, here) for f in ("low", "high"))
    log = _get(spec, "log", bool, False, here)
    step = spec.get("step")
    if step is not None:
        step = _get(spec, "step", number, None, here)
        if step <= 0 or log:
            raise TuneError(f"{here}: step must be > 0, and cannot be combined with log")
    if not low < high:
        raise TuneError(f"{here}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise TuneError(f"{here}: a log scale needs low > 0, got {low}")
    return Dimension(key, kind, low, high, log, step)


def parse_config(data: Any, where: str = CONFIG_FILE) -> TuneConfig:
    """`tune.yaml`'s mapping as a `TuneConfig`; the first problem found is a `TuneError`."""
    if not isinstance(data, dict):
        raise TuneError(f"{where}: expected a mapping with study, objective, budget and space")
    unknown = set(data) - {"study", "objective", "budget", "sampler", "baseline", "set", "space"}
    if unknown:
        raise TuneError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    study = _get(data, "study", str, "", where)
    if not NAME.fullmatch(study):
        raise TuneError(f"{where}: study {study!r}: use letters, digits, '-' and '_' (<= 61)")
    objective = _get(data, "objective", dict, {}, where)
    metric = _get(objective, "metric", str, "", f"{where}: objective")
    check_metric(metric)
    direction = _get(objective, "direction", str, "", f"{where}: objective")
    if direction not in DIRECTIONS:
        raise TuneError(f"{where}: objective direction must be maximize or minimize")
    budget = _get(data, "budget", dict, {}, where)
    trials = _get(budget, "trials", int, 0, f"{where}: budget")
    minutes = _get(budget, "minutes", float, 0.0, f"{where}: budget")
    if trials < 1 or minutes < 0:
        raise TuneError(f"{where}: budget needs trials >= 1 and minutes >= 0 (0: no limit)")
    sampler = _get(data, "sampler", dict, {}, where)
    seed = _get(sampler, "seed", int, 0, f"{where}: sampler")
    startup = _get(sampler, "startup_trials", int, 10, f"{where}: sampler")
    space = _get(data, "space", dict, {}, where)
    if not space:
        raise TuneError(f"{where}: space is empty: name at least one params key to search")
    fixed = _get(data, "set", dict, {}, where)
    both = set(fixed) & set(space)
    if both:
        raise TuneError(f"{where}: {', '.join(sorted(both))} is both fixed (set) and searched")
    return TuneConfig(
        study=study,
        metric=metric,
        direction=direction,
        trials=trials,
        minutes=minutes,
        seed=seed,
        startup_trials=max(startup, 0),
        baseline=_get(data, "baseline", bool, False, where),
        fixed=dict(fixed),
        space=tuple(parse_dimension(str(k), v, where) for k, v in space.items()),
    )


def check_metric(metric: str) -> None:
    """Refuse an objective that is not `FILE:KEY`, or that names a test metric: params chosen
    on the test set leave no unbiased estimate of how good the model is."""
    file, _, key = metric.partition(":")
    if not file or not key:
        raise TuneError(
            f"objective metric {metric!r}: expected FILE:KEY, e.g. metrics/eval.json:val.accuracy"
        )
    words = re.split(r"[^a-z0-9]+", metric.lower())
    if "test" in words:
        raise TuneError(
            f"objective metric {metric!r} is a test metric: choosing params on the test set "
            "leaves no honest estimate of the model; use a validation metric, such as "
            "metrics/eval.json:val.accuracy"
        )


def load_config(path: str | Path) -> TuneConfig:
    """Read and check `tune.yaml` (shape only; `check_space` checks it against the params)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise TuneError(f"{path}: not found; run from the repository root, or --config") from None
    except yaml.YAMLError as exc:
        raise TuneError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(data, str(path))


def check_space(config: TuneConfig, base: dict, where: str = CONFIG_FILE) -> None:
    """Put every fixed value, and each dimension's extremes alone and all together, through
    the params schema: a typo, a wrong type or a bound the params refuse fails naming the key."""
    try:
        fixed = with_overrides(base, config.fixed)
        params_from_dict(fixed)
    except ParamsError as exc:
        raise TuneError(f"{where}: set: {exc}") from None
    for dim in config.space:
        for value in dim.extremes():
            try:
                params_from_dict(with_overrides(fixed, {dim.key: value}))
            except ParamsError as exc:
                raise TuneError(f"{where}: space '{dim.key}' = {value!r}: {exc}") from None
    for edge in (0, -1):
        corner = {d.key: d.extremes()[edge] for d in config.space}
        try:
            params_from_dict(with_overrides(fixed, corner))
        except ParamsError as exc:
            side = "lows" if edge == 0 else "highs"
            raise TuneError(f"{where}: space, all {side} together: {exc}") from None


def objective_stage(spec: dict, metric_file: str) -> str:
    """The stage of `dvc.yaml` that writes `metric_file` (a metric, or an output kept in git
    such as DVCLive's log): trials run up to it."""
    for name, stage in (spec.get("stages") or {}).items():
        for entry in (stage.get("metrics") or []) + (stage.get("outs") or []):
            path = entry if isinstance(entry, str) else next(iter(entry))
            if path == metric_file:
                return name
    raise TuneError(f"objective metric file {metric_file}: no stage of dvc.yaml writes it")


def lookup(tree: Any, dotted: str) -> Any:
    """The value at `dotted` in a nested mapping, or KeyError."""
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            raise KeyError(dotted)
        tree = tree[part]
    return tree


def experiment_name(study: str, number: int) -> str:
    """The DVC experiment of trial `number`: `STUDY-t007`."""
    return f"{study}-t{number:03d}"


def pin_init_from(fixed: dict, base: dict, repo: Path) -> dict:
    """Resolve a stage named by `train.init_from` to its version once, so that every trial
    starts from the same parent even if the stage moves during the study."""
    ref = fixed.get("train.init_from", lookup(base, "train.init_from"))
    if not ref:
        return fixed
    return {**fixed, "train.init_from": registry.resolve_ref(repo, ref).tag}


# --- the study -----------------------------------------------------------------------------


def open_storage(url: str):
    """Optuna's SQLAlchemy storage at `url`, with heartbeats (see HEARTBEAT_S)."""
    import optuna

    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
    # SQLite: several threads or processes wait for the file's lock instead of failing.
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    # Workers that start together on a new database race to create Optuna's tables; the
    # loser's next attempt finds them made.
    for attempt in range(STORAGE_ATTEMPTS):
        try:
            with _quiet_optuna_warnings():
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S
                )
        except ImportError as exc:  # the URL names a driver that is not installed
            raise TuneError(f"study storage {redact(url)}: {exc}") from None
        except Exception as exc:  # SQLAlchemy's: a bad URL, no server, no access, a race
            error = exc
            time.sleep(attempt + 1)
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    raise TuneError(f"study storage {redact(url)}: cannot open it ({detail})")


def redact(url: str) -> str:
    """`url` with any password replaced by `***`, for messages."""
    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", url)


def study_sampler(config: TuneConfig, existing: int, shared: bool):
    """TPE seeded with `sampler.seed` plus the trials the study already holds (a resumed study
    draws new points rather than its first ones again); in a shared study each process also
    mixes in its host and pid, so that two workers never draw the same points."""
    import optuna

    seed = config.seed + existing
    if shared:
        seed = hash((seed, socket.gethostname(), os.getpid())) % 2**31
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=config.startup_trials)


def fail_dead_local_trials(study, storage) -> list[int]:
    """Mark FAIL the running trials of this machine whose process is gone (a killed `fmnist
    tune`); another machine's trials are left to the heartbeat. Returns their numbers."""
    from optuna.trial import TrialState

    host, failed = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid, began = trial.user_attrs.get("pid"), trial.datetime_start
        started_by = began.timestamp() if began else None  # a reused PID started later
        if (
            trial.user_attrs.get("host") == host
            and pid
            and not processes.running(pid, started_by=started_by)
        ):
            storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            failed.append(trial.number)
    return failed


def retry_interrupted(study) -> list[int]:
    """Queue the points of the trials a stopped run cut short, once each, so that a resumed
    study runs them first (Optuna would otherwise draw new points in their place)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    done = {t.user_attrs.get("retry_of") for t in trials}
    retried = []
    for trial in trials:
        attrs = trial.user_attrs
        if trial.state == TrialState.FAIL and attrs.get("interrupted") and trial.number not in done:
            keep = {"retry_of": trial.number, "baseline": attrs.get("baseline", False)}
            study.enqueue_trial(trial.params, user_attrs=keep)
            retried.append(trial.number)
    return retried


def counted(study) -> int:
    """Trials that count against the budget: finished, and running ones that will finish."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)))


@dataclasses.dataclass
class Runner:
    """Runs trials as DVC experiments of the repository in the current directory."""

    config: TuneConfig
    fixed: dict  # params set in every trial
    stage: str  # trials run up to this stage
    baseline_rev: str  # the commit the experiments branch from
    log_dir: Path
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    children: set = dataclasses.field(default_factory=set)

    def __call__(self, trial) -> float:
        """Optuna's objective: draw params, run the experiment, return its metric."""
        values = {d.key: d.suggest(trial) for d in self.config.space}
        name = experiment_name(self.config.study, trial.number)
        trial.set_user_attr("experiment", name)
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("baseline_rev", self.baseline_rev)
        shown = ", ".join(f"{k}={_short(v)}" for k, v in values.items())
        say(f"trial {trial.number} ({name}) started: {shown}")
        start = time.monotonic()
        self.run_experiment(name, {**self.fixed, **values})
        value = self.read_metric(name)
        trial.set_user_attr("minutes", round((time.monotonic() - start) / 60, 2))
        return value  # `report_trial` says so once the study has recorded it

    def run_experiment(self, name: str, overrides: dict) -> None:
        """`dvc exp run --temp -n NAME -S ... STAGE`, its output in the trial's log file."""
        # --wait-for-lock: trials started together (-j, or another dvc command) take turns at
        # the repository's lock while DVC sets their runs up, instead of failing.
        cmd = [
            sys.executable,
            "-m",
            "dvc",
            "--wait-for-lock",
            "exp",
            "run",
            "--temp",
            "-n",
            name,
            *set_arguments(overrides),
            self.stage,
        ]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "w") as log:
            log.write("$ " + " ".join(cmd) + "\n")
            log.flush()
            # Its own process group: DVC does not pass a SIGTERM on to the stage it runs, so
            # stopping a trial means signalling the whole group (`stop_children`).
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            with self.lock:
                self.children.add(proc)
            try:
                code = proc.wait()
            finally:
                with self.lock:
                    self.children.discard(proc)
                if proc.poll() is None:  # interrupted: the run must not finish unseen
                    _signal_group(proc, signal.SIGTERM)
                    proc.wait()
        if code != 0:
            tail = [line for line in log_path.read_text().splitlines() if line.strip()][-3:]
            raise TrialFailed(
                f"`dvc exp run` of {name} exited {code} (log: {log_path}): " + " | ".join(tail)
            )

    def read_metric(self, name: str) -> float:
        """The objective, read from the experiment's commit."""
        rev = experiment_rev(self.baseline_rev, name)
        text = read_at(rev, self.config.metric_file)
        if text is None:
            raise TrialFailed(f"{name} has no {self.config.metric_file}")
        try:
            value = lookup(yaml.safe_load(text), self.config.metric_key)
        except KeyError:
            raise TrialFailed(
                f"{name}: {self.config.metric_file} has no key {self.config.metric_key}"
            ) from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise TrialFailed(f"{name}: {self.config.metric} is {value!r}, not a number")
        return float(value)

    def stop_children(self) -> None:
        """Stop the running experiments (on Ctrl-C or SIGTERM)."""
        with self.lock:
            for proc in self.children:
                _signal_group(proc, signal.SIGTERM)


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
    """Send `signum` to `proc`'s process group: `dvc` and the stage it runs."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


class TrialFailed(Exception):
    """A trial's experiment failed or has no usable metric: the trial is FAIL, tuning goes on."""


def experiment_rev(baseline_rev: str, name: str) -> str:
    """The commit of experiment `name` of `baseline_rev` (DVC's ref layout)."""
    return f"refs/exps/{baseline_rev[:2]}/{baseline_rev[2:]}/{name}"


def read_at(rev: str, path: str) -> str | None:
    """A file as committed at `rev`: from git, or from the DVC cache if DVC tracks it."""
    text = git.git_show(".", rev, path)
    if text is not None:
        return text
    import dvc.api

    try:
        return dvc.api.read(path, repo=".", rev=rev)
    except Exception:  # DVC's many not-found errors
        return None


def say(message: str) -> None:
    """A progress line (flushed: a log file or a pipe sees it at once)."""
    print(f"tune: {message}", flush=True)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value)


def stop_after_failures(study, trial) -> None:
    """Optuna callback: stop when the last MAX_FAILURES_IN_A_ROW trials of this study failed."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.RUNNING]
    last = done[-MAX_FAILURES_IN_A_ROW:]
    if len(last) == MAX_FAILURES_IN_A_ROW and all(t.state == TrialState.FAIL for t in last):
        say(f"{MAX_FAILURES_IN_A_ROW} trials failed in a row: stopping (see the logs above)")
        study.set_user_attr("stopped_on_failures", True)
        study.stop()


def stop_at_budget(trials: int):
    """Optuna callback: stop once finished and running trials reach the budget."""

    def callback(study, trial) -> None:
        if counted(study) >= trials:
            study.stop()

    return callback


def report_trial(study, trial) -> None:
    """Optuna callback: one line per finished trial, once the study has recorded it (a stop
    after this line never loses the trial)."""
    from optuna.trial import TrialState

    name = trial.user_attrs.get("experiment", "")
    if trial.state == TrialState.COMPLETE:
        metric = study.user_attrs["config"]["metric"].partition(":")[2]
        say(
            f"trial {trial.number} ({name}) finished in {trial.user_attrs['minutes']:.1f} min: "
            f"{metric} = {trial.value:.4f}"
        )
    elif trial.state == TrialState.FAIL:
        say(f"trial {trial.number} ({name}) failed: {trial.user_attrs.get('error', 'see its log')}")


def open_study(storage, config: TuneConfig) -> tuple[Any, bool]:
    """The study `config` names, made if it does not exist; and whether this process made it.

    Of workers that start one study together, exactly one creates it (the database refuses
    the others), and only that one writes the study's record (see check_study).
    """
    import optuna

    try:
        study = optuna.create_study(
            study_name=config.study, storage=storage, direction=config.direction
        )
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=config.study, storage=storage), False


def study_record(study, name: str, wait_s: float = RECORD_WAIT_S) -> dict:
    """The record of a study another process created, once that process has written it."""
    deadline = time.monotonic() + wait_s
    while not (attrs := study.user_attrs).get("config"):
        if time.monotonic() >= deadline:
            raise TuneError(
                f"study {name} has no record of what it searches (the run that created it "
                "stopped before writing one): name a new study, or delete this one "
                f"(`optuna delete-study --study-name {name} --storage URL`)"
            )
        time.sleep(RECORD_POLL_S)
    return attrs


def check_study(
    study,
    config: TuneConfig,
    baseline_rev: str,
    base: dict,
    created: bool,
    wait_s: float = RECORD_WAIT_S,
) -> None:
    """A new study records what it searches; a resumed one must search the same thing from
    the same commit and params, or its trials would not be comparable.

    Only the process that `created` the study writes the record, so that two workers started
    together on different commits cannot both write one: the second is checked against the
    first's. Another process waits up to `wait_s` for the record to be whole.
    """
    # "config" is written last: it marks the record whole, so that another process opening
    # the study between two of these writes finds either no record or all of it.
    record = {"baseline_rev": baseline_rev, "base": base, "config": config.fingerprint()}
    if created:
        for key, value in record.items():
            study.set_user_attr(key, value)
        return
    attrs = study_record(study, config.study, wait_s)
    if attrs["config"] != record["config"]:
        changed = [k for k in record["config"] if attrs["config"].get(k) != record["config"][k]]
        raise TuneError(
            f"study {config.study} was started with another {', '.join(changed)}: name a new "
            "study (`study:` in tune.yaml, or --study) to search this one"
        )
    if attrs["baseline_rev"] != baseline_rev:
        raise TuneError(
            f"study {config.study} was started on commit {attrs['baseline_rev'][:9]}, and HEAD "
            f"is {baseline_rev[:9]}: its trials would not be comparable. Check out "
            f"{attrs['baseline_rev'][:9]} to resume it, or name a new study"
        )
    diff = registry.changed_params(attrs["base"], base)
    if diff:
        keys = ", ".join(diff)
        raise TuneError(
            f"study {config.study} was started with other workspace params ({keys}): restore "
            "them to resume it, or name a new study"
        )


def enqueue_baseline(study, config: TuneConfig, fixed_params: dict) -> None:
    """Trial 0 of a new study: the workspace's own params, if the space holds them."""
    values = {d.key: lookup(fixed_params, d.key) for d in config.space}
    outside = [d.key for d in config.space if not d.contains(values[d.key])]
    if outside:
        say(f"baseline skipped: the workspace's {', '.join(outside)} is outside the space")
        return
    encoded = {key: encode(value) for key, value in values.items()}
    study.enqueue_trial(encoded, user_attrs={"baseline": True}, skip_if_exists=True)


# --- results -------------------------------------------------------------------------------


def summarise(study, config: TuneConfig, workspace: dict, out_dir: Path) -> dict | None:
    """Print what to do with the best trial and write best.json and the two plots."""
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        say("no trial has finished yet: nothing to report")
        return None
    best = study.best_trial
    name = best.user_attrs["experiment"]
    rev = experiment_rev(best.user_attrs["baseline_rev"], name)
    params = yaml.safe_load(read_at(rev, "params.yaml") or "{}") or {}
    diff = registry.changed_params(workspace, params)
    baseline = [t for t in complete if t.user_attrs.get("baseline")]
    summary = {
        "study": config.study,
        "objective": {"metric": config.metric, "direction": config.direction},
        "trials": {
            state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,)))
            for state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING)
        },
        "best": {
            "trial": best.number,
            "experiment": name,
            "value": best.value,
            "params": {d.key: decode(best.params[d.key]) for d in config.space},
        },
        "baseline": (
            {"trial": baseline[0].number, "value": baseline[0].value} if baseline else None
        ),
        "changed_from_workspace": {k: {"workspace": a, "best": b} for k, (a, b) in diff.items()},
        "apply": f"dvc exp apply {name}",
        "branch": f"dvc exp branch {name} {config.study}-best",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    summary["plots"] = write_plots(study, out_dir)
    atomic.write_json(out_dir / "best.json", summary)
    print(format_summary(summary, out_dir))
    return summary


def format_summary(summary: dict, out_dir: Path) -> str:
    """The summary as lines for a terminal."""
    best, counts = summary["best"], summary["trials"]
    metric = summary["objective"]["metric"]
    lines = [
        "",
        f"study {summary['study']}: {counts['complete']} trials finished, "
        f"{counts['fail']} failed; objective {metric} ({summary['objective']['direction']})",
        f"best: trial {best['trial']}, experiment {best['experiment']}: {best['value']:.4f}",
    ]
    if summary["baseline"]:
        base = summary["baseline"]
        lines.append(
            f"baseline (the workspace's params): trial {base['trial']}: {base['value']:.4f}"
        )
    changes = summary["changed_from_workspace"]
    lines.append("params of the best trial that differ from the workspace's params.yaml:")
    lines += [
        f"  {k}: {json.dumps(v['workspace'])} -> {json.dumps(v['best'])}"
        for k, v in changes.items()
    ] or ["  none"]
    lines += [
        f"apply it to the workspace:  {summary['apply']}",
        f"or make it a branch:        {summary['branch']}",
        f"every trial:                dvc exp show --sort-by {metric}",
        f"written: {out_dir / 'best.json'}" + "".join(f", {p}" for p in summary["plots"]),
    ]
    return "\n".join(lines)


def write_plots(study, out_dir: Path) -> list[str]:
    """Optuna's optimisation history and param importances as PNGs (importances need two
    finished trials that differ)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    written = []
    for name, draw in (
        ("optimization_history.png", plots.plot_optimization_history),
        ("param_importances.png", plots.plot_param_importances),
    ):
        try:
            with _quiet_optuna_warnings():
                axes = draw(study)
        except (ValueError, RuntimeError) as exc:  # too few or identical trials
            say(f"{name} not drawn: {exc}")
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.tight_layout()
        figure.savefig(out_dir / name, dpi=100)
        plt.close(figure)
        written.append(str(out_dir / name))
    return written


@contextlib.contextmanager
def _quiet_optuna_warnings():
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


# --- the command ---------------------------------------------------------------------------


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (`kill`, a CI timeout) stops tuning as Ctrl-C does: the running experiments
    are stopped and their trials marked failed, so a rerun starts them again."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def tune(config: TuneConfig, storage_url: str, jobs: int, out_dir: Path) -> dict | None:
    """Run (or resume) the study until its budget is spent; return the summary."""
    import optuna

    params_text = Path("params.yaml").read_text()
    base = yaml.safe_load(params_text) or {}
    check_space(config, base)
    spec = yaml.safe_load(Path("dvc.yaml").read_text()) or {}
    stage = objective_stage(spec, config.metric_file)
    current = Path(config.metric_file)
    if current.is_file():  # the metric as the workspace's last run wrote it
        try:
            lookup(yaml.safe_load(current.read_text()), config.metric_key)
        except KeyError:
            raise TuneError(
                f"objective {config.metric}: {config.metric_file} has no key "
                f"{config.metric_key} (run the pipeline once to see its keys)"
            ) from None
    fixed = pin_init_from(config.fixed, base, Path("."))
    head = git.git_commit(".")["commit"]
    if head is None:
        raise TuneError("not in a git repository with a commit: DVC experiments need one")

    # Our own line per failed trial instead of Optuna's warning with a traceback.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(storage_url)
    study, created = open_study(storage, config)
    check_study(study, config, head, base, created)
    stale = fail_dead_local_trials(study, storage)
    if stale:
        say(f"trial(s) {', '.join(map(str, stale))} of a killed run marked failed")
    retried = retry_interrupted(study)
    if retried:
        say(f"the point(s) of trial(s) {', '.join(map(str, retried))}, cut short, run first")
    existing = len(study.trials)
    shared = not storage_url.startswith("sqlite")
    study.sampler = study_sampler(config, existing, shared)
    if config.baseline and existing == 0:
        enqueue_baseline(study, config, with_overrides(base, fixed))
    remaining = config.trials - counted(study)
    runner = Runner(config, fixed, stage, head, out_dir / "logs")
    if remaining <= 0:
        say(f"study {config.study} has its {config.trials} trials: nothing to run")
    else:
        done = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
        where = f"{done} finished, " if existing else ""
        limit = f", at most {config.minutes:g} min" if config.minutes else ""
        say(
            f"study {config.study} ({redact(storage_url)}): {where}{remaining} to run, "
            f"{jobs} at a time{limit}; each trial is `dvc exp run --temp ... {stage}`"
        )
        try:
            with sigterm_as_interrupt():
                study.optimize(
                    _record_errors(runner),
                    n_trials=remaining,
                    timeout=config.minutes * 60 or None,
                    n_jobs=jobs,
                    catch=(TrialFailed,),
                    callbacks=[report_trial, stop_after_failures, stop_at_budget(config.trials)],
                )
        except KeyboardInterrupt:
            runner.stop_children()
            raise
    return summarise(study, config, base, out_dir)


def _record_errors(runner: Runner):
    """The objective, with a failed trial's reason kept on the trial for the report, and a
    trial cut short by a stop marked so."""

    def objective(trial) -> float:
        try:
            return runner(trial)
        except TrialFailed as exc:
            trial.set_user_attr("error", str(exc))
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)  # run again first when the study resumes
            raise

    return objective


@report_errors
def main(argv: list[str] | None = None) -> int:
    """`fmnist tune [--config tune.yaml] [--study NAME] [--trials N] [--minutes M] ...`."""
    parser = argparse.ArgumentParser(
        prog="fmnist tune",
        description="Search params with Optuna; every trial is a DVC experiment.",
    )
    parser.add_argument("--config", default=CONFIG_FILE, help="the search space and budget")
    parser.add_argument("--study", help="study name (default: tune.yaml's `study`)")
    parser.add_argument("--trials", type=int, help="total trials of the study (budget)")
    parser.add_argument("--minutes", type=float, help="wall-clock limit of this run (0: none)")
    parser.add_argument(
        "--storage",
        default=DEFAULT_STORAGE,
        help="Optuna storage: a SQLAlchemy URL shared by several machines, e.g. "
        f"postgresql+psycopg://USER:PASSWORD@HOST/DB (default: {DEFAULT_STORAGE})",
    )
    parser.add_argument(
        "-j", "--jobs", type=int, default=1, help="trials run at once on this machine"
    )
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="where STUDY/ results go")
    add_set_option(parser, on_top_of="tune.yaml's `set` in every trial")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    updates = {
        "study": args.study,
        "trials": args.trials,
        "minutes": args.minutes,
    }
    config = dataclasses.replace(config, **{k: v for k, v in updates.items() if v is not None})
    if not NAME.fullmatch(config.study):
        raise TuneError(f"--study {config.study!r}: use letters, digits, '-' and '_'")
    if config.trials < 1 or config.minutes < 0 or args.jobs < 1:
        raise TuneError("--trials and --jobs must be >= 1, --minutes >= 0")
    sets = parse_set_options(args.set)
    if set(sets) & {d.key for d in config.space}:
        raise TuneError("-S sets a key that the space searches")
    config = dataclasses.replace(config, fixed={**config.fixed, **sets})
    tune(config, args.storage, args.jobs, args.out / config.study)
    return 0


if __name__ == "__main__":
    sys.exit(main())
