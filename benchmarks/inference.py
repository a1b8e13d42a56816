"""Inference: which test-time views earn their cost, and how fast each way of serving the trained
network is, side by side with the package as `main` made it before the serving signatures.

Accuracy: the network's probabilities for each of the ten views (the image and its mirror,
each as it is and moved 1 px four ways) on the validation and test splits; any set of views is
scored by averaging its members. Views are added greedily by validation accuracy (never test);
the test column only reports.

Speed: each variant is exported as a SavedModel and timed as `package` times it (batch-1
latency p50, images/s at batch 256), in rounds that alternate the variants, in two fresh
processes, with TensorFlow's oneDNN kernels on and off (TF_ENABLE_ONEDNN_OPTS); medians.

    today (main)      ten views, one network call per view, averaged (no OOD outputs)
    averaged          serving_averaged: the views as one batched call, with the OOD outputs
    2 views, 5 views  the same with the mirror only, with the shifts only
    single            serving_default: the network alone
    ... XLA           the same compiled with XLA (jit_compile)
    distilled         the network of --distilled (a .keras file), alone
    bytes             serving_bytes on JPEG product photos (decoding and preprocessing)

    python3 benchmarks/inference.py                     # models/model.keras, data/prepared
    python3 benchmarks/inference.py --distilled models/distilled.keras --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import machine  # first: TensorFlow starts with the stages' process settings

# isort: split
import keras
import numpy as np
import tensorflow as tf

from fmnist.dataset import IMAGE_SHAPE, NUM_CLASSES, load_split
from fmnist.errors import report_errors
from fmnist.model import saving, tta
from fmnist.params import ModelParams, load_params
from fmnist.serving import ood, signatures, synthetic
from fmnist.training import inputs

# The ten views in `fmnist.model.tta`'s order (image first), named.
VIEW_NAMES = [f"{m}{s}" for m in ("", "mirror ") for s in ("image", "right", "left", "down", "up")]


def view_probabilities(network, images: np.ndarray, shift: int, batch: int = 500) -> np.ndarray:
    """The network's probabilities (10, N, 10) for each view of uint8 `images` (N, 28, 28)."""
    p = ModelParams(tta_flip=True, tta_shift=shift)
    x = keras.Input(shape=IMAGE_SHAPE)
    stacked, count = tta.stack_views(x, p)
    views = keras.Model(x, network(stacked))
    out = []
    for start in range(0, len(images), batch):
        probs = views(inputs.preprocess(images[start : start + batch]), training=False)
        out.append(np.asarray(probs).reshape(count, -1, NUM_CLASSES))
    return np.concatenate(out, axis=1)


def accuracy(probs: np.ndarray, labels: np.ndarray, views: list[int]) -> float:
    """Accuracy of the mean of `views` of per-view probabilities (V, N, 10)."""
    return float((probs[views].mean(axis=0).argmax(axis=1) == labels).mean())


def greedy_views(val_probs: np.ndarray, val_labels: np.ndarray) -> list[tuple[list[int], float]]:
    """Views added one at a time, each the one that raises validation accuracy most (ties: the
    earlier view): [(views so far, val accuracy)]."""
    chosen, order = [0], []
    order.append((list(chosen), accuracy(val_probs, val_labels, chosen)))
    while len(chosen) < len(val_probs):
        rest = [v for v in range(len(val_probs)) if v not in chosen]
        best = max(rest, key=lambda v: (accuracy(val_probs, val_labels, [*chosen, v]), -v))
        chosen.append(best)
        order.append((list(chosen), accuracy(val_probs, val_labels, chosen)))
    return order


def today_export(network, p: ModelParams, path: Path) -> None:
    """The package's SavedModel as `main` exported it: one network call per view, averaged by
    Keras' Average layer, probabilities and classes only."""
    images = keras.Input(shape=IMAGE_SHAPE)
    averaged = keras.Model(
        images, keras.layers.Average()([network(v) for v in tta.test_time_views(images, p)])
    )
    archive = keras.export.ExportArchive()
    archive.track(averaged)
    names = tf.constant(signatures.CLASS_NAMES)

    def serve(pixels):
        probs = averaged(inputs.preprocess(pixels), training=False)
        ids = tf.argmax(probs, axis=1, output_type=tf.int32)
        return {"probabilities": probs, "class_ids": ids, "class_names": tf.gather(names, ids)}

    archive.add_endpoint("serving_default", serve, input_signature=[signatures.INPUT_SPEC])
    archive.write_out(str(path), verbose=False)


