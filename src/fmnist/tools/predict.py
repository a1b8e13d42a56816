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
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from fmnist.dataset import (
    CLASS_NAMES,
    IMAGE_SIZE,
    MAX_FILE_BYTES,
    NUM_CLASSES,
    decompress,
    parse_csv,
    parse_idx,
)
from fmnist.errors import DataError, ImageError, PipelineError, report_errors
from fmnist.serving import layout, signatures
from fmnist.tools import registry

# What a directory is searched for; PNG and JPEG are also what a file without --preprocess
# may be (as 28×28 grayscale).
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
PREPROCESS_SUFFIXES = IMAGE_SUFFIXES | {".gif", ".bmp", ".webp"}
DEFAULT_PACKAGE = Path("models/package")
# Images sent to the model at once.
BATCH_SIZE = 256

# (labels, images (N, 28, 28) uint8): one label per image, naming its file (and index).
Batch = tuple[list[str], np.ndarray]


def _size(shape: tuple[int, ...]) -> str:
    return "×".join(str(d) for d in shape)


# Every complete PNG ends with this chunk (length 0, type IEND, its CRC).
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def read_image(path: Path) -> np.ndarray:
    """An 8-bit grayscale 28×28 PNG or JPEG as (1, 28, 28) uint8."""
    try:
        data = path.read_bytes()
        if data.startswith(_PNG_SIGNATURE) and not data.endswith(_PNG_END):
            # Pillow decodes a PNG cut off after its pixel data without complaint.
            raise ImageError(f"{path}: not a readable image, or truncated (no closing IEND chunk)")
        with Image.open(io.BytesIO(data)) as img:
            # Mode and size come from the header: check them before decoding any pixels.
            if img.mode != "L":
                bands = len(img.getbands())
                raise ImageError(
                    f"{path}: a {img.mode} image ({bands} channel{'s' if bands > 1 else ''}); "
                    "expected 8-bit grayscale (mode L, one channel) like Fashion-MNIST. "
                    "Use --preprocess to convert photos, or convert it yourself, e.g. with "
                    "Pillow's Image.convert('L')"
                )
            if img.size != (IMAGE_SIZE, IMAGE_SIZE):
                raise ImageError(
                    f"{path}: the image is {_size(img.size)} pixels; expected "
                    f"{IMAGE_SIZE}×{IMAGE_SIZE}. Use --preprocess to convert photos, or "
                    "resize it first"
                )
            img.load()  # decodes everything: a truncated or corrupt file fails here
            return np.asarray(img, dtype=np.uint8).reshape(1, IMAGE_SIZE, IMAGE_SIZE)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a PNG or JPEG image (Pillow cannot identify it)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{path}: not a readable image, or truncated ({exc})") from None


def as_images(array: np.ndarray, where: str) -> np.ndarray:
    """Check an array of pixels and shape it (N, 28, 28): the shapes a user would pass."""
    if array.dtype != np.uint8:
        raise ImageError(
            f"{where}: dtype {array.dtype}; expected uint8 pixels 0..255, not scaled "
            "(predict scales them exactly as training did)"
        )
    square = (IMAGE_SIZE, IMAGE_SIZE)
    if array.shape == square or array.shape == (*square, 1):
        array = array.reshape(1, *square)
    elif array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3 or array.shape[1:] != square:
        raise ImageError(
            f"{where}: shape {array.shape}; expected one 28×28 grayscale image or a batch: "
            "(28, 28), (N, 28, 28) or (N, 28, 28, 1)"
        )
    if len(array) == 0:
        raise ImageError(f"{where}: holds no images")
    return array


def read_npy(path: Path) -> np.ndarray:
    """A `.npy` array of uint8 pixels as (N, 28, 28); no pickles are loaded."""
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ImageError(f"{path}: not a readable .npy array ({exc})") from None
    if not isinstance(array, np.ndarray):
        raise ImageError(f"{path}: not a single .npy array")
    return as_images(array, str(path))


def read_idx(path: Path) -> np.ndarray:
    """An IDX image file (gzipped or not) as (N, 28, 28)."""
    try:
        array = parse_idx(decompress(path.read_bytes(), str(path)), str(path), ndim=3)
    except DataError as exc:
        raise ImageError(str(exc)) from None
    return as_images(array, str(path))


def read_csv(path: Path) -> np.ndarray:
    """The images of a Kaggle-style CSV (`label,pixel1..pixel784`) as (N, 28, 28)."""
    try:
        images, _ = parse_csv(path.read_bytes(), str(path))
    except DataError as exc:
        raise ImageError(str(exc)) from None
    return images


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise ImageError(f"{path}: no such file or directory")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ImageError(f"{path}: larger than {MAX_FILE_BYTES} bytes")


def read_inputs(path: Path) -> Batch:
    """Every image in the file at `path`, as pixels, with a label for each."""
    _check_file(path)
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return [str(path)], read_image(path)
    if suffix == ".npy":
        images = read_npy(path)
    elif suffix == ".csv":
        images = read_csv(path)
    else:  # IDX has no fixed suffix (`t10k-images-idx3-ubyte`, `.idx`, `.gz`)
        images = read_idx(path)
    if len(images) == 1:
        return [str(path)], images
    return [f"{path}[{i}]" for i in range(len(images))], images


def expand(paths: list[Path], suffixes: set[str]) -> list[Path]:
    """`paths` with each directory replaced by the files in it (recursively) whose extension
    is in `suffixes`, sorted; files as given."""
    out = []
    for path in paths:
        if path.is_dir():
            found = (p for p in path.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
            out += sorted(found)
        else:
            out.append(path)
    return out


@dataclass
class Inputs:
    """What was read: pixels and encoded images to classify, and files that failed."""

    pixels: list[str] = field(default_factory=list)  # labels of `pixel_arrays`' rows
    pixel_arrays: list[np.ndarray] = field(default_factory=list)
    encoded: list[str] = field(default_factory=list)  # labels of `encoded_bytes`
    encoded_bytes: list[bytes] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # label -> why it cannot be used
    order: list[str] = field(default_factory=list)  # every label, in the order given

    @property
    def usable(self) -> bool:
        """Whether any input can be classified."""
        return bool(self.pixel_arrays or self.encoded_bytes)


def read_all(paths: list[Path], preprocess: bool) -> Inputs:
    """Read every input; a file that cannot be used is recorded in `errors`, not raised.

    With `preprocess`, image files are kept encoded for the bytes signature; everything else
    is read as pixels.
    """
    got = Inputs()
    for path in paths:
        try:
            if preprocess and path.suffix.lower() in PREPROCESS_SUFFIXES:
                _check_file(path)
                data = path.read_bytes()
                got.encoded.append(str(path))
                got.encoded_bytes.append(data)
                got.order.append(str(path))
            else:
                labels, images = read_inputs(path)
                got.pixels += labels
                got.pixel_arrays.append(images)
                got.order += labels
        except ImageError as exc:
            got.errors[str(path)] = str(exc).removeprefix(f"{path}: ")
            got.order.append(str(path))
        except OSError as exc:
            got.errors[str(path)] = f"cannot read it ({exc.strerror})"
            got.order.append(str(path))
    return got


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
