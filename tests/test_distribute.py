"""`train.distribute`: choosing the strategy, scaling with replicas, and two real workers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

import helpers
from fmnist.dataset import encode_npz
from fmnist.errors import PipelineError
from fmnist.model import architectures, saving, tta
from fmnist.params import Params, ParamsError, params_from_dict, params_to_dict
from fmnist.stages import train
from fmnist.training import distribute
from fmnist.training.distribute import Cluster, choose, parse_tf_config


def tf_config(workers: list[str], task_type: str = "worker", index: int = 0, chief=None) -> str:
    cluster = {"worker": workers, **({"chief": [chief]} if chief else {})}
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


def test_no_tf_config_is_one_local_chief():
    cluster = parse_tf_config(None)
    assert cluster.workers == 1 and cluster.is_chief


@pytest.mark.parametrize(
    ("task_type", "index", "chief", "workers", "is_chief"),
    [
        ("worker", 0, None, 2, True),  # no chief task: worker 0 is the chief
        ("worker", 1, None, 2, False),
        ("worker", 0, "h:3", 3, False),  # a chief task exists: worker 0 is not it
        ("chief", 0, "h:3", 3, True),
        ("evaluator", 0, None, 2, False),
    ],
)
def test_parse_tf_config_finds_the_chief(task_type, index, chief, workers, is_chief):
    cluster = parse_tf_config(tf_config(["h:1", "h:2"], task_type, index, chief))
    assert cluster.workers == workers
    assert cluster.is_chief is is_chief


@pytest.mark.parametrize(
    "text", ["{not json", '{"cluster": []}', tf_config(["h:1", "h:2"], "worker", 2)]
)
def test_a_bad_tf_config_is_a_clear_error(text):
    with pytest.raises(PipelineError, match="TF_CONFIG"):
        parse_tf_config(text)


@pytest.mark.parametrize(
    ("requested", "gpus", "workers", "expected"),
    [
        ("auto", 0, 1, "none"),  # this machine: exactly the single-device path of before
        ("auto", 1, 1, "none"),  # the default strategy already runs on the one GPU
        ("auto", 4, 1, "mirrored"),
        ("auto", 0, 2, "multi_worker"),
        ("auto", 4, 2, "multi_worker"),
        ("one_device", 0, 1, "one_device"),
        ("mirrored", 0, 1, "mirrored"),
        ("none", 8, 4, "none"),  # an explicit choice is kept
    ],
)
def test_choose(requested, gpus, workers, expected):
    assert choose(requested, gpus, Cluster(workers=workers)) == expected


def test_batch_and_learning_rate_scale_with_replicas():
    assert distribute.global_batch_size(128, 8) == 1024
    assert distribute.scaled_learning_rate(1e-3, 8, scale=True) == pytest.approx(8e-3)
    assert distribute.scaled_learning_rate(1e-3, 8, scale=False) == 1e-3
    assert distribute.scaled_learning_rate(1e-3, 1, scale=True) == 1e-3


def test_a_misspelt_strategy_is_rejected():
    data = params_to_dict(Params())
    data["train"]["distribute"] = "multiworker"
    with pytest.raises(ParamsError, match="train.distribute.*multi_worker"):
        params_from_dict(data)


def _tiny_params(distribute_as: str):
    data = params_to_dict(Params())
    data["train"].update(
        epochs=1, batch_size=16, distribute=distribute_as, deterministic=True, seed=3
    )
    data["train"]["early_stopping"]["patience"] = 0
    data["train"]["reduce_lr"]["patience"] = 0
    return params_from_dict(data)


def _initial_weights() -> list[np.ndarray]:
    params = _tiny_params("none")
    keras.utils.set_random_seed(params.train.seed)
    return architectures.build(params.model).get_weights()


def _weights_after_training(distribute_as: str, tiny_data) -> list[np.ndarray]:
    params = _tiny_params(distribute_as)
    strategy, _, record = distribute.setup(params.train.distribute)
    assert record["replicas"] == 1
    keras.utils.set_random_seed(params.train.seed)
    images, labels = tiny_data["train"]
    model, _ = train.train(params, (images, labels), tiny_data["test"], strategy=strategy)
    return model.get_weights()


@pytest.mark.slow  # trains
def test_auto_on_this_machine_trains_exactly_like_no_strategy(tiny_data):
    """Requirement 3: `auto` on a CPU is the single-device path, to the last bit."""
    reference = _weights_after_training("none", tiny_data)
    weights = _weights_after_training("auto", tiny_data)
    assert all(np.array_equal(a, b) for a, b in zip(reference, weights))
    # ...and training did move the weights, so the comparison means something.
    initial = _initial_weights()
    assert not all(np.array_equal(a, b) for a, b in zip(initial, reference))


# --- two real workers on localhost -------------------------------------------------------


def free_ports(n: int) -> list[int]:
    """`n` distinct free TCP ports on the loopback interface."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.mark.slow
