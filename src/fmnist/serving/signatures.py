"""The SavedModel's serving signature: raw uint8 pixels in, probabilities and classes out.

The `serving_default` signature scales pixels itself with `fmnist.training.inputs.preprocess`,
so a client cannot feed it wrongly scaled floats.
"""

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import fingerprint_pb2

from fmnist.dataset import CLASS_NAMES, IMAGE_SHAPE
from fmnist.errors import PipelineError
from fmnist.params import PackageParams
from fmnist.serving.layout import MODEL_FILE, SAVED_MODEL_FILE
from fmnist.training import inputs

SIGNATURE = "serving_default"
FINGERPRINT_FILE = "fingerprint.pb"
INPUT_NAME = "pixels"
# The SavedModel's input: a batch of raw 8-bit grayscale images, 0 = black, 255 = white.
INPUT_SPEC = tf.TensorSpec((None, *IMAGE_SHAPE), tf.uint8, name=INPUT_NAME)
# The SavedModel must reproduce the Keras model to this tolerance (float32 rounding).
MAX_PROBABILITY_DIFFERENCE = 1e-5


def input_contract() -> dict:
    """What the packaged model expects, recorded in the package and shown in the model card."""
    return {
        "saved_model": {
            "signature": SIGNATURE,
            "input": {INPUT_NAME: {"dtype": "uint8", "shape": [None, *IMAGE_SHAPE]}},
            "scaling": "none by the client: raw pixels 0..255 (0 = black); the model divides "
            "by 255 itself",
            "outputs": {
                "probabilities": {"dtype": "float32", "shape": [None, len(CLASS_NAMES)]},
                "class_ids": {"dtype": "int32", "shape": [None]},
                "class_names": {"dtype": "string", "shape": [None]},
            },
        },
        "keras": {
            "file": MODEL_FILE,
            "input": {"dtype": "float32", "shape": [None, *IMAGE_SHAPE]},
            "scaling": "pixel / 255 (fmnist.training.inputs.preprocess): 0.0 is black, 1.0 white",
            "output": "class probabilities (None, 10)",
        },
        "class_names": list(CLASS_NAMES),
    }


def export_saved_model(model: keras.Model, path: Path) -> None:
    """Write `model` as a SavedModel at `path` whose `serving_default` takes uint8 pixels.

    The same model gives the same bytes, and each weight is stored once. Keras' ExportArchive
    does neither: `track(model)` saves every weight twice (as the Keras variable and as the
    TensorFlow variable the traced function captures), and the captured variables come in an
    order that changes from process to process. Here a plain `tf.Module` holds the TensorFlow
    variables in the model's own order.
    """
    names = tf.constant(CLASS_NAMES)

    def serve(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        probs = model(inputs.preprocess(pixels), training=False)  # (B, 10)
        probs = tf.cast(probs, tf.float32)
        ids = tf.argmax(probs, axis=1, output_type=tf.int32)  # (B,)
        return {"probabilities": probs, "class_ids": ids, "class_names": tf.gather(names, ids)}

    servable = tf.Module()
    servable.weights = [v.value for v in model.variables]  # tf.Variable, in the model's order
    servable.serve = tf.function(serve, input_signature=[INPUT_SPEC], autograph=False)
    signatures = {SIGNATURE: servable.serve.get_concrete_function()}
    tf.saved_model.save(servable, str(path), signatures=signatures)
    _stable_fingerprint(path)


def _stable_fingerprint(path: Path) -> None:
    """Replace the random `uuid` TensorFlow writes into `fingerprint.pb` by one derived from the
    fingerprint's content hashes: the same SavedModel then has the same bytes."""
    file = path / FINGERPRINT_FILE
    fingerprint = fingerprint_pb2.FingerprintDef.FromString(file.read_bytes())
    fingerprint.ClearField("uuid")
    content = fingerprint.SerializeToString(deterministic=True)
    fingerprint.uuid = str(int.from_bytes(hashlib.sha256(content).digest()[:16], "big"))
    file.write_bytes(fingerprint.SerializeToString(deterministic=True))


def load_serving_fn(path: str | Path) -> Callable[..., dict[str, tf.Tensor]]:
    """The `serving_default` signature of the SavedModel at `path` (call it with pixels=)."""
    path = Path(path)
    if not (path / SAVED_MODEL_FILE).is_file():
        raise PipelineError(f"{path}: no SavedModel there (no {SAVED_MODEL_FILE})")
    return tf.saved_model.load(str(path)).signatures[SIGNATURE]


def check_saved_model(model: keras.Model, serve: Callable, images: np.ndarray) -> float:
    """Largest probability difference between the SavedModel and the Keras model on `images`.

    Raises `PipelineError` above `MAX_PROBABILITY_DIFFERENCE`: a package whose two formats
    disagree must not be shipped.
    """
    served = serve(**{INPUT_NAME: tf.constant(images.reshape(-1, *IMAGE_SHAPE))})
    expected = model.predict(inputs.preprocess(images), verbose=0)
    diff = float(np.abs(served["probabilities"].numpy() - expected).max())
    if diff > MAX_PROBABILITY_DIFFERENCE:
        raise PipelineError(
            f"the SavedModel and the Keras model disagree by {diff:.2g} in probability "
            f"(allowed {MAX_PROBABILITY_DIFFERENCE})"
        )
    return diff


def speed_summary(latencies_s: list[float], batch_s: list[float], batch_size: int) -> dict:
    """Latency p50/p95 (ms) of single images and throughput (images/s) of full batches."""
    ms = np.asarray(latencies_s) * 1000.0
    return {
        "latency_ms_p50": round(float(np.percentile(ms, 50)), 3),
        "latency_ms_p95": round(float(np.percentile(ms, 95)), 3),
        "latency_runs": len(latencies_s),
        "throughput_images_per_s": round(batch_size * len(batch_s) / float(np.sum(batch_s)), 1),
        "throughput_batch_size": batch_size,
        "throughput_runs": len(batch_s),
    }


def measure_speed(serve: Callable, p: PackageParams) -> dict:
    """Time the serving signature on this machine: batch-1 latency and large-batch throughput."""
    rng = np.random.default_rng(0)  # the content does not change a CNN's cost, only its shape
    one = tf.constant(rng.integers(0, 256, (1, *IMAGE_SHAPE), dtype=np.uint8))
    batch = tf.constant(
        rng.integers(0, 256, (p.throughput_batch_size, *IMAGE_SHAPE), dtype=np.uint8)
    )

    def timed(x: tf.Tensor) -> float:
        start = time.perf_counter()
        serve(**{INPUT_NAME: x})["probabilities"].numpy()  # .numpy() waits for a GPU
        return time.perf_counter() - start

    for _ in range(p.warmup_runs):
        timed(one)
        timed(batch)
    latencies = [timed(one) for _ in range(p.latency_runs)]
    batches = [timed(batch) for _ in range(p.throughput_runs)]
    return speed_summary(latencies, batches, p.throughput_batch_size)
