"""The accuracy benchmarks run: on the tiny data, for one epoch, each as the README runs it.

`benchmarks/seed_scripts.py` (the seeds' recipes as plain Keras scripts) and
`benchmarks/recipe_runs.py` (the recipes as DVC experiments) are where the README's accuracy figures
come from; a broken one would otherwise only show up in the next 20-minute benchmark.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys

import pytest
import yaml

from fmnist.model import architectures
from helpers import ROOT, dvc, git, recipe_params, run

BENCHMARKS = ROOT / "benchmarks"
SCRIPT = BENCHMARKS / "seed_scripts.py"
ENV = {"PYTHONPATH": f"{ROOT / 'src'}:{BENCHMARKS}"}


def table_rows(stdout: str) -> list[dict[str, str]]:
    """The result rows of a script's table, by column."""
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    header, _, *rows = lines
    names = [cell.strip() for cell in header.strip("|").split("|")]
    return [dict(zip(names, (cell.strip() for cell in row.strip("|").split("|")))) for row in rows]


def table_row(stdout: str) -> dict[str, str]:
    """The one result row of a script's table, by column."""
    rows = table_rows(stdout)
    assert len(rows) == 1, stdout
    return rows[0]


def parameters(recipe: str) -> str:
    """The pipeline's parameter count for `recipe`, as the tables print it."""
    return f"{architectures.build(recipe_params(recipe).model).count_params():,}"


@pytest.mark.slow
@pytest.mark.parametrize("augmentation", ["ImageDataGenerator", "layers"])
def test_seed_script_trains_the_writeup_recipe_in_plain_keras(reproduced_repo, augmentation):
    cmd = [sys.executable, str(SCRIPT), "--recipe", "writeup", "-S", "train.epochs=1"]
    cmd += ["--data", str(reproduced_repo / "data" / "prepared"), "--seeds", "3"]
    cmd += ["--augmentation", augmentation]
    proc = run(cmd, cwd=ROOT, env=ENV)

    assert f"augmentation {augmentation}" in proc.stdout
    row = table_row(proc.stdout)
    assert row["seed"] == "3"
    # The pipeline's network for the recipe: augmentation layers in front of it add no weights.
    assert row["parameters"] == parameters("writeup")
    assert row["epochs (best)"] == "1 (1)"
    for split in ("val accuracy", "test accuracy"):
        assert 0 <= float(re.fullmatch(r"([\d.]+)%", row[split])[1]) <= 100