def export_variants(model, p: ModelParams, detector, distilled, out: Path) -> list[dict]:
    """Write each variant's SavedModel under `out`; return [{name, path, signature, views}]."""
    network = tta.network(model)
    variants = []

    def add(name, path, signature, views, kind="pixels"):
        variants.append(
            {"name": name, "path": str(path), "signature": signature, "views": views, "kind": kind}
        )

    today_export(network, p, out / "today")
    add("today (main)", out / "today", "serving_default", p.tta_views)
    for jit in (False, True):
        suffix = " XLA" if jit else ""
        path = out / f"package{'-xla' if jit else ''}"
        signatures.export_saved_model(model, path, p, detector, jit_compile=jit)
        add(f"averaged{suffix}", path, signatures.AVERAGED_SIGNATURE, p.tta_views)
        add(f"single{suffix}", path, signatures.SIGNATURE, 1)
    for flip, shift in ((True, 0), (False, p.tta_shift or 1)):
        fewer = ModelParams(tta_flip=flip, tta_shift=shift)
        if fewer.tta_views in (1, p.tta_views):
            continue
        path = out / f"views{fewer.tta_views}"
        signatures.export_saved_model(saving.for_inference(network, fewer), path, fewer, detector)
        add(f"{fewer.tta_views} views", path, signatures.AVERAGED_SIGNATURE, fewer.tta_views)
    if distilled is not None:  # timed only: the detector fits the other network's features
        path = out / "distilled"
        signatures.export_saved_model(distilled, path, p, detector)
        add("distilled", path, signatures.SIGNATURE, 1)
    add("bytes (JPEG photos)", out / "package", signatures.BYTES_SIGNATURE, 1, kind="bytes")
    return variants


def time_calls(fn, inputs_one, inputs_batch, runs: int, batches: int) -> dict:
    """Warm up, then `runs` batch-1 calls and `batches` large-batch calls, timed."""
    for _ in range(3):
        fn(inputs_one)
        fn(inputs_batch)

    def timed(x) -> float:
        start = time.perf_counter()
        fn(x)["probabilities"].numpy()
        return time.perf_counter() - start

    latencies = [timed(inputs_one) for _ in range(runs)]
    batch_times = [timed(inputs_batch) for _ in range(batches)]
    return signatures.speed_summary(latencies, batch_times, len(inputs_batch))


