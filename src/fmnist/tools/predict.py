"""`fmnist predict`: classify images with a packaged model, local or from the registry.

Reads image files (PNG, JPEG; with `--preprocess` also GIF, BMP, WebP), directories (every image
file in them, recursively, by extension), IDX image files (`*-ubyte`, `.idx`, gzipped or not),
Kaggle-style CSV files (`label,pixel1..pixel784`) and `.npy` arrays of uint8 pixels. It answers
with the package's SavedModel, as a server would: `serving_default` for pixels, `serving_bytes`
for images with `--preprocess`. Without `--preprocess` an image must already be what the model
takes (8-bit grayscale, 28×28, a light garment on black); with it, any photo the bytes signature
can decode is converted as Fashion-MNIST's images were (`fmnist.serving.preprocess`).

It prints which model answered (a registered version and its commit, or a directory), then
the top-k classes of each input with the out-of-distribution flag, as a table or JSON. A file
that cannot be used gets one `error:` line and the others are still answered; the exit code is
1 if any failed.

    fmnist predict [PACKAGE] INPUT...                  # PACKAGE defaults to models/package
    fmnist predict --preprocess photos/                # any photos, converted first
    fmnist predict --version v1.2.0 FILE...            # a registered version, verified
    fmnist predict --stage prod --json FILE...         # the version GTO shows in a stage
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from fmnist.dataset import CLASS_NAMES, NUM_CLASSES
from fmnist.errors import PipelineError, report_errors
from fmnist.serving import layout, signatures
from fmnist.tools import registry
from fmnist.tools.image_files import (
    IMAGE_SUFFIXES,
    PREPROCESS_SUFFIXES,
    Inputs,
    expand,
    read_all,
)

DEFAULT_PACKAGE = Path("models/package")
# Images sent to the model at once.
BATCH_SIZE = 256


def top_k(probs: np.ndarray, k: int) -> list[list[dict]]:
    """The k most probable classes of each row, most probable first."""
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [
        [{"class_id": int(c), "class": CLASS_NAMES[c], "probability": float(row[c])} for c in ranks]
        for row, ranks in zip(probs, order)
    ]


def answers(outputs: dict[str, tf.Tensor], k: int) -> list[dict]:
    """One result per row of a signature's `outputs`: top-k, OOD score and flag, or error."""
    probs = outputs["probabilities"].numpy()
    tops = top_k(probs, k)
    scores = outputs["ood_score"].numpy()
    flags = outputs["out_of_distribution"].numpy()
    errors = outputs["error"].numpy() if "error" in outputs else [b""] * len(probs)
    return [
        {"error": error.decode()}
        if error
        else {"top": top, "ood_score": round(float(score), 4), "out_of_distribution": bool(flag)}
        for top, score, flag, error in zip(tops, scores, flags, errors)
    ]


def classify(package: Path, got: Inputs, k: int, signature: str) -> dict[str, dict]:
    """Each input's result by label, from the package's SavedModel, in batches."""
    served = signatures.load_signatures(package)
    results: dict[str, dict] = {}
    if got.pixel_arrays:
        pixels = np.concatenate(got.pixel_arrays)[..., None]  # (N, 28, 28, 1)
        for start in range(0, len(pixels), BATCH_SIZE):
            out = served[signature](pixels=tf.constant(pixels[start : start + BATCH_SIZE]))
            labels = got.pixels[start : start + BATCH_SIZE]
            results |= dict(zip(labels, answers(out, k)))
    for start in range(0, len(got.encoded_bytes), BATCH_SIZE):
        batch = tf.constant(got.encoded_bytes[start : start + BATCH_SIZE])
        out = served[signatures.BYTES_SIGNATURE](image_bytes=batch)
        results |= dict(zip(got.encoded[start : start + BATCH_SIZE], answers(out, k)))
    return results


def answer(
    args: argparse.Namespace, package_dir: Path | None, got: Inputs, signature: str
) -> tuple[dict, dict[str, dict]]:
    """Where the answers come from, and each usable input's result: from `package_dir`, or
    (None) from the version the registry gives for `args`' version or stage."""
    with contextlib.ExitStack() as stack:
        resolved = None
        if package_dir is None:
            # The version GTO shows for the stage, fetched by version and verified.
            resolved = registry.resolve(args.repo, args.version, args.stage)
            package_dir = stack.enter_context(
                registry.fetched(args.repo, version=resolved.version, commit=resolved.commit)
            )
        return provenance(package_dir, resolved), classify(package_dir, got, args.top_k, signature)


