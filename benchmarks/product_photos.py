"""Product photos made from test images, answered three ways: through the package's
`serving_bytes` signature, through `fmnist predict --preprocess` on the files, and (what a
client that skips preprocessing sends) squeezed to 28×28 grayscale into `serving_default`.

The photos are `fmnist examples`' (`fmnist.serving.synthetic.product_photo`): the garment dark
and coloured on a light background, 3-10 times larger, off-centre on a canvas that is not
square, RGB PNG or JPEG. The table gives the accuracy and the out-of-distribution flag rate
of each way, and the network's accuracy on the same test images as they are.

    python3 benchmarks/product_photos.py models/package --count 1000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import machine  # first: TensorFlow starts with the stages' process settings

# isort: split
import numpy as np
import tensorflow as tf

from fmnist.dataset import CLASS_NAMES, load_split
from fmnist.errors import report_errors
from fmnist.serving import signatures, synthetic
from fmnist.tools import examples

BATCH = 256


def batched(fn, name: str, values: np.ndarray | list) -> dict[str, np.ndarray]:
    """The signature `fn` over `values` (its input `name`) in batches, outputs concatenated."""
    parts = [fn(**{name: tf.constant(values[i : i + BATCH])}) for i in range(0, len(values), BATCH)]
    return {k: np.concatenate([p[k].numpy() for p in parts]) for k in parts[0]}


def row(name: str, ids: np.ndarray, flags: np.ndarray, labels: np.ndarray) -> str:
    return f"| {name} | {(ids == labels).mean():.2%} | {flags.mean():.2%} | {len(ids)} |"


@report_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path, nargs="?", default=Path("models/package"))
    parser.add_argument("--data", type=Path, default=Path("data/prepared/test.npz"))
    parser.add_argument("--count", type=int, default=1000, help="test images (the first)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    images, labels = load_split(args.data)
    images, labels = images[: args.count], labels[: args.count]
    served = signatures.load_signatures(args.package)
    pixels = batched(served[signatures.SIGNATURE], "pixels", images[..., None])

    with tempfile.TemporaryDirectory(prefix="fmnist-photos-") as tmp:
        paths = examples.write_examples(images, labels, Path(tmp), args.seed)
        photos = [p.read_bytes() for p in paths]
        by_bytes = batched(served[signatures.BYTES_SIGNATURE], "image_bytes", photos)
        cmd = [sys.executable, "-m", "fmnist.cli", "predict", str(args.package)]
        cmd += ["--preprocess", "--json", "-k", "1", str(Path(tmp) / "photos")]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"fmnist predict failed:\n{proc.stderr[-2000:]}")
        results = {Path(r["input"]).name: r for r in json.loads(proc.stdout)["results"]}
        answered = [results[p.name] for p in paths]
    by_predict = np.array([CLASS_NAMES.index(r["top"][0]["class"]) for r in answered])
    predict_flags = np.array([r["out_of_distribution"] for r in answered])
    naive = np.stack([synthetic.naive_pixels(p) for p in photos])[..., None]
    without = batched(served[signatures.SIGNATURE], "pixels", naive)
    errors = [e for e in by_bytes["error"] if e]
    pngs = sum(p.startswith(b"\x89PNG") for p in photos)

    print(f"machine: {machine.describe()}")
    print(f"package: {args.package}; {len(photos)} photos from the first test images "
          f"({pngs} PNG, the rest JPEG); "
          f"{len(errors)} refused\n")  # fmt: skip
    print("| input | accuracy | flagged out of distribution | images |")
    print("|---|---|---|---|")
    print(row("test images as they are (serving_default)", pixels["class_ids"],
              pixels["out_of_distribution"], labels))  # fmt: skip
    print(row("photos, serving_bytes", by_bytes["class_ids"], by_bytes["out_of_distribution"],
              labels))  # fmt: skip
    print(row("photos, fmnist predict --preprocess", by_predict, predict_flags, labels))
    print(row("photos without preprocessing (grayscale, 28×28), serving_default",
              without["class_ids"], without["out_of_distribution"], labels))  # fmt: skip
    same = (by_predict == by_bytes["class_ids"]).mean()
    print(f"\npredict --preprocess and serving_bytes agree on {same:.2%} of the photos")


if __name__ == "__main__":
    sys.exit(main())
