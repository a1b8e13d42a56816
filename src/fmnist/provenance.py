"""What each stage actually ran with: the params values it read and the code it ran.

DVC writes a stage's params into `dvc.lock` when the stage *ends*, reading `params.yaml` at
that moment. A command started meanwhile (`dvc exp run -S evaluate.misclassified=16` while
`dvc repro` runs `evaluate`) can change the file under the running stage, and `dvc.lock` then
records a value the outputs were not made with. So every stage writes its own record, from the
values its process loaded: `metrics/provenance/STAGE.json` (declared in `dvc.yaml`, kept in
git). `package` copies the records into the package and refuses, naming the keys, when a
record disagrees with the params it packages or with `dvc.lock`; registration checks the same
at the commit it tags.

A record is `{"stage", "params": {dotted key: value}, "params_sha256", "code": {path: MD5}}`:
the params of the groups the stage reads (as `dvc.yaml` lists them) and the MD5 (as DVC hashes
a file) of every `fmnist` module the process loaded. Neither depends on a git commit.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

from fmnist import atomic
from fmnist.errors import PipelineError
from fmnist.params import Params, flatten, params_to_dict

# The params groups each stage reads: the keys `dvc.yaml` lists for it ("" = every key).
STAGE_PARAMS: dict[str, tuple[str, ...]] = {
    "fetch": ("fetch",),
    "prepare": ("prepare",),
    "train": ("model", "train"),
    "evaluate": ("evaluate",),
    "package": ("",),
}
# The stages whose records `package` reads (its own record goes into the package).
UPSTREAM = ("fetch", "prepare", "train", "evaluate")
RECORD_KEYS = ("stage", "params", "params_sha256", "code")


class ProvenanceError(PipelineError):
    """A stage's outputs were made with other params or code than recorded elsewhere."""


def stage_params(stage: str, params: Params) -> dict[str, Any]:
    """The params `stage` reads, as {dotted key: value}."""
    groups = STAGE_PARAMS[stage]
    return {
        key: value
        for key, value in flatten(params_to_dict(params)).items()
        if any(g == "" or key == g or key.startswith(f"{g}.") for g in groups)
    }


def digest(values: dict[str, Any]) -> str:
    """SHA-256 of `values` as canonical JSON: equal params give equal digests."""
    text = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def code_files(root: Path | None = None) -> dict[str, str]:
    """The MD5 of every `fmnist` module this process has loaded, by path relative to `root`
    (default: the working directory, the repository root when DVC runs a stage)."""
    root = (root or Path.cwd()).resolve()
    out = {}
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not file or not (name == "fmnist" or name.startswith("fmnist.")):
            continue
        path = Path(file).resolve()
        key = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        out[key] = atomic.file_md5(path)
    return dict(sorted(out.items()))


def record(stage: str, params: Params) -> dict:
    """The provenance record of `stage` run in this process with `params`."""
    values = stage_params(stage, params)
    return {
        "stage": stage,
        "params": values,
        "params_sha256": digest(values),
        "code": code_files(),
    }


def write(path: str | Path, stage: str, params: Params) -> None:
    """Write this process's record of `stage`: call it once the stage's work is done."""
    atomic.write_json(path, record(stage, params))


def validate(rec: Any, where: str, stage: str) -> dict:
    """`rec` if it is a provenance record of `stage`; a `ProvenanceError` naming `where` if not."""
    if not isinstance(rec, dict) or any(key not in rec for key in RECORD_KEYS):
        raise ProvenanceError(
            f"{where}: not a provenance record (needs {', '.join(RECORD_KEYS)}); "
            f"rerun the stage: `dvc repro -f -s {stage}`"
        )
    if rec["stage"] != stage or not isinstance(rec["params"], dict):
        raise ProvenanceError(f"{where}: not the record of stage {stage}")
    if digest(rec["params"]) != rec["params_sha256"]:
        raise ProvenanceError(
            f"{where}: its params do not match its params_sha256 (edited by hand?); "
            f"rerun the stage: `dvc repro -f -s {stage}`"
        )
    return rec


def read(path: str | Path, stage: str) -> dict:
    """The record `stage` wrote at `path`, checked."""
    return validate(atomic.read_json(path, stage), str(path), stage)


def lock_entry(lock: dict, stage: str) -> tuple[dict[str, Any], dict[str, str]] | None:
    """(params as dotted keys, {dependency path: MD5}) that `dvc.lock` records for `stage`, or
    None if it records no run of it."""
    entry = (lock.get("stages") or {}).get(stage)
    if not isinstance(entry, dict):
        return None
    params: dict[str, Any] = {}
    for values in (entry.get("params") or {}).values():
        params |= flatten(values or {})
    deps = {d["path"]: d["md5"] for d in entry.get("deps") or [] if "md5" in d}
    return params, deps


def same_value(a: Any, b: Any) -> bool:
    """Whether two params values are equal, however YAML spelled them: PyYAML reads the
    `1e-07` that DVC writes into dvc.lock as a string, and `2` and `2.0` are one number."""
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    na, nb = _number(a), _number(b)
    if na is not None and nb is not None:
        return na == nb
    return a == b


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _show(value: Any) -> str:
    return json.dumps(value) if value is not _ABSENT else "(absent)"


_ABSENT = object()


def params_differences(ran: dict[str, Any], other: dict[str, Any]) -> dict[str, tuple]:
    """Keys of `ran` whose value differs in `other` (or is absent there): key -> (ran, other)."""
    return {
        key: (value, other.get(key, _ABSENT))
        for key, value in sorted(ran.items())
        if key not in other or not same_value(value, other[key])
    }


def problems(
    records: dict[str, dict],
    params: dict[str, Any],
    params_label: str,
    lock: dict | None,
) -> list[str]:
    """Every way the stages' `records` disagree with `params` (all the params, as dotted keys;
    `params_label` says whose: "params.yaml", "the package's params.json") or with `dvc.lock`:
    one sentence per stage, naming the keys and the values on both sides."""
    found = []
    for stage, rec in records.items():
        said = []
        for key, (ran, now) in params_differences(rec["params"], params).items():
            said.append(f"{key}={_show(ran)} ({params_label}: {_show(now)})")
        entry = lock_entry(lock, stage) if lock else None
        if entry is not None:
            locked_params, locked_deps = entry
            locked_here = {k: v for k, v in locked_params.items() if k in rec["params"]}
            for key, (ran, locked) in params_differences(rec["params"], locked_here).items():
                if key in locked_params:
                    said.append(f"{key}={_show(ran)} (dvc.lock: {_show(locked)})")
            for key in sorted(set(locked_params) - set(rec["params"])):
                said.append(f"{key} is in dvc.lock but not in the stage's record")
            for path, md5 in sorted(rec["code"].items()):
                if path in locked_deps and locked_deps[path] != md5:
                    said.append(f"{path} with MD5 {md5[:8]} (dvc.lock: {locked_deps[path][:8]})")
        if said:
            found.append(
                f"{stage} ran with {', '.join(said)}; rerun it: `dvc repro -f -s {stage}`, "
                "then `dvc repro`"
            )
    return found


def check(records: dict[str, dict], params: dict[str, Any], label: str, lock: dict | None):
    """Raise `ProvenanceError` with every problem `problems` finds, as one line."""
    found = problems(records, params, label, lock)
    if found:
        raise ProvenanceError(
            "the stages' outputs were not all made with the recorded params and code: "
            + "; ".join(found)
        )
