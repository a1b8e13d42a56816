"""Wall time of the stages after training (`evaluate`, `package`), for code revisions side by side.

Each revision's `src/` (from `git archive`) runs each stage as dvc.yaml runs it (`python3 -m
fmnist.stages NAME`, in a fresh process, imports included) on a scratch copy of this
workspace's trained model, prepared data and metrics; the rounds alternate the revisions, so a
machine that gets slower or faster during the run affects them alike. Prints the machine and,
per stage and revision, the median seconds over the rounds and the speed-up over the first
revision (its median divided by this one's). Run from the repository root after `dvc repro`
(or `dvc pull`):

    python3 benchmarks/stage_seconds.py                       # this checkout, 3 rounds
    python3 benchmarks/stage_seconds.py 2c84176 HEAD --rounds 5
    python3 benchmarks/stage_seconds.py -S evaluate.train_sample=2000   # params.yaml, and this

With `-S KEY=VALUE` (as `dvc exp run -S` takes it; repeatable, all in one set) each revision
also runs with those keys set, in the same rounds: what a setting of `evaluate` or `package`
costs or saves.

The workspace is not touched: the stages write into the scratch copy, which is then deleted.
`package` runs without dvc.lock there (`--lock` names no file), so it checks the provenance
records against params.yaml only: a revision's `evaluate` writes its own code's record.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from fmnist.errors import ParamsError
from fmnist.params import load_params, params_to_dict, with_overrides
from fmnist.tools.recipe import add_set_option, parse_set_options

STAGES = ("evaluate", "package")
# What the stages read, relative to the repository root (their default paths).
INPUTS = ("params.yaml", "data/prepared", "models/model.keras", "metrics")
# The params file of the `-S` set, written beside params.yaml in the scratch workspace.
SET_PARAMS = "params-set.yaml"


def checkout(revision: str, into: Path) -> Path:
    """`src/` of `revision` written under `into`; the directory to put on PYTHONPATH.
    "." is the working tree as it is, uncommitted changes included."""
    if revision == ".":
        shutil.copytree("src", into / "src", ignore=shutil.ignore_patterns("__pycache__"))
        return into / "src"
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", revision, "src"], capture_output=True)
    if archive.returncode:
        sys.exit(f"{revision}: not a revision git knows ({archive.stderr.decode().strip()})")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def scratch_workspace(into: Path) -> Path:
    """A copy of what the stages read."""
    for name in INPUTS:
        target = into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if Path(name).is_dir():
            shutil.copytree(name, target)
        else:
            shutil.copy2(name, target)
    return into


def set_params(sets: list[str]) -> dict:
    """params.yaml with the `-S KEY=VALUE` options `sets` on top; a malformed option or a key
    params.yaml does not have exits with one line. The stages check the values themselves, as
    they check params.yaml."""
    try:
        return with_overrides(params_to_dict(load_params("params.yaml")), parse_set_options(sets))
    except ParamsError as err:
        sys.exit(f"-S: {err}")


def run_stage(
    stage: str, revision: str, src: Path, workspace: Path, params: str | None = None
) -> tuple[float, str]:
    """Seconds `stage` took with `revision`'s code in `src` (and the params file `params`
    instead of params.yaml), and the last line it printed (what it reports); exits after its
    message if it failed."""
    cmd = [sys.executable, "-m", "fmnist.stages", stage]
    if stage == "package":
        cmd += ["--lock", "no-lock"]
    if params:
        cmd += ["--params", params]
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=workspace, env={**os.environ, "PYTHONPATH": str(src)}, capture_output=True
    )
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.stderr.write(proc.stderr.decode())  # the stage's own message says what is wrong
        sys.exit(f"{stage} failed with the code of {revision} (its message is above)")
    lines = proc.stdout.decode().strip().splitlines()
    return seconds, lines[-1] if lines else ""


def print_table(
    variants: list[tuple[str, str]], seconds: dict[tuple[str, str, str], list[float]]
) -> None:
    """One row per stage and (revision, params) variant; "both" sums the stages per round."""
    print("| stage | revision | params | median s | min-max s | speed-up over the first |")
    print("|---|---|---|---|---|---|")
    for stage in (*STAGES, "both"):
        first = None
        for revision, label in variants:
            if stage == "both":
                per_stage = (seconds[s, revision, label] for s in STAGES)
                runs = [sum(pair) for pair in zip(*per_stage)]
            else:
                runs = seconds[stage, revision, label]
            median = statistics.median(runs)
            first = first or median
            print(
                f"| {stage} | {revision} | {label} | {median:.1f} | "
                f"{min(runs):.1f}-{max(runs):.1f} | {first / median:.2f}× |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "revisions", nargs="*", default=["."], help='git revisions ("." = the working tree)'
    )
    parser.add_argument("--rounds", type=int, default=3)
    add_set_option(parser, on_top_of="params.yaml, as a second set each revision runs with")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    missing = [name for name in INPUTS if not Path(name).exists()]
    if missing:
        sys.exit(f"{', '.join(missing)}: missing here; run `dvc repro` (or `dvc pull`) first")
    # (label in the table, params file in the scratch workspace: None for params.yaml)
    param_sets: list[tuple[str, str | None]] = [("params.yaml", None)]
    if args.set:
        param_sets.append((" ".join(args.set), SET_PARAMS))
        overridden = set_params(args.set)
    import machine  # imports TensorFlow: once the inputs are known to be there

    print(machine.describe())
    variants = [(revision, label) for revision in args.revisions for label, _ in param_sets]
    seconds: dict[tuple[str, str, str], list[float]] = {
        (stage, *variant): [] for stage in STAGES for variant in variants
    }
    with tempfile.TemporaryDirectory(prefix="stage-seconds-") as tmp:
        workspace = scratch_workspace(Path(tmp) / "workspace")
        if args.set:
            (workspace / SET_PARAMS).write_text(yaml.safe_dump(overridden, sort_keys=False))
        sources = {
            revision: checkout(revision, Path(tmp) / f"rev{i}")
            for i, revision in enumerate(args.revisions)
        }
        for round_ in range(1, args.rounds + 1):
            for revision, src in sources.items():
                for label, params in param_sets:
                    for stage in STAGES:
                        took, said = run_stage(stage, revision, src, workspace, params)
                        seconds[stage, revision, label].append(took)
                        print(
                            f"round {round_}: {stage} with {revision}, {label}: {took:.1f} s "
                            f"({said})",
                            flush=True,
                        )
    print_table(variants, seconds)


if __name__ == "__main__":
    main()