def test_two_workers_train_in_sync_and_only_the_chief_writes(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    tiny = helpers.synthetic_dataset(train_per_class=10, test_per_class=4)
    (data / "train.npz").write_bytes(encode_npz(*tiny["train"]))
    (data / "val.npz").write_bytes(encode_npz(*tiny["test"]))
    params = tmp_path / "params.yaml"
    params.write_text((helpers.ROOT / "params.yaml").read_text())
    helpers.set_params(
        params,
        {
            **{k: v for k, v in helpers.TINY_PARAMS.items() if k.startswith("train.")},
            "train.distribute": "multi_worker",
        },
    )
    addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
    procs = []
    for index in range(2):
        out = tmp_path / f"worker{index}"
        out.mkdir()
        cmd = [
            sys.executable, "-m", "fmnist.stages", "train", "--params", str(params),
            "--data", str(data),
            "--model", "model.keras", "--live-dir", "live", "--record", "train.json",
            "--worker-dir", str(tmp_path / f"scratch{index}"),
        ]  # fmt: skip
        env = helpers.checkout_env(TF_CONFIG=tf_config(addresses, "worker", index))
        procs.append(
            subprocess.Popen(
                cmd, cwd=out, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=300)[0])
    finally:
        for proc in procs:  # never leave a worker waiting for its peer
            proc.kill()
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output

    chief, worker = tmp_path / "worker0", tmp_path / "worker1"
    record = json.loads((chief / "train.json").read_text())
    assert (record["distribute"], record["workers"], record["replicas"]) == ("multi_worker", 2, 2)
    assert record["global_batch_size"] == 2 * helpers.TINY_PARAMS["train.batch_size"]
    assert record["epochs_run"] == 2
    assert (chief / "live" / "metrics.json").is_file()
    # The chief wrote only to its outputs; the other worker's copy went to its scratch dir.
    assert not (tmp_path / "scratch0").exists()
    assert sorted(p.name for p in worker.iterdir()) == []
    # Both ended with the same weights, BatchNorm's moving statistics included (synchronized
    # over the global batch), and the chief saved them.
    saved = saving.load_model(chief / "model.keras")
    replica = saving.load_model(tmp_path / "scratch1" / "model.keras")
    assert any(
        isinstance(layer, keras.layers.BatchNormalization) for layer in tta.network(saved).layers
    )
    assert all(np.array_equal(a, b) for a, b in zip(saved.get_weights(), replica.get_weights()))
    initial = _initial_weights()
    assert not all(np.array_equal(a, b) for a, b in zip(initial, saved.get_weights()))


@pytest.mark.parametrize(
    ("config", "code"),
    [
        (None, 0),
        (tf_config(["h:1", "h:2"], "worker", 0), 0),
        (tf_config(["h:1", "h:2"], "worker", 1), 1),
        ("{not json", 2),
    ],
)
def test_is_chief_command_for_job_scripts(monkeypatch, config, code):
    if config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", config)
    assert distribute.main([]) == code