def format_table(labels: list[str], tops: list[list[dict]], flags: list[bool] | None = None) -> str:
    """A plain-text table: one line per input, its top-k classes with probabilities, and
    `out of distribution` where flagged."""
    width = max(len("input"), *(len(label) for label in labels))
    k = len(tops[0])
    header = f"{'input':<{width}}  " + "  ".join(f"{f'#{i + 1}':<20}" for i in range(k))
    lines = [header.rstrip()]
    for i, (label, top) in enumerate(zip(labels, tops)):
        cells = "  ".join(f"{t['class']} {t['probability']:.3f}".ljust(20) for t in top)
        note = "  out of distribution" if flags and flags[i] else ""
        lines.append(f"{label:<{width}}  {cells}".rstrip() + note)
    return "\n".join(lines)


def is_package(path: Path) -> bool:
    """Whether `path` is a model package directory (rather than a directory of inputs)."""
    return path.is_dir() and (path / layout.SAVED_MODEL_FILE).is_file()


def split_arguments(args: argparse.Namespace) -> tuple[Path | None, list[Path]]:
    """(local package or None for the registry, inputs) from the positional arguments: the
    first is the package if it is a package directory."""
    items = [Path(p) for p in args.items]
    if args.version or args.stage:
        return None, items
    if items and is_package(items[0]):
        return items[0], items[1:]
    return DEFAULT_PACKAGE, items


def provenance(package: Path, resolved: registry.Resolved | None) -> dict:
    """What answered: the registered version (its stage and commit), or the directory. The
    package is verified against its manifest first (`layout.load_package`)."""
    layout.load_package(package)
    if resolved is None:
        return {"package": str(package)}
    out = {"version": resolved.version, "stage": resolved.stage, "commit": resolved.commit}
    return {k: v for k, v in out.items() if v is not None}


def describe(source: dict) -> str:
    """`source` (from `provenance`) in one line."""
    if "version" not in source:
        return f"answered by the package in {source['package']}"
    what = f"{registry.ARTIFACT} {source['version']}"
    if "stage" in source:
        what += f" (stage {source['stage']})"
    return f"answered by {what}, registered at commit {source['commit'][:12]}"


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fmnist predict",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[-1],
    )
    parser.add_argument(
        "items",
        nargs="+",
        metavar="INPUT",
        help="files or directories of inputs, after an optional package directory",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--version", help=f"a registered version of {registry.ARTIFACT}")
    source.add_argument("--stage", help="the version assigned to this stage (e.g. prod)")
    parser.add_argument("--repo", default=".", help="the registry's git repo (path or URL)")
    parser.add_argument(
        "--preprocess",
        action="store_true",
        help="convert images (any size, colour, background) as Fashion-MNIST's were, with the "
        "package's serving_bytes signature",
    )
    parser.add_argument(
        "--averaged",
        action="store_true",
        help="average pixel inputs over the test-time views (serving_averaged)",
    )
    parser.add_argument("-k", "--top-k", type=int, default=3, help="classes shown per input")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    # Options may come between inputs: `predict models/package --json images/`.
    args = parser.parse_intermixed_args(argv)
    if not 1 <= args.top_k <= NUM_CLASSES:
        raise PipelineError(f"--top-k must be between 1 and {NUM_CLASSES}, got {args.top_k}")
    package_dir, items = split_arguments(args)
    suffixes = PREPROCESS_SUFFIXES if args.preprocess else IMAGE_SUFFIXES
    paths = expand(items, suffixes)
    if not paths:
        raise PipelineError(
            "no inputs: give image files, directories of them, or .npy/IDX/CSV files"
            if not items
            else f"no image files ({', '.join(sorted(suffixes))}) in {', '.join(map(str, items))}"
        )
    got = read_all(paths, args.preprocess)
    signature = signatures.AVERAGED_SIGNATURE if args.averaged else signatures.SIGNATURE
    # No model is fetched or loaded when no input can be used.
    source, results = answer(args, package_dir, got, signature) if got.usable else (None, {})
    results |= {label: {"error": message} for label, message in got.errors.items()}
    rows = [{"input": label, **results[label]} for label in got.order]
    failed = [row for row in rows if "error" in row]
    for row in failed:
        print(f"error: {row['input']}: {row['error']}", file=sys.stderr)
    good = [row for row in rows if "error" not in row]
    if args.json:
        print(json.dumps({"model": source, "results": rows}, indent=2))
    elif source:
        print(describe(source))
        if good:
            flags = [row["out_of_distribution"] for row in good]
            print(format_table([row["input"] for row in good], [r["top"] for r in good], flags))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
