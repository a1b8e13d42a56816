"""Which settings train the same model bytes: each setting trained twice, each run in a new Python.

Trains the default recipe (params.yaml, or `-S KEY=VALUE` on top) on the first `--images`
prepared training images for `--epochs` epochs, the way the `train` stage does (seeded,
deterministic ops, the pipeline's input path), saves the model as the stage does, and prints,
per setting, the SHA-256 of the saved `.keras` file and of the weights alone, whether the two
runs agree, and whether the setting's model is the reference's (the first setting).

The settings vary what differs between machines: precision, TensorFlow's oneDNN kernels on or off,
the number of cores (`taskset`) or of intra-op threads (`TF_NUM_INTRAOP_THREADS`) TensorFlow
uses, and the instruction set oneDNN may use (`ONEDNN_MAX_CPU_ISA`: capped at SSE4.1, it runs the
kernels an older CPU family would get). On one CPU kind this shows which settings move the bytes,
not what another CPU family does.

    dvc repro prepare && python3 benchmarks/determinism.py --images 2000 --epochs 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tabulate import tabulate

from fmnist.errors import report_errors

ONEDNN = "TF_ENABLE_ONEDNN_OPTS"
ISA = "ONEDNN_MAX_CPU_ISA"
# name -> (train.precision, environment, cores or None for all).
THREADS = "TF_NUM_INTRAOP_THREADS"  # TensorFlow's intra-op thread pool (default: one per core)
SETTINGS = {
    "float32, oneDNN on": ("float32", {ONEDNN: "1"}, None),
    "float32, oneDNN on, 1 core": ("float32", {ONEDNN: "1"}, 1),
    "float32, oneDNN on, 1 intra-op thread": ("float32", {ONEDNN: "1", THREADS: "1"}, None),
    "float32, oneDNN on, capped at AVX2": ("float32", {ONEDNN: "1", ISA: "AVX2"}, None),
    "float32, oneDNN on, capped at SSE4.1": ("float32", {ONEDNN: "1", ISA: "SSE41"}, None),
    "float32, oneDNN off": ("float32", {ONEDNN: "0"}, None),
    "float32, oneDNN off, 1 core": ("float32", {ONEDNN: "0"}, 1),
    "float32, oneDNN off, 1 intra-op thread": ("float32", {ONEDNN: "0", THREADS: "1"}, None),
    "mixed_bfloat16, oneDNN on": ("mixed_bfloat16", {ONEDNN: "1"}, None),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/prepared"))
    parser.add_argument("--images", type=int, default=2000, help="training images (default 2000)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--runs", type=int, default=2, help="runs per setting (default 2)")
    parser.add_argument(
        "--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS, metavar="SETTING"
    )
    parser.add_argument(
        "-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="params on top"
    )
    parser.add_argument("--worker", metavar="OUT", help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    return parser.parse_args()


def worker(args: argparse.Namespace) -> None:
    """Train once in this process's setting; print the hashes and the setting seen, as JSON."""
    # The stages' process settings first, and TensorFlow's start-up lines held back, as
    # `python -m fmnist.stages` does.
    from fmnist import launch

    launch.load("tensorflow")
    import numpy as np

    from fmnist import environment
    from fmnist.dataset import load_split
    from fmnist.model import saving
    from fmnist.stages import train
    from fmnist.tools.recipe import recipe_with_sets
    from fmnist.training import device

    sets = [*args.set, f"train.precision={args.precision}", f"train.epochs={args.epochs}"]
    params = recipe_with_sets("default", sets)
    images, labels = load_split(args.data / "train.npz")
    val_images, val_labels = load_split(args.data / "val.npz")
    runtime = device.setup(params.train)
    model, _ = train.train(
        params,
        (images[: args.images], labels[: args.images]),
        (val_images[:500], val_labels[:500]),
    )
    out = Path(args.worker)
    saving.save_model(saving.for_inference(model, params.model), out)
    weights = hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in model.get_weights()))
    result = {
        "file": hashlib.sha256(out.read_bytes()).hexdigest(),
        "weights": weights.hexdigest(),
        "precision": runtime["precision"],
        "onednn": runtime["onednn"],
        "cores": len(os.sched_getaffinity(0)),
        "versions": {k: v for k, v in environment.record().items() if k != "lock_drift"},
    }
    print(json.dumps(result))


def run(args: argparse.Namespace, setting: str, scratch: Path) -> dict:
    """One run of `setting` in a new Python."""
    precision, env, cores = SETTINGS[setting]
    out = scratch / "model.keras"
    command = [sys.executable, __file__, *sys.argv[1:], "--worker", str(out)]
    command += ["--precision", precision]
    if cores:
        command = ["taskset", "-c", ",".join(map(str, range(cores))), *command]
    environ = {**os.environ, **env}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, ["src", environ.get("PYTHONPATH")]))
    proc = subprocess.run(command, env=environ, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        if lines and lines[-1].startswith("error: "):  # the worker's one line: say it once
            raise SystemExit(f"{lines[-1]} (in the {setting!r} run)")
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"error: the {setting!r} run failed (its output is above)")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["onednn"] != (env[ONEDNN] == "1") or (cores and result["cores"] != cores):
        raise RuntimeError(f"{setting}: the setting did not take effect ({result})")
    return result


@report_errors
def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    if shutil.which("taskset") is None:
        raise SystemExit("error: taskset (util-linux) is needed for the 1-core settings")
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for setting in args.settings:
            for run_index in range(args.runs):
                print(f"{setting}: run {run_index + 1} of {args.runs}", file=sys.stderr)
                results.setdefault(setting, []).append(run(args, setting, Path(scratch)))
    from machine import describe  # after the runs: it starts TensorFlow in this process

    reference = results[args.settings[0]][0]
    numbers = {setting: i + 1 for i, setting in enumerate(results)}
    rows = []
    for setting, runs in results.items():
        files, weights = {r["file"] for r in runs}, {r["weights"] for r in runs}
        twins = [
            str(numbers[other])
            for other, theirs in results.items()
            if other != setting and {r["weights"] for r in theirs} == weights
        ]
        rows.append(
            [
                f"{numbers[setting]}. {setting}",
                " ".join(sorted(f[:10] for f in files)),
                " ".join(sorted(w[:10] for w in weights)),
                "yes" if len(files) == 1 else "no",
                "yes" if weights == {reference["weights"]} else "no",
                ", ".join(twins) or "none",
            ]
        )
    print(f"machine: {describe()}")
    print(f"versions: {json.dumps(reference['versions'])}")
    print(f"{args.images} images, {args.epochs} epochs, {args.runs} runs per setting")
    header = [
        "setting",
        "model.keras SHA-256",
        "weights SHA-256",
        "runs identical",
        f"same weights as '{args.settings[0]}'",
        "same weights as",
    ]
    print(tabulate(rows, header, tablefmt="github"))


if __name__ == "__main__":
    sys.exit(main())
