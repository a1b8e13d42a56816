"""The SavedModel's serving signatures: what TensorFlow Serving, Vertex AI and `fmnist predict`
call, and how fast they answer.

    serving_default   pixels: uint8 (batch, 28, 28, 1)   the network on the image alone (fast)
    serving_averaged  pixels: uint8 (batch, 28, 28, 1)   averaged over the test-time views of
                                                        `model.tta_*` (what `evaluate` scores)
    serving_bytes     image_bytes: string (batch,)       encoded PNG/JPEG/GIF/BMP/WebP images,
                                                        preprocessed in TensorFlow ops
                                                        (`fmnist.serving.preprocess`), then
                                                        as `serving_default`

Every signature returns `probabilities` (float32 (batch, 10)), `class_ids` (int32),
`class_names` (string), `ood_score` (float32: the Mahalanobis distance of the image's features
to the nearest class, `fmnist.serving.ood`) and `out_of_distribution` (bool: the score above
the threshold chosen when packaging). `serving_bytes` adds `error` (string): "" or why that
image could not be used, in which case its other outputs are empty (zeros, class id -1).
The pixel signatures scale pixels themselves (`fmnist.training.inputs.preprocess`), so a client
cannot feed them wrongly scaled floats.
"""

from __future__ import annotations

import functools
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
from fmnist.model import tta
from fmnist.params import ModelParams, PackageParams
from fmnist.serving import ood, preprocess
from fmnist.serving.layout import MODEL_FILE, SAVED_MODEL_FILE
from fmnist.serving.ood import OodDetector
from fmnist.training import inputs

SIGNATURE = "serving_default"
AVERAGED_SIGNATURE = "serving_averaged"
BYTES_SIGNATURE = "serving_bytes"
FINGERPRINT_FILE = "fingerprint.pb"
INPUT_NAME = "pixels"
BYTES_INPUT_NAME = "image_bytes"  # TF Serving's REST API decodes {"b64": ...} for `*_bytes`
# The pixel signatures' input: a batch of raw 8-bit grayscale images, 0 = black, 255 = white.
INPUT_SPEC = tf.TensorSpec((None, *IMAGE_SHAPE), tf.uint8, name=INPUT_NAME)
BYTES_INPUT_SPEC = tf.TensorSpec((None,), tf.string, name=BYTES_INPUT_NAME)
OUTPUTS = ("probabilities", "class_ids", "class_names", "ood_score", "out_of_distribution")
# The SavedModel must reproduce the Keras model to this tolerance (float32 rounding).
MAX_PROBABILITY_DIFFERENCE = 1e-5


def input_contract() -> dict:
    """What the packaged model expects, recorded in the package and shown in the model card."""
    pixels = {INPUT_NAME: {"dtype": "uint8", "shape": [None, *IMAGE_SHAPE]}}
    outputs = {
        "probabilities": {"dtype": "float32", "shape": [None, len(CLASS_NAMES)]},
        "class_ids": {"dtype": "int32", "shape": [None]},
        "class_names": {"dtype": "string", "shape": [None]},
        "ood_score": {"dtype": "float32", "shape": [None]},
        "out_of_distribution": {"dtype": "bool", "shape": [None]},
    }
    return {
        "saved_model": {
            "signature": SIGNATURE,
            "input": pixels,
            "scaling": "none by the client: raw pixels 0..255 (0 = black); the model divides "
            "by 255 itself",
            "outputs": outputs,
            "signatures": {
                SIGNATURE: {"input": pixels, "views": 1},
                AVERAGED_SIGNATURE: {"input": pixels, "views": "model.tta_flip, model.tta_shift"},
                BYTES_SIGNATURE: {
                    "input": {BYTES_INPUT_NAME: {"dtype": "string", "shape": [None]}},
                    "formats": preprocess.FORMATS,
                    "extra_output": {"error": {"dtype": "string", "shape": [None]}},
                },
            },
        },
        "keras": {
            "file": MODEL_FILE,
            "input": {"dtype": "float32", "shape": [None, *IMAGE_SHAPE]},
            "scaling": "pixel / 255 (fmnist.training.inputs.preprocess): 0.0 is black, 1.0 white",
            "output": "class probabilities (None, 10), averaged over model.tta_* views",
        },
        "class_names": list(CLASS_NAMES),
    }


