"""The architectures as the seeds define them, and model files that are stable and safe."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from fmnist.errors import PipelineError
from fmnist.model import architectures, saving, tta
from fmnist.params import ModelParams
from helpers import recipe_params


@pytest.mark.parametrize(("recipe", "parameters"), [("notebook", 93_962), ("writeup", 111_882)])
def test_parameter_counts_match_the_seeds(recipe, parameters):
    model = architectures.build(recipe_params(recipe).model)
    assert model.count_params() == parameters


def test_the_writeups_cnn_with_same_padding_keeps_a_3x3_map():
    # 28 -> 14 -> 7 -> 3 before Flatten (valid padding: 26 -> 13 -> 11 -> 5 -> 3 -> 1).
    p = dataclasses.replace(recipe_params("writeup").model, padding="same")
    assert architectures.build(p).count_params() == 242_954


def test_the_notebooks_dense_baseline_has_its_parameter_count():
    p = dataclasses.replace(recipe_params("notebook").model, arch="dense")
    assert architectures.build(p).count_params() == 101_770


def test_the_default_model_stays_under_100k_parameters():
    model = architectures.build(ModelParams())
    assert model.count_params() == 96_282
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 6 and not any(c.use_bias for c in convs)


def test_notebook_cnn_layer_shapes():
    model = architectures.build(recipe_params("notebook").model)
    shapes = {layer.name: tuple(layer.output.shape[1:]) for layer in model.layers}
    assert shapes["conv1"] == (28, 28, 32)
    assert shapes["pool2"] == (7, 7, 64)
    assert shapes["conv3"] == (7, 7, 128)
    assert shapes["global_avg_pool"] == (128,)
    assert shapes["output"] == (10,)


def test_writeup_cnn_has_batchnorm_after_every_conv_and_dense():
    model = architectures.build(recipe_params("writeup").model)
    names = [layer.name for layer in model.layers]
    assert names[:4] == ["conv1", "bn1", "pool1", "dropout1"]
    assert names[-4:] == ["dense", "bn_dense", "dropout", "output"]
    assert model.get_layer("dropout1").rate == 0.25 and model.get_layer("dropout").rate == 0.5


def test_outputs_are_probabilities_in_float32_even_under_mixed_precision():
    with saving.dtype_policy("mixed_bfloat16"):
        model = architectures.build(ModelParams())
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    probs = model(np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32))
    assert probs.dtype == "float32"
    assert np.allclose(np.asarray(probs).sum(axis=1), 1.0, atol=1e-3)


def test_params_change_the_model():
    wide = architectures.build(dataclasses.replace(ModelParams(), filters=(24, 32, 64)))
    assert wide.get_layer("conv1_1").filters == 24


@pytest.mark.parametrize("recipe", ["default", "writeup"])
def test_batchnorm_is_synchronized_only_across_several_replicas(recipe):
    def synchronized(model):
        norms = [
            layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
        ]
        return {layer.synchronized for layer in norms}

    p = recipe_params(recipe).model
    assert synchronized(architectures.build(p)) == {False}
    assert synchronized(architectures.build(p, replicas=2)) == {True}


def _op_types(layer: keras.layers.Layer, shape: tuple[int, ...], training: bool) -> set[str]:
    """The TensorFlow op types of `layer` called on a float32 batch of `shape`."""
    fn = tf.function(lambda x: layer(x, training=training))
    graph = fn.get_concrete_function(tf.TensorSpec(shape, tf.float32)).graph
    return {op.type for op in graph.get_operations()}


@pytest.mark.parametrize(("policy", "tolerance"), [("float32", 1e-5), ("mixed_bfloat16", 1e-2)])
def test_fused_batchnorm_trains_as_keras_batchnorm_does(policy, tolerance):
    """Outputs, gradients and moving statistics of a training step, against Keras' layer."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(1.0, 3.0, (16, 7, 7, 24)).astype(np.float32))
    upstream = rng.normal(size=x.shape).astype(np.float32)  # a loss that weighs every output
    gamma = rng.normal(size=24).astype(np.float32)
    results = []
    with saving.dtype_policy(policy):
        for layer in (architectures.FusedBatchNormalization(), keras.layers.BatchNormalization()):
            layer.build(x.shape)
            layer.gamma.assign(gamma)
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
                loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
            grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
            results.append([y, *grads, layer.moving_mean, layer.moving_variance])
            assert y.dtype == keras.mixed_precision.global_policy().compute_dtype
    for fused, plain in zip(*results, strict=True):
        fused, plain = (np.asarray(tf.cast(t, tf.float32)) for t in (fused, plain))
        assert np.abs(fused - plain).max() <= tolerance * np.abs(plain).max()
    assert "FusedBatchNormV3" in _op_types(architectures.FusedBatchNormalization(), x.shape, True)
    assert "FusedBatchNormV3" not in _op_types(keras.layers.BatchNormalization(), x.shape, True)


@pytest.mark.parametrize(
    ("kwargs", "shape", "training"),
    [({}, (8, 7, 7, 4), False), ({"synchronized": True}, (8, 7, 7, 4), True), ({}, (8, 16), True)],
    ids=["inference", "synchronized", "dense"],
)
def test_fused_batchnorm_is_keras_batchnorm_where_the_kernel_does_not_apply(
    kwargs, shape, training
):
    assert "FusedBatchNormV3" not in _op_types(
        architectures.FusedBatchNormalization(**kwargs), shape, training
    )
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    fused = architectures.FusedBatchNormalization(**kwargs)(x, training=training)
    plain = keras.layers.BatchNormalization(**kwargs)(x, training=training)
    assert np.allclose(fused, plain, atol=1e-6)


