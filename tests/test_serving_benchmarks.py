"""The serving benchmarks run on the tiny repository and print their tables: a broken one
would otherwise show up only in the next long run on the real data."""

from __future__ import annotations

import re
import sys

import pytest
import yaml

from helpers import ROOT, run
from test_benchmarks import table_rows

BENCHMARKS = ROOT / "benchmarks"
ENV = {"PYTHONPATH": f"{ROOT / 'src'}:{BENCHMARKS}"}
PERCENT = re.compile(r"\d+\.\d\d%")

pytestmark = pytest.mark.slow


def tables(stdout: str) -> list[list[dict[str, str]]]:
    """Every table a script printed, as rows by column."""
    groups, current = [], []
    for line in stdout.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            groups.append(table_rows("\n".join(current)))
            current = []
    return groups


def test_inference_prints_every_variant_and_the_views_in_order(reproduced_repo):
    cmd = [sys.executable, str(BENCHMARKS / "inference.py"), "--rounds", "1", "--runs", "3"]
    cmd += ["--batches", "1", "--batch", "16"]
    proc = run(cmd, cwd=reproduced_repo, env=ENV)
    variants, views = tables(proc.stdout)
    names = [row["variant"] for row in variants]
    assert names[0] == "today (main)"
    expected = {"averaged", "single", "averaged XLA", "single XLA", "2 views", "5 views"}
    assert expected | {"bytes (JPEG photos)"} <= set(names)
    for row in variants:
        assert float(row["images/s (oneDNN on)"].replace(",", "")) > 0
        assert float(row["p50 ms (off)"]) > 0
        if row["variant"] != "bytes (JPEG photos)":
            assert PERCENT.fullmatch(row["test accuracy"]), row
    by_name = {row["variant"]: row for row in variants}
    # The same views batched or called one by one: the same answers.
    assert by_name["today (main)"]["test accuracy"] == by_name["averaged"]["test accuracy"]
    assert [row["views"] for row in views] == [str(n) for n in range(1, 11)]
    assert views[0]["added"] == "image"
    assert len({row["added"] for row in views}) == 10


def test_distillation_writes_a_single_network_and_scores_it(reproduced_repo, tmp_path):
    out = tmp_path / "distilled.keras"
    cmd = [sys.executable, str(BENCHMARKS / "distill.py"), "--epochs", "1", "--out", str(out)]
    proc = run(cmd, cwd=reproduced_repo, env=ENV)
    (rows,) = tables(proc.stdout)
    assert [row["views"] for row in rows] == ["10", "1", "1", "10"]
    assert all(PERCENT.fullmatch(row["test accuracy"]) for row in rows)
    import keras

    student = keras.saving.load_model(out, compile=False, safe_mode=True)
    assert student.name == "bn_gap_cnn" and student.count_params() > 0


def test_product_photos_are_answered_three_ways(reproduced_repo):
    cmd = [sys.executable, str(BENCHMARKS / "product_photos.py"), "--count", "30"]
    proc = run(cmd, cwd=reproduced_repo, env=ENV)
    (rows,) = tables(proc.stdout)
    assert [row["images"] for row in rows] == ["30"] * 4
    assert "0 refused" in proc.stdout
    assert "agree on 100.00% of the photos" in proc.stdout


def test_stage_seconds_times_a_revision_with_params_yaml_and_with_a_set(reproduced_repo):
    status = run(["git", "status", "--porcelain"], cwd=reproduced_repo).stdout
    cmd = [sys.executable, str(BENCHMARKS / "stage_seconds.py"), "HEAD", "--rounds", "1"]
    cmd += ["-S", "package.throughput_batch_size=7"]
    proc = run(cmd, cwd=reproduced_repo, env=ENV)
    (rows,) = tables(proc.stdout)
    assert [(row["stage"], row["revision"], row["params"]) for row in rows] == [
        (stage, "HEAD", params)
        for stage in ("evaluate", "package", "both")
        for params in ("params.yaml", "package.throughput_batch_size=7")
    ]
    assert all(float(row["median s"]) > 0 for row in rows)
    assert [row["speed-up over the first"] for row in rows][::2] == ["1.00×"] * 3
    # Each run says what the stage reported: the set reached the stage.
    packaged = {
        line.split(", ")[1].split(":")[0]: line
        for line in proc.stdout.splitlines()
        if line.startswith("round 1: package with HEAD")
    }
    params = yaml.safe_load((reproduced_repo / "params.yaml").read_text())
    assert f"at batch {params['package']['throughput_batch_size']} " in packaged["params.yaml"]
    assert "at batch 7 " in packaged["package.throughput_batch_size=7"]
    # The stages wrote into a scratch copy: the shared repository is as it was.
    assert run(["git", "status", "--porcelain"], cwd=reproduced_repo).stdout == status
