"""The architectures as the seeds define them, and model files that are stable and safe."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from fmnist import models
from fmnist.errors import PipelineError
from fmnist.params import ModelParams


@pytest.mark.parametrize(
    ("arch", "parameters"),
    [("gap_cnn", 93_962), ("bn_cnn", 242_954), ("dense", 101_770)],
)
def test_parameter_counts_match_the_seeds(arch, parameters):
    model = models.build(ModelParams(arch=arch))
    assert model.count_params() == parameters


def test_bn_gap_cnn_stays_under_100k_parameters():
    p = ModelParams(arch="bn_gap_cnn", filters=(16, 40, 72), convs_per_stage=2)
    model = models.build(p)
    assert model.count_params() == 96_938
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 6 and not any(c.use_bias for c in convs)


def test_notebook_cnn_layer_shapes():
    model = models.build(ModelParams(arch="gap_cnn"))
    shapes = {layer.name: tuple(layer.output.shape[1:]) for layer in model.layers}
    assert shapes["conv1"] == (28, 28, 32)
    assert shapes["pool2"] == (7, 7, 64)
    assert shapes["conv3"] == (7, 7, 128)
    assert shapes["global_avg_pool"] == (128,)
    assert shapes["output"] == (10,)


def test_writeup_cnn_has_batchnorm_after_every_conv_and_dense():
    model = models.build(ModelParams(arch="bn_cnn"))
    names = [layer.name for layer in model.layers]
    assert names[:4] == ["conv1", "bn1", "pool1", "dropout1"]
    assert names[-4:] == ["dense", "bn_dense", "dropout", "output"]
    assert model.get_layer("dropout1").rate == 0.25 and model.get_layer("dropout").rate == 0.5


def test_outputs_are_probabilities_in_float32_even_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = models.build(ModelParams())
    finally:
        keras.mixed_precision.set_global_policy("float32")
    probs = model(np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32))
    assert probs.dtype == "float32"
    assert np.allclose(np.asarray(probs).sum(axis=1), 1.0, atol=1e-3)


def test_params_change_the_model():
    wide = models.build(dataclasses.replace(ModelParams(), filters=(16, 32, 64)))
    assert wide.get_layer("conv1").filters == 16


def test_saved_model_bytes_depend_only_on_weights(tmp_path):
    keras.utils.set_random_seed(0)
    model = models.build(ModelParams())
    models.save_model(model, tmp_path / "a.keras")
    models.save_model(model, tmp_path / "b.keras")
    assert (tmp_path / "a.keras").read_bytes() == (tmp_path / "b.keras").read_bytes()
    loaded = models.load_model(tmp_path / "a.keras")
    x = np.random.default_rng(1).random((3, 28, 28, 1), dtype=np.float32)
    assert np.allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_load_model_errors_name_the_file(tmp_path):
    with pytest.raises(PipelineError, match="no model there"):
        models.load_model(tmp_path / "absent.keras")
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"definitely not a zip")
    with pytest.raises(PipelineError, match="junk.keras: not a loadable Keras model"):
        models.load_model(junk)
