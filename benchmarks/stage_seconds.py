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

STAGES = ("evaluate", "package")
# What the stages read, relative to the repository root (their default paths).
INPUTS = ("params.yaml", "data/prepared", "models/model.keras", "metrics")


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


def run_stage(stage: str, revision: str, src: Path, workspace: Path) -> float:
    """Seconds `stage` took with `revision`'s code in `src`; exits after its message if it
    failed."""
    cmd = [sys.executable, "-m", "fmnist.stages", stage]
    if stage == "package":
        cmd += ["--lock", "no-lock"]
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=workspace, env={**os.environ, "PYTHONPATH": str(src)}, capture_output=True
    )
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.stderr.write(proc.stderr.decode())  # the stage's own message says what is wrong
        sys.exit(f"{stage} failed with the code of {revision} (its message is above)")
    return seconds


def print_table(revisions: list[str], seconds: dict[tuple[str, str], list[float]]) -> None:
    print("| stage | revision | median s | min-max s | speed-up over the first |")
    print("|---|---|---|---|---|")
    for stage in (*STAGES, "both"):
        first = None
        for revision in revisions:
            if stage == "both":
                runs = [sum(pair) for pair in zip(*(seconds[s, revision] for s in STAGES))]
            else:
                runs = seconds[stage, revision]
            median = statistics.median(runs)
            first = first or median
            print(
                f"| {stage} | {revision} | {median:.1f} | {min(runs):.1f}-{max(runs):.1f} "
                f"| {first / median:.2f}× |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "revisions", nargs="*", default=["."], help='git revisions ("." = the working tree)'
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    missing = [name for name in INPUTS if not Path(name).exists()]
    if missing:
        sys.exit(f"{', '.join(missing)}: missing here; run `dvc repro` (or `dvc pull`) first")
    import machine  # imports TensorFlow: once the inputs are known to be there

    print(machine.describe())
    seconds: dict[tuple[str, str], list[float]] = {
        (stage, revision): [] for stage in STAGES for revision in args.revisions
    }
    with tempfile.TemporaryDirectory(prefix="stage-seconds-") as tmp:
        workspace = scratch_workspace(Path(tmp) / "workspace")
        sources = {
            revision: checkout(revision, Path(tmp) / f"rev{i}")
            for i, revision in enumerate(args.revisions)
        }
        for round_ in range(1, args.rounds + 1):
            for revision, src in sources.items():
                for stage in STAGES:
                    seconds[stage, revision].append(run_stage(stage, revision, src, workspace))
                    print(
                        f"round {round_}: {stage} with {revision}: "
                        f"{seconds[stage, revision][-1]:.1f} s",
                        flush=True,
                    )
    print_table(args.revisions, seconds)


if __name__ == "__main__":
    main()
