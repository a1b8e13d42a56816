"""`fmnist predict`: classify images with a packaged model, local or from the registry.

Reads PNG/JPEG images (8-bit grayscale, 28×28), IDX image files (`*-ubyte`, `.idx`, gzipped or
not), Kaggle-style CSV files (`label,pixel1..pixel784`) and `.npy` arrays of uint8 pixels, and
prints the top-k classes with their probabilities as a table or JSON. Inputs are scaled by
`fmnist.training.inputs.preprocess`, exactly as in training and evaluation. An input of the
wrong size, with colour channels, of the wrong dtype, or corrupt is refused with a message
naming the file.

    fmnist predict [PACKAGE] FILE...                   # PACKAGE defaults to models/package
    fmnist predict --version v1.2.0 FILE...            # a registered version
    fmnist predict --stage prod --json FILE...         # the version GTO shows in a stage
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

import keras
import numpy as np
from PIL import Image

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
from fmnist.serving import layout
from fmnist.tools import registry
from fmnist.training import inputs

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
DEFAULT_PACKAGE = Path("models/package")

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
                    "Convert it first, e.g. with Pillow's Image.convert('L')"
                )
            if img.size != (IMAGE_SIZE, IMAGE_SIZE):
                raise ImageError(
                    f"{path}: the image is {_size(img.size)} pixels; expected "
                    f"{IMAGE_SIZE}×{IMAGE_SIZE}. Resize it first"
                )
            img.load()  # decodes everything: a truncated or corrupt file fails here
            return np.asarray(img, dtype=np.uint8).reshape(1, IMAGE_SIZE, IMAGE_SIZE)
    except ImageError:
        raise
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


def read_inputs(path: Path) -> Batch:
    """Every image in the file at `path`, with a label for each."""
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ImageError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
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


def read_all(paths: list[Path]) -> Batch:
    """The images of every file, in order; fails on the first bad file, before any model work."""
    labels: list[str] = []
    arrays = []
    for path in paths:
        names, images = read_inputs(path)
        labels += names
        arrays.append(images)
    return labels, np.concatenate(arrays)


def classify(model: keras.Model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities (N, 10) for uint8 images (N, 28, 28), scaled as in training."""
    return np.asarray(model.predict(inputs.preprocess(images), batch_size=batch_size, verbose=0))


def top_k(probs: np.ndarray, k: int) -> list[list[dict]]:
    """The k most probable classes of each row, most probable first."""
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [
        [{"class_id": int(c), "class": CLASS_NAMES[c], "probability": float(row[c])} for c in ranks]
        for row, ranks in zip(probs, order)
    ]


def format_table(labels: list[str], tops: list[list[dict]]) -> str:
    """A plain-text table: one line per input, its top-k classes with probabilities."""
    width = max(len("input"), *(len(label) for label in labels))
    k = len(tops[0])
    header = f"{'input':<{width}}  " + "  ".join(f"{f'#{i + 1}':<20}" for i in range(k))
    lines = [header.rstrip()]
    for label, top in zip(labels, tops):
        cells = "  ".join(f"{t['class']} {t['probability']:.3f}".ljust(20) for t in top)
        lines.append(f"{label:<{width}}  {cells}".rstrip())
    return "\n".join(lines)


def split_arguments(args: argparse.Namespace) -> tuple[Path | None, list[Path]]:
    """(local package or None for the registry, input files) from the positional arguments."""
    items = [Path(p) for p in args.items]
    if args.version or args.stage:
        return None, items
    if items and items[0].is_dir():
        return items[0], items[1:]
    return DEFAULT_PACKAGE, items


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fmnist predict",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[-1],
    )
    parser.add_argument(
        "items", nargs="+", metavar="FILE", help="inputs, after an optional package directory"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--version", help=f"a registered version of {registry.ARTIFACT}")
    source.add_argument("--stage", help="the version assigned to this stage (e.g. prod)")
    parser.add_argument("--repo", default=".", help="the registry's git repo (path or URL)")
    parser.add_argument("-k", "--top-k", type=int, default=3, help="classes shown per input")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if not 1 <= args.top_k <= NUM_CLASSES:
        raise PipelineError(f"--top-k must be between 1 and {NUM_CLASSES}, got {args.top_k}")
    package_dir, files = split_arguments(args)
    if not files:
        raise PipelineError("no input files given")
    labels, images = read_all(files)
    with contextlib.ExitStack() as stack:
        if package_dir is None:
            # The version GTO shows for the stage, fetched by version and verified.
            resolved = registry.resolve(args.repo, args.version, args.stage)
            package_dir = stack.enter_context(
                registry.fetched(args.repo, version=resolved.version, commit=resolved.commit)
            )
            print(f"predict: {resolved}", file=sys.stderr)
        model, _ = layout.load_package(package_dir)  # verifies every file first
        tops = top_k(classify(model, images), args.top_k)
    if args.json:
        out = [{"input": label, "top": top} for label, top in zip(labels, tops)]
        print(json.dumps(out, indent=2))
    else:
        print(format_table(labels, tops))
    return 0


if __name__ == "__main__":
    sys.exit(main())