@pytest.mark.slow
def test_recipes_benchmark_runs_each_recipe_from_the_same_params_and_never_clobbers(tiny_repo):
    shutil.copy(ROOT / "recipes.yaml", tiny_repo / "recipes.yaml")
    git("add", "recipes.yaml", cwd=tiny_repo)
    git("commit", "-qm", "recipes", cwd=tiny_repo)
    # A setting left in the workspace by an earlier experiment is named, and not used.
    params = yaml.safe_load((tiny_repo / "params.yaml").read_text())
    committed_smoothing = params["train"]["label_smoothing"]
    params["train"]["label_smoothing"] = 0.3
    (tiny_repo / "params.yaml").write_text(yaml.safe_dump(params))
    # notebook first: a workspace experiment leaves its params behind, and `default` sets none.
    cmd = [sys.executable, str(BENCHMARKS / "recipe_runs.py"), "notebook", "default"]
    cmd += ["--seeds", "5", "-S", "train.epochs=2", "--plot", "curves.png"]
    proc = run(cmd, cwd=tiny_repo, env=ENV)
    assert "not the workspace's, which differs in train.label_smoothing (" in proc.stdout
    last_run = yaml.safe_load((tiny_repo / "params.yaml").read_text())["train"]
    assert last_run["label_smoothing"] == committed_smoothing

    rows = table_rows(proc.stdout)
    assert [(r["recipe"], r["seed"], r["epochs"]) for r in rows] == [
        ("notebook", "5", "2"),
        ("default", "5", "2"),
    ]
    assert [r["parameters"] for r in rows] == [parameters("notebook"), parameters("default")]
    for row in rows:
        assert 0 <= float(re.fullmatch(r"([\d.]+)%", row["test accuracy"])[1]) <= 100
        assert float(row["end-to-end s"]) >= float(row["train s"]) > 0
    # The first run made the data; the second found it up to date and ran only the rest.
    made, reused = (stage_seconds(r["stages s"]) for r in rows)
    assert {"fetch", "prepare", "train", "evaluate", "package"} <= set(made)
    assert {"train", "evaluate", "package"} <= set(reused) and not {"fetch", "prepare"} & set(
        reused
    )
    assert sum(made.values()) <= float(rows[0]["end-to-end s"]) + 1  # rounding
    assert (tiny_repo / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert "speed probe" in proc.stdout and "machine:" in proc.stdout
    shown = dvc("exp", "show", "--json", cwd=tiny_repo).stdout
    assert "bench-notebook-seed5" in shown and "bench-default-seed5" in shown

    # Again: the names are taken, so it stops before running anything and changes nothing.
    before = (tiny_repo / "params.yaml").read_text()
    proc = run(cmd, cwd=tiny_repo, env=ENV, check=False)
    assert proc.returncode != 0
    assert "bench-default-seed5, bench-notebook-seed5 already exist" in proc.stderr
    assert (tiny_repo / "params.yaml").read_text() == before
    # Once removed, the same params again, every stage run as in a fresh clone (--fresh):
    # trained again (no run cache: docs/pipeline.md), to the same model.
    dvc("exp", "remove", "bench-notebook-seed5", cwd=tiny_repo)
    proc = run([*cmd[:3], *cmd[4:], "--fresh"], cwd=tiny_repo, env=ENV)
    row = table_row(proc.stdout)
    assert row["test accuracy"] == rows[0]["test accuracy"]
    assert {"fetch", "prepare", "train"} <= set(stage_seconds(row["stages s"]))


def stage_seconds(cell: str) -> dict[str, float]:
    """The stages and their seconds in a "stages s" cell ("train 12, evaluate 3")."""
    return {name: float(sec) for name, sec in (item.split() for item in cell.split(", "))}


@pytest.mark.slow
def test_candidates_benchmark_logs_a_runs_curve_and_view_scores_and_reports_them(
    reproduced_repo, tmp_path
):
    log, png = tmp_path / "runs.jsonl", tmp_path / "curves.png"
    script = str(BENCHMARKS / "candidates.py")
    data = str(reproduced_repo / "data" / "prepared")
    sets = ["--recipe", "quick", "-S", "train.epochs=2"]
    run(
        [sys.executable, script, "tiny", *sets, "--data", data, "--log", str(log)],
        cwd=ROOT,
        env=ENV,
    )

    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert record["name"] == "tiny" and record["epochs"] == 2 and record["cores"] >= 1
    assert (record["recipe"], record["sets"]) == ("quick", ["train.epochs=2"])
    assert record["parameters"] == int(parameters("quick").replace(",", ""))
    seconds = record["epoch_seconds"]
    assert len(seconds) == len(record["val_accuracy"]) == 2
    assert 0 < seconds[0] < seconds[1] <= record["train_seconds"]
    views = ("1 view", "mirror", "shifts", "10 views")
    assert set(record["scores"]) == {f"{split} {v}" for split in ("val", "test") for v in views}
    assert all(0 <= score <= 1 for score in record["scores"].values())
    # The one-view validation score of the final network is the last epoch's val_accuracy.
    assert record["scores"]["val 1 view"] == pytest.approx(record["val_accuracy"][-1], abs=1e-6)

    report = [sys.executable, script, "--report", "--log", str(log), "--plot", str(png)]
    row = table_row(run(report, cwd=ROOT, env=ENV).stdout)
    assert row["run"] == "tiny" and row["epochs"] == "2"
    assert row["val 10 views"] == f"{record['scores']['val 10 views']:.2%}"
    assert png.read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_candidates_distil_teachers_towards_their_mean_probabilities_mixed_with_the_labels(
    reproduced_repo, tmp_path
):
    check = """
import keras, numpy as np, candidates
from pathlib import Path
from fmnist.model import architectures, saving
from fmnist.params import ModelParams
from fmnist.training import inputs
pixels = np.random.default_rng(0).integers(0, 256, (16, 28, 28), dtype=np.uint8)
labels = np.arange(16) % 10
paths = [Path("t0.keras"), Path("t1.keras")]
for seed, path in enumerate(paths):
    keras.utils.set_random_seed(seed)
    saving.save_model(architectures.build(ModelParams(filters=(4, 6, 8))), path)
probs = [saving.load_model(p).predict(inputs.preprocess(pixels), verbose=0) for p in paths]
assert not np.allclose(probs[0], probs[1], atol=1e-3)
cache = Path("cache")
one, one_file, hit = candidates.teacher_probabilities(paths[:1], pixels, cache)
assert np.allclose(one, probs[0], atol=1e-6) and one_file.is_file() and not hit
both, both_file, hit = candidates.teacher_probabilities(paths, pixels, cache)
assert np.allclose(both, (probs[0] + probs[1]) / 2, atol=1e-6) and not hit
# The same teachers in either order, the same images: read back, not scored.
again, again_file, hit = candidates.teacher_probabilities(paths[::-1], pixels, cache)
assert hit and again_file == both_file and np.array_equal(again, both)
# Other images, or a damaged file, are scored afresh (and the file replaced).
_, other_file, hit = candidates.teacher_probabilities(paths, pixels[:8], cache)
assert not hit and other_file != both_file and len(list(cache.glob("*.npy"))) == 3
both_file.write_bytes(both_file.read_bytes()[:100])
again, _, hit = candidates.teacher_probabilities(paths, pixels, cache)
assert not hit and np.array_equal(again, both)
assert candidates.teacher_probabilities(paths, pixels, cache)[2]
only = candidates.distillation_targets(one, labels, 1.0, 0.1)
none = candidates.distillation_targets(one, labels, 0.0, 0.1)
half = candidates.distillation_targets(one, labels, 0.5, 0.0)
assert np.allclose(only, probs[0], atol=1e-6)
assert np.allclose(none.max(axis=1), 0.91) and (none.argmax(axis=1) == labels).all()
assert np.allclose(half, (probs[0] + np.eye(10)[labels]) / 2, atol=1e-6)
assert np.allclose(half.sum(axis=1), 1.0, atol=1e-5)
print("targets agree")
"""
    assert "targets agree" in run([sys.executable, "-c", check], cwd=tmp_path, env=ENV).stdout
    log, saved = tmp_path / "runs.jsonl", tmp_path / "student.keras"
    data = ["--data", str(reproduced_repo / "data" / "prepared"), "--log", str(log)]
    data += ["--teacher-cache", str(tmp_path / "scores")]
    teacher = reproduced_repo / "models" / "model.keras"
    cmd = [sys.executable, str(BENCHMARKS / "candidates.py"), "kd", "-S", "train.epochs=1"]
    cmd += ["--teacher", str(teacher), "--teacher-weight", "0.7", "--save", str(saved)]
    run([*cmd, *data], cwd=ROOT, env=ENV)
    # The saved student teaches in turn, beside the shipped model: an ensemble of two.
    cmd = [sys.executable, str(BENCHMARKS / "candidates.py"), "kd2", "-S", "train.epochs=1"]
    run([*cmd, "--teacher", str(teacher), "--teacher", str(saved), *data], cwd=ROOT, env=ENV)
    first, second = [json.loads(line) for line in log.read_text().splitlines()]
    assert (first["teacher"], first["teacher_weight"]) == ([str(teacher)], 0.7)
    assert first["saved"] == str(saved) and "saved" not in second
    assert (second["teacher"], second["teacher_weight"]) == ([str(teacher), str(saved)], 0.5)
    assert first["teacher_seconds"] > 0 and len(first["val_accuracy"]) == 1
    # Each set of teachers scored the training images once and kept the scores.
    assert not first["teacher_cached"] and not second["teacher_cached"]
    kept = {first["teacher_cache"], second["teacher_cache"]}
    assert kept == {str(p) for p in (tmp_path / "scores").glob("*.npy")} and len(kept) == 2
    # Validation keeps the true labels: its one-view score is the final network's.
    assert first["scores"]["val 1 view"] == pytest.approx(first["val_accuracy"][0], abs=1e-6)
    # What was saved is the model that was scored, its views averaged as `train` saves it.
    check = f"""
import numpy as np, candidates
from fmnist.dataset import load_split
from fmnist.model import saving, tta
model = saving.load_model({str(saved)!r})
assert model.name.endswith("_tta"), model.name
val = load_split({str(data[1])!r} + "/val.npz")
print(round(candidates.score_views(tta.network(model), {{"val": val}})["val 1 view"], 6))
"""
    rescored = float(run([sys.executable, "-c", check], cwd=tmp_path, env=ENV).stdout.split()[-1])
    assert rescored == pytest.approx(first["scores"]["val 1 view"], abs=1e-5)
    report = [sys.executable, str(BENCHMARKS / "candidates.py"), "--report", "--log", str(log)]
    first_row, second_row = table_rows(run(report, cwd=ROOT, env=ENV).stdout)
    assert first_row["settings"].endswith(f"--teacher {teacher} --teacher-weight 0.7")
    both = f"--teacher {teacher} --teacher {saved} --teacher-weight 0.5"
    assert second_row["settings"].endswith(both)


@pytest.mark.slow
def test_candidates_average_the_weights_of_a_constant_rate_tail(reproduced_repo, tmp_path):
    check = """
import keras, numpy as np, candidates
from fmnist.params import TrainParams
p = TrainParams(epochs=5, warmup_epochs=1, learning_rate=0.01, schedule="cosine")
rate = candidates.swa_learning_rate(tail=2, fraction=0.1)(p, steps_per_epoch=10)
assert np.isclose(float(rate(10)), 0.01) and float(rate(20)) > 0.001
assert np.allclose([float(rate(s)) for s in (30, 40, 49)], 0.001)
model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.BatchNormalization(),
                          keras.layers.Flatten(), keras.layers.Dense(3)])
average = candidates.WeightAverage(epochs=5, tail=2)
average.set_model(model)
for epoch in range(5):
    model.set_weights([np.full_like(w, epoch) for w in model.get_weights()])
    average.on_epoch_end(epoch)
images = np.random.default_rng(0).integers(0, 256, (30, 28, 28), dtype=np.uint8)
average.apply(images, batch_size=20)
kernel = model.layers[-1].kernel.numpy()
assert np.allclose(kernel, 3.5)  # epochs 3 and 4
norm = model.layers[0]
pixels = images.astype(np.float64) / 255
batches = [pixels[:20], pixels[20:]]
assert np.isclose(norm.moving_mean.numpy()[0], np.mean([b.mean() for b in batches]), atol=1e-6)
assert np.isclose(norm.moving_variance.numpy()[0], np.mean([b.var() for b in batches]), atol=1e-6)
assert norm.momentum == 0.99
print("average agrees")
"""
    assert "average agrees" in run([sys.executable, "-c", check], cwd=tmp_path, env=ENV).stdout
    log = tmp_path / "runs.jsonl"
    cmd = [sys.executable, str(BENCHMARKS / "candidates.py"), "swa", "-S", "train.epochs=4"]
    cmd += ["--swa-epochs", "2", "--swa-rate", "0.2", "--log", str(log)]
    run([*cmd, "--data", str(reproduced_repo / "data" / "prepared")], cwd=ROOT, env=ENV)
    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert (record["swa_epochs"], record["swa_rate"], record["epochs"]) == (2, 0.2, 4)
    assert set(record["live_scores"]) == {"val 1 view", "val mirror", "val shifts", "val 10 views"}
    report = [sys.executable, str(BENCHMARKS / "candidates.py"), "--report", "--log", str(log)]
    row = table_row(run(report, cwd=ROOT, env=ENV).stdout)
    assert row["settings"].endswith("train.epochs=4 --swa-epochs 2 --swa-rate 0.2")


@pytest.mark.slow
def test_tta_view_sets_score_the_shipped_views_as_the_shipped_wrapping_does(reproduced_repo):
    """The set `tta_shift 1` of `--view-sets` is built view by view from the 5x5 grid; it must
    score what the model wrapped with `model.tta_flip` and `tta_shift: 1` scores."""
    model = reproduced_repo / "models" / "model.keras"
    script = [sys.executable, str(BENCHMARKS / "tta.py"), str(model)]
    script += ["--data", str(reproduced_repo / "data" / "prepared")]
    sets = table_rows(run([*script, "--view-sets"], cwd=ROOT, env=ENV).stdout)
    assert [row["count"] for row in sets] == ["1", "2", "6", "6", "10", "18", "18", "50"]
    [shipped] = [row for row in sets if row["views"].endswith("(tta_shift 1)")]
    wrapped = table_rows(run([*script, "--settings", "0:0", "1:1"], cwd=ROOT, env=ENV).stdout)
    assert [row["views"] for row in wrapped] == ["1", "10"]
    for split in ("val accuracy", "test accuracy"):
        assert (sets[0][split], shipped[split]) == (wrapped[0][split], wrapped[1][split])


def test_candidates_report_of_a_missing_log_is_one_line(tmp_path, monkeypatch):
    # As a reader runs it: without this suite's log level, so TensorFlow's start-up lines
    # would show here if the benchmarks did not hold them back as the stages do.
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.delenv("FMNIST_VERBOSE", raising=False)
    missing = tmp_path / "none.jsonl"
    cmd = [sys.executable, str(BENCHMARKS / "candidates.py"), "--report", "--log", str(missing)]
    proc = run(cmd, cwd=ROOT, env=ENV, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"{missing}: no such log; name one with --log (runs append to it)"
    ]


# Each benchmark that reads params, recipes, the pipeline, prepared data or a model, with the first
# arguments it needs, and what it reports missing when run outside a reproduced workspace.
MISSING = {
    "arch_speed.py c16": "params.yaml: file not found",
    "augment_strength.py": "params.yaml: file not found",
    "candidates.py run": "recipes.yaml: file not found",
    "determinism.py --settings 'float32, oneDNN on'": "recipes.yaml: file not found",
    "distill.py": "params.yaml: file not found",
    "inference.py": "params.yaml: file not found",
    "op_profile.py": "recipes.yaml: file not found",
    "peak_memory.py": "dvc.yaml: cannot read it",
    "product_photos.py": "data/prepared/test.npz: missing; run `dvc repro prepare`",
    "recipe_runs.py quick": "recipes.yaml: file not found",
    "seed_scripts.py": "recipes.yaml: file not found",
    "throughput.py": "recipes.yaml: file not found",
    "tta.py": "models/model.keras: no model there; run `dvc repro train`",
    "tune_study.py": "tune.yaml: not found",
}


@pytest.mark.parametrize("command", MISSING)
def test_a_benchmark_outside_a_reproduced_workspace_says_what_is_missing_in_one_line(
    command, tmp_path, monkeypatch
):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.delenv("FMNIST_VERBOSE", raising=False)
    script, *args = shlex.split(command)
    cmd = [sys.executable, str(BENCHMARKS / script), *args]
    proc = run(cmd, cwd=tmp_path, env=ENV, check=False)
    assert proc.returncode == 1, proc.stderr
    *progress, line = proc.stderr.strip().splitlines()
    # determinism.py names each run as it starts it; nothing else comes before the error.
    assert progress == (["float32, oneDNN on: run 1 of 2"] if script == "determinism.py" else [])
    assert line.startswith("error: ") and MISSING[command] in line


def test_candidates_with_a_params_key_that_does_not_exist_is_one_line(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.delenv("FMNIST_VERBOSE", raising=False)
    cmd = [sys.executable, str(BENCHMARKS / "candidates.py"), "run", "-S", "train.epoch=5"]
    proc = run(cmd, cwd=ROOT, env=ENV, check=False)
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and "'train.epoch' is not a key of params.yaml" in line


def test_candidates_refuse_a_weight_average_longer_than_the_decay_leaves():
    # The default's 18 epochs with one of warm-up leave at most 16 for the constant tail.
    cmd = [sys.executable, str(BENCHMARKS / "candidates.py"), "swa", "--swa-epochs", "17"]
    proc = run(cmd, cwd=ROOT, env=ENV, check=False)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.endswith("error: --swa-epochs needs train.schedule cosine, its warm-up and a decay")


def test_stage_seconds_outside_a_reproduced_workspace_is_one_line(tmp_path):
    proc = run([sys.executable, str(BENCHMARKS / "stage_seconds.py")], cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "params.yaml, data/prepared, models/model.keras, metrics: missing here; "
        "run `dvc repro` (or `dvc pull`) first"
    ]


# Bad input that a benchmark refuses before it needs a workspace (two build scratch repositories
# from this checkout; arch_speed.py checks its specs first): data problems are one `error:` line
# with exit 1, bad options argparse's usage and error lines with exit 2.
OWN_CHECKOUT = {
    "dataset_version.py --data nowhere": (1, "error: --data: no such directory nowhere"),
    "dataset_version.py --data .": (1, "error: --data: . holds neither the IDX files"),
    "remote_outage.py --mb 0": (2, "error: --files must be at least 1 and --mb above 0"),
    "arch_speed.py 'c16 p c32@abc'": (2, "expected LAYERS, LAYERS@BATCH or LAYERS@BATCH/REPLICAS"),
    "arch_speed.py 'c16 x c32'": (2, "unknown layer 'x' (cN, cNp or p, N >= 1)"),
    "arch_speed.py c16@128/0": (2, "the batch must be a positive multiple of the replicas"),
    "arch_speed.py c16@128/3": (2, "the batch must be a positive multiple of the replicas"),
    "arch_speed.py c16 --rounds 0": (2, "--rounds and --images must be at least 1"),
    "candidates.py kd --teacher-weight 1.5": (2, "--teacher-weight must be between 0 and 1"),
    "candidates.py swa --swa-rate 0": (2, "--swa-epochs must be 0 or more, --swa-rate above 0"),
    "candidates.py kd --save no/kd.keras": (2, "--save no/kd.keras: no directory no to save it in"),
    "candidates.py kd --teacher t.keras --teacher-cache /dev/null/s": (
        2,
        "--teacher-cache /dev/null/s: cannot create it (Not a directory)",
    ),
}


@pytest.mark.parametrize("command", OWN_CHECKOUT)
def test_benchmarks_on_their_own_checkout_name_bad_input_in_one_line(
    command, tmp_path, monkeypatch
):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)  # as a reader runs it
    monkeypatch.delenv("FMNIST_VERBOSE", raising=False)
    code, message = OWN_CHECKOUT[command]
    script, *args = shlex.split(command)
    cmd = [sys.executable, str(BENCHMARKS / script), *args]
    proc = run(cmd, cwd=tmp_path, env=ENV, check=False)
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert message in lines[-1] and "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 if code == 1 else lines[0].startswith("usage: "), proc.stderr


def test_stage_seconds_refuses_a_set_key_params_yaml_lacks_in_one_line(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path)
    for directory in ("data/prepared", "metrics", "models/model.keras"):
        (tmp_path / directory).mkdir(parents=True)
    cmd = [sys.executable, str(BENCHMARKS / "stage_seconds.py"), "-S", "evaluate.sample=5"]
    proc = run(cmd, cwd=tmp_path, env=ENV, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["-S: 'evaluate.sample' is not a key of params.yaml"]


def test_stage_seconds_names_the_stage_that_failed_and_why(tmp_path):
    (tmp_path / "src").symlink_to(ROOT / "src")
    (tmp_path / "params.yaml").write_text("train:\n  epochs: many\n")
    for directory in ("data/prepared", "metrics"):
        (tmp_path / directory).mkdir(parents=True)
    (tmp_path / "models").mkdir()
    (tmp_path / "models/model.keras").write_bytes(b"")
    cmd = [sys.executable, str(BENCHMARKS / "stage_seconds.py"), "--rounds", "1"]
    proc = run(cmd, cwd=tmp_path, env=ENV, check=False)
    assert proc.returncode == 1
    *message, last = proc.stderr.strip().splitlines()
    assert last == "evaluate failed with the code of . (its message is above)"
    assert "params.yaml" in "\n".join(message) and "train.epochs" in "\n".join(message)
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_candidates_benchmark_scores_the_views_the_shipped_model_averages(tmp_path):
    """Each view set's score is the shipped model's with that set (`model.tta_*`)."""
    check = """
import numpy as np, candidates, inference
from fmnist.model import architectures, saving
from fmnist.params import ModelParams
from fmnist.training import inputs
pixels = np.random.default_rng(0).integers(0, 256, (16, 28, 28), dtype=np.uint8)
x = inputs.preprocess(pixels)
net = architectures.build(ModelParams(filters=(4, 6, 8)))
probs = inference.view_probabilities(net, pixels, shift=1)
for name, flip, shift in [("1 view", 0, 0), ("mirror", 1, 0), ("shifts", 0, 1), ("10 views", 1, 1)]:
    shipped = saving.for_inference(net, ModelParams(filters=(4, 6, 8), tta_flip=bool(flip),
                                                    tta_shift=shift))
    mean = probs[candidates.VIEW_SETS[name]].mean(axis=0)
    assert np.abs(shipped.predict(x, verbose=0) - mean).max() < 1e-6, name
print("views agree")
"""
    assert "views agree" in run([sys.executable, "-c", check], cwd=tmp_path, env=ENV).stdout


def test_candidates_score_a_bfloat16_trained_network_in_float32_as_the_pipeline_ships_it(
    tmp_path,
):
    """A network trained under mixed_bfloat16 is scored as `evaluate` scores the saved model:
    a float32 copy with the same weights, so the benchmark's scores are the shipped ones."""
    check = """
import keras, numpy as np, candidates, inference
from fmnist.model import architectures
from fmnist.params import ModelParams
keras.mixed_precision.set_global_policy("mixed_bfloat16")
net = architectures.build(ModelParams(filters=(4, 6, 8)))
keras.mixed_precision.set_global_policy("float32")
seen, views = [], inference.view_probabilities
def spy(network, pixels, shift):
    seen.append((network.dtype_policy.name, [w.tolist() for w in network.get_weights()]))
    return views(network, pixels, shift)
inference.view_probabilities = spy
pixels = np.random.default_rng(0).integers(0, 256, (8, 28, 28), dtype=np.uint8)
scores = candidates.score_views(net, {"val": (pixels, np.zeros(8, np.int64))})
assert sorted(scores) == sorted(f"val {name}" for name in candidates.VIEW_SETS)
assert [policy for policy, _ in seen] == ["float32"], seen[0][0]
assert seen[0][1] == [w.tolist() for w in net.get_weights()]
print("scored in float32")
"""
    assert "scored in float32" in run([sys.executable, "-c", check], cwd=tmp_path, env=ENV).stdout


@pytest.mark.slow
def test_arch_speed_benchmark_times_layer_specs_side_by_side(reproduced_repo):
    specs = ["c16 c16 p c48 c48 p c64 c64", "c16p c16 c48p c48 c64 c64@64", "c8p c8", "c8p c8@32/2"]
    cmd = [sys.executable, str(BENCHMARKS / "arch_speed.py"), *specs, "--rounds", "2"]
    cmd += ["--images", "64", "--data", str(reproduced_repo / "data" / "prepared")]
    rows = table_rows(run(cmd, cwd=ROOT, env=ENV).stdout)

    assert [r["network"] for r in rows] == [f"`{spec}`" for spec in specs]
    # The spec language builds the default network: its parameters and multiply-adds.
    assert rows[0]["parameters"] == parameters("default") == rows[1]["parameters"]
    assert [r["forward MMACs"] for r in rows[:2]] == ["10.50", "6.10"]
    assert rows[0]["× the first, per round"] == "1.00 (1.00-1.00)"
    # `@B/R`: the same network, mirrored over R logical CPU devices.
    assert [r["replicas"] for r in rows] == ["1", "1", "1", "2"]
    assert rows[3]["parameters"] == rows[2]["parameters"]
    for row in rows:
        assert float(row["images/s (median)"].replace(",", "")) > 0


@pytest.mark.slow
def test_throughput_times_the_pipeline_with_and_without_its_augmentation(reproduced_repo):
    methods = ["plain fit (NumPy)", "pipeline", "pipeline, unaugmented"]
    cmd = [sys.executable, str(BENCHMARKS / "throughput.py"), "--recipe", "default"]
    cmd += ["--methods", *methods, "--onednn", "on", "--rounds", "1", "--epochs", "1"]
    cmd += ["--images", "64", "--data", str(reproduced_repo / "data" / "prepared")]
    proc = run(cmd, cwd=ROOT, env=ENV)
    rows = table_rows(proc.stdout)

    assert "augmentation on" in proc.stdout
    assert [(r["method"], r["oneDNN"]) for r in rows] == [(m, "on") for m in methods]
    # TensorFlow's own setting (off on most CPUs) did not run: the reference is the one that did.
    reference = "× plain fit (NumPy), oneDNN on"
    assert rows[0][reference] == "1.00"
    for row in rows:
        assert float(row["images/s (median)"].replace(",", "")) > 0
        assert float(row[reference]) > 0


@pytest.mark.slow
def test_determinism_benchmark_trains_each_setting_twice_and_compares_the_bytes(
    reproduced_repo,
):
    settings = ["float32, oneDNN on", "float32, oneDNN off"]
    cmd = [sys.executable, str(BENCHMARKS / "determinism.py"), "--images", "64", "--epochs", "1"]
    cmd += ["--data", str(reproduced_repo / "data" / "prepared"), "--settings", *settings]
    cmd += ["-S", "train.batch_size=16"]
    proc = run(cmd, cwd=ROOT, env=ENV)
    rows = table_rows(proc.stdout)
    assert [row["setting"] for row in rows] == [f"{i}. {s}" for i, s in enumerate(settings, 1)]
    # The pipeline's promise: the same setting on the same machine trains the same bytes.
    assert rows[0]["runs identical"] == "yes"
    assert rows[0]["same weights as 'float32, oneDNN on'"] == "yes"
    assert len(rows[0]["model.keras SHA-256"].split()) == 1
    assert "versions:" in proc.stdout and '"tensorflow"' in proc.stdout