# Layers whose input is a convolution stage's output: the out-of-distribution features are
# those outputs averaged over the image.
_POOLING = (
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
)


def with_features(network: keras.Model, p: ModelParams) -> keras.Model:
    """`network` averaged over the views of `p` (as `fmnist.model.tta`), also returning the
    out-of-distribution features of each image itself (`fmnist.serving.ood`, but the extent):
    images (B, 28, 28, 1) float32 in [0, 1] -> [probabilities (B, 10), features (B, F)].

    The network's own layers, called again: the same weights.
    """
    if not isinstance(network, keras.Sequential) or not isinstance(
        network.layers[-1], keras.layers.Dense
    ):
        raise PipelineError(
            f"{network.name}: expected a Sequential network ending in its classifier (a Dense), "
            "as every architecture in fmnist.model.architectures is"
        )
    images = keras.Input(shape=IMAGE_SHAPE, name="images")
    stacked, count = tta.stack_views(images, p)  # (V·B, 28, 28, 1)
    h, taps = stacked, []
    for layer in network.layers:
        if isinstance(layer, _POOLING):
            taps.append(keras.ops.mean(h, axis=(1, 2)))  # (V·B, channels)
        if layer is network.layers[-1] and not taps:
            taps.append(h)  # no convolutions: the penultimate features
        h = layer(h)
    features = taps[0] if len(taps) == 1 else keras.ops.concatenate(taps, axis=1)
    return keras.Model(
        images,
        [tta.average_views(h, count), tta.first_view(features, count)],
        name=f"{network.name}_x{count}",
    )


def ood_features(features: tf.Tensor, images: tf.Tensor) -> tf.Tensor:
    """All out-of-distribution features (B, F + 1): `with_features`' and the extent."""
    return tf.concat([tf.cast(features, tf.float32), ood.extent(images)[:, None]], axis=1)


