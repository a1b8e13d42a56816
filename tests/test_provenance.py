"""Stage provenance: each stage's own record of the params and code it ran with, and the checks
that compare those records with the params packaged and with dvc.lock."""

from __future__ import annotations

import json

import pytest
import yaml

from fmnist import provenance
from fmnist.errors import PipelineError
from fmnist.params import Params, flatten, params_to_dict, with_overrides
from fmnist.provenance import ProvenanceError
from helpers import ROOT

DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())


def params_with(**dotted) -> Params:
    from fmnist.params import params_from_dict

    data = with_overrides(
        params_to_dict(Params()), {k.replace("__", "."): v for k, v in dotted.items()}
    )
    return params_from_dict(data)


def test_a_stage_records_only_the_groups_it_reads():
    rec = provenance.record("evaluate", Params())
    assert set(rec["params"]) == {
        "evaluate.batch_size",
        "evaluate.misclassified",
        "evaluate.feature_map_image",
        "evaluate.train_sample",
    }
    train = provenance.stage_params("train", Params())
    assert {k.split(".")[0] for k in train} == {"model", "train"}
    assert provenance.stage_params("package", Params()) == flatten(params_to_dict(Params()))
    assert rec["params_sha256"] == provenance.digest(rec["params"])


def test_the_record_names_the_code_this_process_ran():
    rec = provenance.record("fetch", Params())
    assert "src/fmnist/provenance.py" in rec["code"]
    assert rec["code"]["src/fmnist/params.py"] == provenance.atomic.file_md5(
        ROOT / "src/fmnist/params.py"
    )


def test_the_digest_moves_with_any_value():
    a = provenance.record("evaluate", Params())
    b = provenance.record("evaluate", params_with(evaluate__misclassified=16))
    assert a["params_sha256"] != b["params_sha256"]


def test_a_record_written_and_read_back(tmp_path):
    provenance.write(tmp_path / "evaluate.json", "evaluate", Params())
    assert provenance.read(tmp_path / "evaluate.json", "evaluate")["stage"] == "evaluate"
    with pytest.raises(PipelineError, match="missing; run `dvc repro train`"):
        provenance.read(tmp_path / "train.json", "train")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.pop("code"), "not a provenance record"),
        (lambda r: r.update(stage="train"), "not the record of stage evaluate"),
        (lambda r: r["params"].update({"evaluate.misclassified": 99}), "edited by hand"),
        (lambda r: r.update(params=[1]), "not the record of stage evaluate"),
    ],
)
def test_a_damaged_record_is_refused(tmp_path, edit, message):
    rec = provenance.record("evaluate", Params())
    edit(rec)
    (tmp_path / "r.json").write_text(json.dumps(rec))
    with pytest.raises(ProvenanceError, match=message):
        provenance.read(tmp_path / "r.json", "evaluate")


def lock_with(stage: str, params: dict, deps: dict | None = None) -> dict:
    """A dvc.lock holding one stage's entry, params as DVC writes them."""
    entry = {
        "params": {"params.yaml": params},
        "deps": [{"path": p, "hash": "md5", "md5": m} for p, m in (deps or {}).items()],
    }
    return {"schema": "2.0", "stages": {stage: entry}}


def test_the_concurrent_run_is_named_by_key_on_both_sides():
    """`evaluate` read 25; meanwhile params.yaml and then dvc.lock became 16."""
    ran = {"evaluate": provenance.record("evaluate", params_with(evaluate__misclassified=25))}
    now = flatten(params_to_dict(params_with(evaluate__misclassified=16)))
    lock = lock_with("evaluate", {"evaluate.misclassified": 16, "evaluate.batch_size": 1000})
    (problem,) = provenance.problems(ran, now, "params.yaml", lock)
    assert problem.startswith("evaluate ran with evaluate.misclassified=25 (params.yaml: 16), ")
    assert "evaluate.misclassified=25 (dvc.lock: 16)" in problem
    assert "`dvc repro -f -s evaluate`" in problem
    with pytest.raises(ProvenanceError, match="evaluate.misclassified=25"):
        provenance.check(ran, now, "params.yaml", lock)


def test_records_that_agree_pass_however_yaml_spelled_the_numbers():
    ran = {"train": provenance.record("train", Params())}
    now = flatten(params_to_dict(Params()))
    # DVC writes 1e-07 into dvc.lock, which PyYAML reads back as the string "1e-07".
    locked = {
        "train": {**params_to_dict(Params())["train"]},
        "model": params_to_dict(Params())["model"],
    }
    locked["train"]["reduce_lr"] = {**locked["train"]["reduce_lr"], "min_lr": "1e-07"}
    locked["train"]["epochs"] = float(locked["train"]["epochs"])
    assert provenance.problems(ran, now, "params.yaml", lock_with("train", locked)) == []
    provenance.check(ran, now, "params.yaml", None)  # no dvc.lock: the stage ran without DVC


def test_code_that_differs_from_what_dvc_lock_records_is_named():
    ran = {"fetch": provenance.record("fetch", Params())}
    path = "src/fmnist/params.py"
    lock = lock_with("fetch", {"fetch": params_to_dict(Params())["fetch"]}, {path: "0" * 32})
    (problem,) = provenance.problems(ran, flatten(params_to_dict(Params())), "params.yaml", lock)
    assert f"{path} with MD5 {ran['fetch']['code'][path][:8]} (dvc.lock: 00000000)" in problem


def test_a_key_dvc_lock_records_but_the_stage_did_not_is_named():
    ran = {"evaluate": provenance.record("evaluate", Params())}
    lock = lock_with("evaluate", {"evaluate.new_key": 1})
    (problem,) = provenance.problems(ran, {}, "params.yaml", lock)
    assert "evaluate.new_key is in dvc.lock but not in the stage's record" in problem


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("1e-07", 1e-07, True),
        (2, 2.0, True),
        ([16, 48], (16, 48), True),
        (True, 1, False),
        ("a", "a", True),
        (0.1, 0.2, False),
        ("x", 1.0, False),
    ],
)
def test_same_value(a, b, same):
    assert provenance.same_value(a, b) is same


# --- contracts with dvc.yaml ----------------------------------------------------------------


@pytest.mark.parametrize("stage", list(provenance.STAGE_PARAMS))
def test_the_recorded_groups_are_the_params_dvc_yaml_lists(stage):
    listed = [p for p in DVC_YAML["stages"][stage]["params"] if isinstance(p, str)]
    groups = provenance.STAGE_PARAMS[stage]
    if groups == ("",):
        assert {"params.yaml": None} in DVC_YAML["stages"][stage]["params"]
        return
    covered = {key.split(".")[0] for key in listed}
    assert covered == set(groups)
    recorded = provenance.stage_params(stage, Params())
    for key in listed:  # every listed key (or group) is recorded
        assert any(k == key or k.startswith(f"{key}.") for k in recorded), key


@pytest.mark.parametrize("stage", provenance.UPSTREAM)
def test_every_stage_writes_its_record_and_package_reads_them(stage):
    record = f"metrics/provenance/{stage}.json"
    spec = DVC_YAML["stages"][stage]
    assert f"--provenance {record}" in " ".join(spec["cmd"].split())
    assert {record: {"cache": False}} in spec["outs"]
    assert record in DVC_YAML["stages"]["package"]["deps"]