def measure(spec_file: Path, rounds: int, runs: int, batches: int, batch: int) -> None:
    """(The child process.) Time every variant in `spec_file`, alternating; print JSON."""
    spec = json.loads(spec_file.read_text())
    rng = np.random.default_rng(0)
    pixels = tf.constant(rng.integers(0, 256, (batch, *IMAGE_SHAPE), dtype=np.uint8))
    encoded = [bytes.fromhex(h) for h in spec["photos"]]
    photos = tf.constant([encoded[i % len(encoded)] for i in range(batch)])
    loaded = {}
    for v in spec["variants"]:
        served = tf.saved_model.load(v["path"]).signatures[v["signature"]]
        if v["kind"] == "bytes":
            loaded[v["name"]] = (lambda f: lambda x: f(image_bytes=x))(served), photos
        else:
            loaded[v["name"]] = (lambda f: lambda x: f(pixels=x))(served), pixels
    results: dict[str, list[dict]] = {name: [] for name in loaded}
    for _ in range(rounds):
        for name, (fn, batch_input) in loaded.items():
            results[name].append(time_calls(fn, batch_input[:1], batch_input, runs, batches))
    print(json.dumps({"onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "results": results}))


def speeds(spec_file: Path, args: argparse.Namespace) -> dict[str, dict[str, dict]]:
    """{oneDNN "on"/"off": {variant: median p50 and images/s}}, each in a fresh process."""
    out = {}
    for setting, value in (("on", "1"), ("off", "0")):
        env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": value}
        cmd = [sys.executable, __file__, "--measure", str(spec_file), "--rounds", str(args.rounds)]
        cmd += ["--runs", str(args.runs), "--batches", str(args.batches)]
        cmd += ["--batch", str(args.batch)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"timing with oneDNN {setting} failed:\n{proc.stderr[-3000:]}")
        results = json.loads(proc.stdout.strip().splitlines()[-1])["results"]
        out[setting] = {
            name: {
                "p50": float(np.median([r["latency_ms_p50"] for r in rs])),
                "rate": float(np.median([r["throughput_images_per_s"] for r in rs])),
            }
            for name, rs in results.items()
        }
    return out


@report_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/model.keras"))
    parser.add_argument("--data", type=Path, default=Path("data/prepared"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--distilled", type=Path, help="a distilled single network (.keras)")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds per process")
    parser.add_argument("--runs", type=int, default=200, help="batch-1 calls per round")
    parser.add_argument("--batches", type=int, default=10, help="large-batch calls per round")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.rounds, args.runs, args.batches, args.batch)
        return

    p = load_params(args.params).model
    model = saving.load_model(args.model)
    network = tta.network(model)
    splits = {name: load_split(args.data / f"{name}.npz") for name in ("train", "val", "test")}
    shift = p.tta_shift or 1
    probs = {s: view_probabilities(network, splits[s][0], shift) for s in ("val", "test")}
    labels = {s: splits[s][1] for s in ("val", "test")}
    single = signatures.with_features(network, ModelParams(tta_flip=False, tta_shift=0))
    train_images, train_labels = splits["train"]
    sample = np.random.default_rng(0).permutation(len(train_images))[:5000]
    detector = ood.fit(
        signatures.features_of(single, train_images[sample])[1], train_labels[sample], NUM_CLASSES
    ).with_threshold(2.0)  # the threshold does not change the speed
    distilled = saving.load_model(args.distilled) if args.distilled else None

    with tempfile.TemporaryDirectory(prefix="fmnist-inference-") as tmp:
        variants = export_variants(model, p, detector, distilled, Path(tmp))
        photos = synthetic.product_photos(splits["test"][0][:8], seed=0)
        spec = Path(tmp) / "variants.json"
        spec.write_text(json.dumps({"variants": variants, "photos": [b.hex() for b in photos]}))
        timed = speeds(spec, args)

    views_of = {
        1: [0],
        2: [0, 5],
        5: [0, 1, 2, 3, 4],
        10: list(range(10)),
    }
    print(f"machine: {machine.describe()}; load average {os.getloadavg()[0]:.1f}")
    print(f"model: {args.model} ({network.name}, {network.count_params():,} parameters)")
    print(f"timing: {args.rounds} rounds × ({args.runs} batch-1 calls, {args.batches} batches "
          f"of {args.batch}) per process; medians\n")  # fmt: skip
    print("| variant | views | val accuracy | test accuracy | images/s (oneDNN on) | p50 ms "
          "(on) | images/s (oneDNN off) | p50 ms (off) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for v in variants:
        if v["name"] == "distilled":
            dp = {
                s: distilled.predict(inputs.preprocess(splits[s][0]), verbose=0, batch_size=500)
                for s in ("val", "test")
            }
            acc = {s: float((dp[s].argmax(1) == labels[s]).mean()) for s in dp}
        elif v["kind"] == "bytes":
            acc = None
        else:
            acc = {s: accuracy(probs[s], labels[s], views_of[v["views"]]) for s in probs}
        cells = [f"{acc[s]:.2%}" for s in ("val", "test")] if acc else ["", ""]
        for setting in ("on", "off"):
            t = timed[setting][v["name"]]
            cells += [f"{t['rate']:,.0f}", f"{t['p50']:.2f}"]
        print(f"| {v['name']} | {v['views']} | " + " | ".join(cells) + " |")

    print("\nViews added greedily by validation accuracy (test only reported):\n")
    print("| views | added | val accuracy | test accuracy |")
    print("|---|---|---|---|")
    for chosen, val_acc in greedy_views(probs["val"], labels["val"]):
        test_acc = accuracy(probs["test"], labels["test"], chosen)
        print(f"| {len(chosen)} | {VIEW_NAMES[chosen[-1]]} | {val_acc:.2%} | {test_acc:.2%} |")


if __name__ == "__main__":
    sys.exit(main())
