"""Where training runs: one device, all local GPUs, or several workers, with `tf.distribute`.

`train.distribute` names a strategy; `auto` picks one from what is visible:

| visible                                 | `auto` picks   | strategy                          |
|-----------------------------------------|----------------|-----------------------------------|
| `TF_CONFIG` naming more than one worker | `multi_worker` | `MultiWorkerMirroredStrategy`     |
| two or more GPUs                        | `mirrored`     | `MirroredStrategy` (all GPUs)     |
| one GPU, or only the CPU                | `none`         | TensorFlow's default strategy     |

`none` is the default strategy, exactly the code path of a plain `model.fit` (on one GPU it
already runs there); `one_device` pins everything to the first GPU (or the CPU) explicitly.

`train.batch_size` is the batch of ONE replica: the global batch is that times the number of
replicas, so each GPU sees the same batch whatever the cluster. The learning rate is scaled
by the same factor (the linear scaling rule, Goyal et al. 2017, "Accurate, Large Minibatch
SGD") when `train.scale_lr_with_replicas` is true. With one replica neither changes: a
single-device run is a plain `model.fit`.

Every worker of a multi-worker job runs the same `train` stage command; `TF_CONFIG` (set by
Vertex AI, or by hand) tells each which one it is. Only the chief writes the stage's outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import Literal

import tensorflow as tf

from fmnist.errors import PipelineError
from fmnist.params import Distribute

# What `choose` resolves `auto` to: every value of `train.distribute` but `auto`.
Strategy = Literal["none", "one_device", "mirrored", "multi_worker"]


@dataclass(frozen=True)
class Cluster:
    """The part of `TF_CONFIG` that matters here: how many workers, and which one this is."""

    workers: int = 1  # chief + workers (evaluators and parameter servers do not train)
    task_type: str = "worker"
    task_index: int = 0
    has_chief: bool = False  # whether the cluster names a `chief` task apart from the workers

    @property
    def is_chief(self) -> bool:
        """The task that writes outputs: `chief` if the cluster has one, else worker 0."""
        return self.task_type == "chief" or (
            self.task_type == "worker" and self.task_index == 0 and not self.has_chief
        )


def parse_tf_config(text: str | None) -> Cluster:
    """The cluster described by a `TF_CONFIG` value; no value means one local worker."""
    if not text:
        return Cluster()
    try:
        config = json.loads(text)
        cluster = config.get("cluster", {})
        task = config.get("task", {})
        chiefs, workers = len(cluster.get("chief", [])), len(cluster.get("worker", []))
        task_type, task_index = str(task.get("type", "worker")), int(task.get("index", 0))
    except (ValueError, TypeError, AttributeError) as exc:
        raise PipelineError(
            "TF_CONFIG is not valid: expected JSON like "
            '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}'
            f" ({exc})"
        ) from None
    if task_type in ("chief", "worker") and task_index >= len(cluster.get(task_type, [])):
        raise PipelineError(
            f"TF_CONFIG: task {task_type} {task_index} is not in the cluster "
            f"({chiefs} chief, {workers} worker addresses)"
        )
    return Cluster(chiefs + workers, task_type, task_index, has_chief=chiefs > 0)


def choose(requested: Distribute, gpus: int, cluster: Cluster) -> Strategy:
    """The strategy for `train.distribute`: `auto` resolved from the GPUs and the cluster."""
    if requested != "auto":
        return requested
    if cluster.workers > 1:
        return "multi_worker"
    if gpus > 1:
        return "mirrored"
    return "none"


class KerasMultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """`MultiWorkerMirroredStrategy` with a `reduce` that Keras 3's `fit` can use.

    Keras 3 (up to 3.15 at least; keras-team/keras#20585, tensorflow/tensorflow#72388) calls
    the strategy's `reduce` in two ways it rejects once there are two workers, so `fit` fails:

    - on the first input batch, a nest of per-replica tensors, only to learn the inputs'
      shapes and dtypes: this gets this worker's first replica's batch, which has them;
    - with `axis=0` on each step's scalar logs (loss, metrics): a scalar has no axis 0, so it
      is reduced over the replicas alone.

    The gradients' all-reduce and the metrics' synchronisation, the actual distributed work,
    do not go through here and are TensorFlow's own.
    """

    def reduce(self, reduce_op, value, axis=None):
        """Reduce `value` across replicas; see the class docstring for the two Keras cases."""
        if not isinstance(value, tf.distribute.DistributedValues):
            return tf.nest.map_structure(
                lambda v: (
                    self.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues)
                    else v
                ),
                value,
            )
        if axis is not None and all(v.shape.rank == 0 for v in value.values):
            axis = None
        return super().reduce(reduce_op, value, axis)


def build(kind: Strategy, gpus: int) -> tf.distribute.Strategy:
    """The `tf.distribute` strategy of that kind.

    Call it before any other TensorFlow op: `MultiWorkerMirroredStrategy` configures the
    runtime's collective ops, which must happen before the runtime starts.
    """
    if kind == "multi_worker":
        return KerasMultiWorkerMirroredStrategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    return tf.distribute.get_strategy()


def global_batch_size(per_replica: int, replicas: int) -> int:
    """The batch the input pipeline yields: `per_replica` for each replica in sync."""
    return per_replica * replicas


def scaled_learning_rate(learning_rate: float, replicas: int, scale: bool) -> float:
    """Linear scaling: a batch `replicas` times larger takes a step `replicas` times larger."""
    return learning_rate * replicas if scale else learning_rate


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` sharded across workers by element, not by file.

    The data are in-memory arrays, not files, so the default (`AUTO`, file-based first) can
    only fall back to this, with a warning; saying it avoids the warning.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def setup(requested: Distribute) -> tuple[tf.distribute.Strategy, Cluster, dict]:
    """Choose and build the strategy; return it, this task's place, and a record of both."""
    cluster = parse_tf_config(os.environ.get("TF_CONFIG"))
    gpus = len(tf.config.list_physical_devices("GPU"))
    kind = choose(requested, gpus, cluster)
    strategy = build(kind, gpus)
    record = {
        "distribute": kind,
        "replicas": int(strategy.num_replicas_in_sync),
        "workers": cluster.workers if kind == "multi_worker" else 1,
    }
    return strategy, cluster, record


def main(argv: list[str] | None = None) -> int:
    """Exit 0 if this task (by `TF_CONFIG`) is the chief, 1 if not, 2 if TF_CONFIG is bad."""
    parser = argparse.ArgumentParser(description="Is this task the chief of its TF_CONFIG?")
    parser.parse_args(argv)
    try:
        cluster = parse_tf_config(os.environ.get("TF_CONFIG"))
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if cluster.is_chief else 1


if __name__ == "__main__":
    sys.exit(main())
