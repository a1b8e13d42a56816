"""`fmnist examples`: image files to try the model with, made from the prepared test split.

    DIR/pixels/0003-trouser.png   a test image as it is: 28×28 8-bit grayscale, light on black
    DIR/photos/0003-trouser.jpg   the same garment as a product photo (`serving.synthetic`):
                                  RGB, dark on a light background, larger and not square

The file name carries the index in the test split and the true class, so that a person can
check the answers. The pixels go to `serving_default` (`fmnist predict`, `fmnist request`),
the photos to `serving_bytes` (`fmnist predict --preprocess`).
"""

from __future__ import annotations

import argparse
import io
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from fmnist import atomic
from fmnist.dataset import CLASS_NAMES, load_split
from fmnist.errors import PipelineError, report_errors
from fmnist.serving import synthetic


def file_stem(index: int, label: int) -> str:
    """`0003-trouser`: the test index and the class, as a file name."""
    name = re.sub(r"[^a-z0-9]+", "-", CLASS_NAMES[label].lower()).strip("-")
    return f"{index:04d}-{name}"


def png(image: np.ndarray) -> bytes:
    """A (28, 28) uint8 image as an 8-bit grayscale PNG."""
    out = io.BytesIO()
    Image.fromarray(image, "L").save(out, format="PNG")
    return out.getvalue()


def write_examples(images: np.ndarray, labels: np.ndarray, out: Path, seed: int) -> list[Path]:
    """Write each image as pixels and as a product photo under `out`; return the photos."""
    photos = synthetic.product_photos(images, seed)
    written = []
    for i, (image, label, photo) in enumerate(zip(images, labels, photos)):
        stem = file_stem(i, int(label))
        atomic.write_bytes(out / "pixels" / f"{stem}.png", png(image))
        suffix = ".png" if photo.startswith(b"\x89PNG") else ".jpg"
        atomic.write_bytes(out / "photos" / f"{stem}{suffix}", photo)
        written.append(out / "photos" / f"{stem}{suffix}")
    return written


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fmnist examples", description=__doc__.splitlines()[0].split(": ", 1)[1]
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("examples"),
        help="the directory written (default: examples)",
    )
    parser.add_argument("--count", type=int, default=8, help="images (the first of the split)")
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("data/prepared/test.npz"),
        help="the prepared split the images come from",
    )
    parser.add_argument("--seed", type=int, default=0, help="of the photos' colours and sizes")
    args = parser.parse_args(argv)
    images, labels = load_split(args.data)
    if not 1 <= args.count <= len(images):
        raise PipelineError(f"--count must be between 1 and {len(images)}, got {args.count}")
    write_examples(images[: args.count], labels[: args.count], args.out, args.seed)
    print(f"{args.count} test images written to {args.out}/pixels and {args.out}/photos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
