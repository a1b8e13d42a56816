"""Peak memory (resident set size) of each pipeline stage, run exactly as `dvc.yaml` runs it.

    python3 benchmarks/peak_memory.py                       # every stage, in order
    python3 benchmarks/peak_memory.py fetch prepare         # some stages

Run it from the repository root on the real dataset, after `dvc repro` has produced the inputs
of the stages you measure. It runs each stage's command itself (not through `dvc repro`, whose
own memory would mix in), so afterwards run `dvc repro` or `dvc status` as usual: the outputs
are the same bytes, the pipeline being deterministic. `train` trains in full: minutes to hours.

Each command runs under its own small Python parent, which reads `RUSAGE_CHILDREN` after it
exits: the peak RSS of the largest process of that stage alone. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from fmnist import dvcfiles
from fmnist.errors import report_errors

# Runs one command and reports the peak RSS of its largest process (Linux: ru_maxrss in KiB).
_PARENT = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[1], shell=True).returncode
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"code": code, "peak_kib": peak, "seconds": time.perf_counter() - start}))
"""


def measure(command: str, cwd: Path) -> dict:
    """Run `command` in `cwd`; its exit code, peak RSS (KiB) and wall time (s)."""
    proc = subprocess.run(
        [sys.executable, "-c", _PARENT, command],
        cwd=cwd,
        stdout=subprocess.PIPE,
        text=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stages", nargs="*", help="stages to measure (default: all)")
    parser.add_argument("--repo", type=Path, default=Path("."), help="repository root")
    args = parser.parse_args(argv)
    commands = dvcfiles.stage_commands(dvcfiles.read_spec(args.repo / "dvc.yaml"))
    unknown = set(args.stages) - set(commands)
    if unknown:
        parser.error(
            f"unknown stage(s) {', '.join(sorted(unknown))}; stages: {', '.join(commands)}"
        )
    rows = []
    for name in args.stages or commands:
        print(f"running {name}: {commands[name]}", file=sys.stderr)
        result = measure(commands[name], args.repo)
        rows.append((name, result))
        if result["code"] != 0:
            print(f"{name} exited {result['code']}; stopping", file=sys.stderr)
            break
    print("| stage | peak RSS (MiB) | wall time (s) | exit code |")
    print("|---|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['peak_kib'] / 1024:.0f} | {r['seconds']:.1f} | {r['code']} |")
    return 0 if all(r["code"] == 0 for _, r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
