"""Reading the files a user gives a model: image files, IDX, Kaggle-style CSV and `.npy` arrays,
as uint8 pixels (N, 28, 28), each file that cannot be used named with why.

Without TensorFlow, so that a command that only reads inputs (`fmnist request`, which writes a
predict request's body) does not wait for TensorFlow and Keras to load (docs/development.md);
`fmnist predict` reads its inputs here too.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fmnist.dataset import IMAGE_SIZE, MAX_FILE_BYTES, decompress, parse_csv, parse_idx
from fmnist.errors import DataError, ImageError

# What a directory is searched for; PNG and JPEG are also what a file without --preprocess
# may be (as 28×28 grayscale).
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
PREPROCESS_SUFFIXES = IMAGE_SUFFIXES | {".gif", ".bmp", ".webp"}

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