def test_saved_model_bytes_depend_only_on_weights(tmp_path):
    keras.utils.set_random_seed(0)
    model = architectures.build(ModelParams())
    saving.save_model(model, tmp_path / "a.keras")
    saving.save_model(model, tmp_path / "b.keras")
    assert (tmp_path / "a.keras").read_bytes() == (tmp_path / "b.keras").read_bytes()
    loaded = saving.load_model(tmp_path / "a.keras")
    x = np.random.default_rng(1).random((3, 28, 28, 1), dtype=np.float32)
    assert np.allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_load_model_errors_name_the_file(tmp_path):
    with pytest.raises(PipelineError, match="no model there"):
        saving.load_model(tmp_path / "absent.keras")
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"definitely not a zip")
    with pytest.raises(PipelineError, match="junk.keras: not a loadable Keras model"):
        saving.load_model(junk)


def _trainable(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _moved(x: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Images (B, H, W, 1) moved dx pixels right and dy down, zeros shifted in (NumPy)."""
    out = np.zeros_like(x)
    h, w = x.shape[1:3]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


@pytest.mark.parametrize(("dx", "dy"), [(1, 0), (-1, 0), (0, 2), (-2, -1)])
def test_shift_moves_every_pixel_exactly(dx, dy):
    x = np.random.default_rng(1).random((2, 28, 28, 1), dtype=np.float32)
    images = keras.Input(shape=(28, 28, 1))
    moved = keras.Model(images, tta.shift(images, dx, dy, "s"))
    out = moved.predict(x, verbose=0)
    assert out.shape == x.shape
    assert np.array_equal(out, _moved(x, dx, dy))
    assert not np.array_equal(out, x)


def infer(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """The model's output in inference mode, called eagerly (no `predict` function to trace)."""
    return np.asarray(model(x, training=False))


@pytest.mark.parametrize(("flip", "shift", "views"), [(True, 0, 2), (False, 1, 5), (True, 1, 10)])
def test_test_time_augmentation_averages_its_views_with_the_same_weights(
    tmp_path, flip, shift, views
):
    keras.utils.set_random_seed(0)
    p = ModelParams(arch="bn_gap_cnn", filters=(4, 6, 8), tta_flip=flip, tta_shift=shift)
    net = architectures.build(p)
    shipped = saving.for_inference(net, p)

    assert _trainable(shipped) == _trainable(net)
    assert shipped.count_params() == net.count_params() + flip * 28 * 28  # the fixed mirror
    x = np.random.default_rng(2).random((5, 28, 28, 1), dtype=np.float32)
    originals = [x, x[:, :, ::-1]] if flip else [x]
    moves = [(0, 0)] + ([(1, 0), (-1, 0), (0, 1), (0, -1)] if shift else [])
    inputs = [_moved(o, dx, dy) for o in originals for dx, dy in moves]
    assert len(inputs) == views == p.tta_views
    expected = np.mean([infer(net, v) for v in inputs], axis=0)
    assert np.allclose(infer(shipped, x), expected, atol=1e-6)
    # Asymmetric images: the views really differ from the image itself.
    assert not np.allclose(infer(net, x), expected, atol=1e-4)
    saving.save_model(shipped, tmp_path / "tta.keras")
    # Plain Keras, safe mode: built-in layers only.
    loaded = keras.saving.load_model(tmp_path / "tta.keras", compile=False, safe_mode=True)
    assert np.allclose(infer(loaded, x), expected, atol=1e-6)
    assert tta.network(loaded).name == net.name


def _dtype_policies(model: keras.Model) -> set[str]:
    """The dtype policies of every layer of `model`, nested models' layers included."""
    names = set()
    for layer in model.layers:
        names |= _dtype_policies(layer) if isinstance(layer, keras.Model) else set()
        names.add(layer.dtype_policy.name)
    return names


def test_a_network_trained_in_mixed_precision_ships_in_float32(tmp_path):
    p = ModelParams(arch="bn_gap_cnn", filters=(4, 6, 8))
    x = np.random.default_rng(3).random((6, 28, 28, 1), dtype=np.float32)
    with saving.dtype_policy("mixed_bfloat16"):  # as `train` runs where bfloat16 is native
        net = architectures.build(p)
        shipped = saving.for_inference(net, p)
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"  # left as it was
        trained_output = infer(net, x)
    assert _dtype_policies(net) == {"mixed_bfloat16", "float32"}
    assert _dtype_policies(shipped) == {"float32"}
    saving.save_model(shipped, tmp_path / "shipped.keras")
    loaded = saving.load_model(tmp_path / "shipped.keras")
    assert _dtype_policies(loaded) == {"float32"}
    reference = architectures.build(p)  # float32 from the start, the same weights
    reference.set_weights(net.get_weights())
    expected = infer(saving.for_inference(reference, p), x)
    assert np.allclose(infer(loaded, x), expected, atol=1e-6)
    # The same weights in bfloat16 answer measurably differently: what float32 shipping removes.
    assert not np.allclose(trained_output, infer(reference, x), atol=1e-6)


def test_without_tta_a_copy_of_the_trained_network_ships():
    p = ModelParams(tta_flip=False, tta_shift=0)
    net = architectures.build(p)
    net.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    shipped = saving.for_inference(net, p)
    assert tta.network(shipped) is shipped and tta.network(net) is net
    assert shipped.name == net.name and not shipped.compiled  # no loss, no optimizer state
    assert all(np.array_equal(a, b) for a, b in zip(shipped.get_weights(), net.get_weights()))
    # Keras' own BatchNormalization ships, not the fused one that trained.
    norms = {type(layer) for layer in shipped.layers if "bn" in layer.name}
    assert norms == {keras.layers.BatchNormalization}
    assert architectures.FusedBatchNormalization in {type(layer) for layer in net.layers}
