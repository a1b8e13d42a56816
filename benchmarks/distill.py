"""Distillation: the trained network, fine-tuned to answer alone what its test-time views answer
averaged, so that the fast signature (one view) gains the averaged one's accuracy.

The teacher is `models/model.keras` (the network averaged over the views of `model.tta_*`); the
student starts as a copy of its network. Each step draws an augmented training batch, as
`train` does (`train.augment`), and moves the student towards a mix of the teacher's
probabilities on that batch (softened by a temperature) and the true labels; AdamW with a
cosine decay from `--lr`, with a line per epoch. The student is scored alone on the
validation and test splits, and averaged over the teacher's views; choose on validation, the
test column only reports. It writes the student as a `.keras` file (plain Keras layers), which
`benchmarks/inference.py --distilled` times and scores.

    python3 benchmarks/distill.py --epochs 5 --out models/distilled.keras
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import machine  # first: TensorFlow starts with the stages' process settings

# isort: split
import keras
import numpy as np
import tensorflow as tf

from fmnist.dataset import load_split
from fmnist.errors import report_errors
from fmnist.model import saving, tta
from fmnist.params import load_params
from fmnist.training import inputs


def distill(
    teacher: keras.Model,
    student: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    augment,
    epochs: int,
    batch_size: int,
    lr: float,
    temperature: float,
    alpha: float,
    seed: int = 0,
) -> list[float]:
    """Fine-tune `student` towards `teacher`; return the mean loss of each epoch."""
    images, labels = train
    steps = inputs.steps_per_epoch(len(labels), batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=epochs * steps)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=1e-4)
    epoch = tf.Variable(0, dtype=tf.int64)
    data = inputs.training_dataset(images, labels, batch_size, seed, epoch, augment)

    def soften(probs: tf.Tensor) -> tf.Tensor:
        logits = tf.math.log(tf.clip_by_value(probs, 1e-7, 1.0)) / temperature
        return tf.nn.softmax(logits)

    @tf.function
    def step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        target = soften(teacher(x, training=False))
        with tf.GradientTape() as tape:
            probs = student(x, training=True)
            soft = keras.losses.kl_divergence(target, soften(probs)) * temperature**2
            hard = keras.losses.sparse_categorical_crossentropy(y, probs)
            loss = tf.reduce_mean(alpha * soft + (1.0 - alpha) * hard)
        grads = tape.gradient(loss, student.trainable_variables)
        optimizer.apply_gradients(zip(grads, student.trainable_variables))
        return loss

    losses = []
    start = time.perf_counter()
    for e in range(epochs):
        epoch.assign(e)
        total, count = 0.0, 0
        for x, y in data:
            total += float(step(x, y))
            count += 1
        losses.append(total / max(count, 1))
        seconds = time.perf_counter() - start
        print(
            f"distill: epoch {e + 1}/{epochs}, loss {losses[-1]:.4f}, {seconds:.0f} s", flush=True
        )
    return losses


def accuracy(model: keras.Model, split: tuple[np.ndarray, np.ndarray]) -> float:
    """Accuracy of `model` on a split (uint8 images)."""
    probs = model.predict(inputs.preprocess(split[0]), batch_size=500, verbose=0)
    return float((probs.argmax(axis=1) == split[1]).mean())


@report_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/model.keras"))
    parser.add_argument("--data", type=Path, default=Path("data/prepared"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-4, help="AdamW's peak learning rate")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.9, help="weight of the teacher's term")
    parser.add_argument("--out", type=Path, default=Path("models/distilled.keras"))
    args = parser.parse_args()
    params = load_params(args.params)
    teacher = saving.load_model(args.model)
    network = tta.network(teacher)
    student = saving.keras_copy(network, "float32")
    student.set_weights(network.get_weights())
    splits = {name: load_split(args.data / f"{name}.npz") for name in ("train", "val", "test")}
    before = {s: accuracy(network, splits[s]) for s in ("val", "test")}
    teacher_acc = {s: accuracy(teacher, splits[s]) for s in ("val", "test")}
    start = time.perf_counter()
    losses = distill(
        teacher, student, splits["train"], params.train.augment, args.epochs, args.batch_size,
        args.lr, args.temperature, args.alpha,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    after = {s: accuracy(student, splits[s]) for s in ("val", "test")}
    # The student with the teacher's views: does distilling also raise the averaged answer?
    averaged = tta.with_test_time_augmentation(student, params.model)
    after_views = {s: accuracy(averaged, splits[s]) for s in ("val", "test")}
    saving.save_model(student, args.out)
    print(f"machine: {machine.describe()}")
    print(f"teacher: {args.model} ({teacher.name}); student written to {args.out}")
    print(
        f"{args.epochs} epochs in {seconds:.0f} s, losses {', '.join(f'{x:.4f}' for x in losses)}\n"
    )
    print("| model | views | val accuracy | test accuracy |")
    print("|---|---|---|---|")
    views = params.model.tta_views
    for name, count, acc in (
        ("teacher (averaged)", views, teacher_acc),
        ("network alone", 1, before),
        (f"distilled ({args.epochs} epochs, T={args.temperature}, alpha={args.alpha})", 1, after),
        ("distilled, averaged", views, after_views),
    ):
        print(f"| {name} | {count} | {acc['val']:.2%} | {acc['test']:.2%} |")


if __name__ == "__main__":
    sys.exit(main())