def features_of(
    model: keras.Model, images: np.ndarray, batch_size: int = 500
) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (N, 10), out-of-distribution features (N, F + 1)) of uint8 images
    (N, 28, 28) under a model made by `with_features`."""
    x = inputs.preprocess(images)
    # `predict` traces the model once and keeps the graph on it; calling the model batch by
    # batch runs it eagerly, slower for the same results (docs/measurements.md).
    probs, features = model.predict(x, batch_size=batch_size, verbose=0)
    return np.asarray(probs), ood_features(features, x).numpy()


def _answers(
    probs: tf.Tensor, features: tf.Tensor, images: tf.Tensor, detector: OodDetector
) -> dict[str, tf.Tensor]:
    probs = tf.cast(probs, tf.float32)
    ids = tf.argmax(probs, axis=1, output_type=tf.int32)  # (B,)
    score = detector.tf_score(ood_features(features, images))  # (B,)
    return {
        "probabilities": probs,
        "class_ids": ids,
        "class_names": tf.gather(tf.constant(CLASS_NAMES), ids),
        "ood_score": score,
        "out_of_distribution": score > detector.threshold,
    }


def _refused(answers: dict[str, tf.Tensor], errors: tf.Tensor) -> dict[str, tf.Tensor]:
    """`answers` with the rows of images that could not be used emptied, and `error`."""
    ok = tf.equal(errors, "")

    def keep(name: str, empty) -> tf.Tensor:
        value = answers[name]
        mask = tf.reshape(ok, [-1] + [1] * (len(value.shape) - 1))
        return tf.where(mask, value, tf.cast(empty, value.dtype))

    return {
        "probabilities": keep("probabilities", 0.0),
        "class_ids": keep("class_ids", -1),
        "class_names": keep("class_names", ""),
        "ood_score": keep("ood_score", 0.0),
        "out_of_distribution": keep("out_of_distribution", False),
        "error": errors,
    }


def export_saved_model(
    model: keras.Model,
    path: Path,
    p: ModelParams,
    detector: OodDetector,
    jit_compile: bool = False,
) -> None:
    """Write `model` (as `fmnist.model.saving.for_inference` made it) as a SavedModel at `path`
    with the three signatures of this module's docstring; `jit_compile` compiles the networks
    with XLA.

    The same model gives the same bytes, and each weight is stored once. Keras' ExportArchive
    does neither: `track(model)` saves every weight twice (as the Keras variable and as the
    TensorFlow variable the traced function captures), and the captured variables come in an
    order that changes from process to process. Here a plain `tf.Module` holds the network's
    TensorFlow variables in a fixed order; both pixel signatures call the same layers.
    """
    network = tta.network(model)
    fast = with_features(network, ModelParams(tta_flip=False, tta_shift=0))
    averaged = with_features(network, p)
    # Every function here is traced without autograph: none branches on a tensor, and
    # converting their code only made the same graph seconds later (docs/measurements.md).
    graph = functools.partial(tf.function, autograph=False)
    run_fast = graph(lambda x: fast(x, training=False), jit_compile=jit_compile)
    run_averaged = graph(lambda x: averaged(x, training=False), jit_compile=jit_compile)

    def serve(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        images = inputs.preprocess(pixels)
        return _answers(*run_fast(images), images, detector)

    def serve_averaged(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        images = inputs.preprocess(pixels)
        return _answers(*run_averaged(images), images, detector)

    def serve_bytes(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        pixels, errors = preprocess.to_pixels(image_bytes)
        return _refused(serve(pixels), errors)

    # Every variable the signatures read, once, in a fixed order: the network's, then those of
    # the test-time view layers (fmnist.model.tta).
    variables = {id(v): v for model_ in (fast, averaged) for v in model_.variables}
    servable = tf.Module()
    servable.weights = [v.value for v in variables.values()]  # tf.Variable
    servable.serve = graph(serve, input_signature=[INPUT_SPEC])
    servable.serve_averaged = graph(serve_averaged, input_signature=[INPUT_SPEC])
    servable.serve_bytes = graph(serve_bytes, input_signature=[BYTES_INPUT_SPEC])
    signatures = {
        SIGNATURE: servable.serve.get_concrete_function(),
        AVERAGED_SIGNATURE: servable.serve_averaged.get_concrete_function(),
        BYTES_SIGNATURE: servable.serve_bytes.get_concrete_function(),
    }
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


def load_signatures(path: str | Path) -> dict[str, Callable[..., dict[str, tf.Tensor]]]:
    """The signatures of the SavedModel at `path` by name (call them with keyword inputs)."""
    path = Path(path)
    if not (path / SAVED_MODEL_FILE).is_file():
        raise PipelineError(f"{path}: no SavedModel there (no {SAVED_MODEL_FILE})")
    signatures = dict(tf.saved_model.load(str(path)).signatures)
    missing = {SIGNATURE, AVERAGED_SIGNATURE, BYTES_SIGNATURE} - set(signatures)
    if missing:
        raise PipelineError(
            f"{path}: the SavedModel has no {', '.join(sorted(missing))} signature; it was "
            "packaged by an older version of this project: run `dvc repro package`"
        )
    return signatures


def load_serving_fn(path: str | Path, name: str = SIGNATURE) -> Callable[..., dict[str, tf.Tensor]]:
    """One signature of the SavedModel at `path` (the pixel ones take `pixels=`)."""
    return load_signatures(path)[name]


def check_saved_model(model: keras.Model, serve: Callable, images: np.ndarray) -> float:
    """Largest probability difference between a pixel signature and the Keras model on `images`.

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
    """Time a pixel signature on this machine: batch-1 latency and large-batch throughput."""
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
