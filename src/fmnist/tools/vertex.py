"""`fmnist vertex-job`: the Vertex AI CustomJob spec that runs the `train` stage in the cloud.

It renders the YAML that `gcloud ai custom-jobs create --config` takes (a `CustomJobSpec`):
one worker pool per role, each with its machine, accelerators, replica count and the training
image (see `Dockerfile`), the service account the job runs as, and the `gs://` directory for
its outputs. Machine sizes come from a profile in `vertex.yaml`, and flags override them; what
is trained stays in `params.yaml`, baked into the image, so a job changes no DVC stage.

Every replica runs the same script: pull the prepared data from the DVC remote (GCS), then the
chief runs `dvc repro` of the `train` stage, pushes the model to the remote and copies
`dvc.lock`, `params.yaml` and `metrics/` to the job's output directory (`$AIP_MODEL_DIR`,
paths kept); the other workers run the stage's
own command from `dvc.yaml` in step with it (`TF_CONFIG`, set by Vertex AI, makes them one
`MultiWorkerMirroredStrategy`; see `fmnist.training.distribute`). Data, model and lock all go
through DVC, so the lineage of a cloud-trained model is the same as that of a local one.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fmnist import atomic, dvcfiles
from fmnist.errors import PipelineError, report_errors

# GPUs Vertex AI custom training offers (AcceleratorType in the Vertex AI REST reference).
ACCELERATOR_TYPES = (
    "NVIDIA_TESLA_T4",
    "NVIDIA_TESLA_P4",
    "NVIDIA_TESLA_P100",
    "NVIDIA_TESLA_V100",
    "NVIDIA_TESLA_A100",
    "NVIDIA_A100_80GB",
    "NVIDIA_L4",
    "NVIDIA_H100_80GB",
    "NVIDIA_H100_MEGA_80GB",
    "NVIDIA_H200_141GB",
)
# GPUs per machine that Compute Engine machine types come with.
ACCELERATOR_COUNTS = (1, 2, 4, 8, 16)
_SERVICE_ACCOUNT = re.compile(
    r"^[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z0-9.-]+\.iam\.gserviceaccount\.com$"
)
_IMAGE = re.compile(r"^[a-z0-9.-]+(:\d+)?/[a-z0-9._/-]+(:[\w.-]+|@sha256:[0-9a-f]{64})$")


@dataclass(frozen=True)
class JobConfig:
    """Everything the job spec needs; the fields a profile in `vertex.yaml` may set are sizes."""

    image: str = ""  # the training image, e.g. us-docker.pkg.dev/PROJECT/REPO/fmnist-train:TAG
    service_account: str = ""  # NAME@PROJECT.iam.gserviceaccount.com, the job's own identity
    output_dir: str = ""  # gs://BUCKET/PATH: the job's baseOutputDirectory
    machine_type: str = "n1-standard-8"
    accelerator_type: str = ""  # "" for CPU only
    accelerator_count: int = 0
    workers: int = 1  # machines; more than one trains with MultiWorkerMirroredStrategy
    boot_disk_gb: int = 100
    remote: str = ""  # the DVC remote to pull from and push to ("" = the default remote)


def check(job: JobConfig) -> None:
    """Raise `PipelineError` naming every field that Vertex AI would reject (or that is unset)."""
    problems = []
    if not _IMAGE.match(job.image):
        problems.append(
            f"--image {job.image!r}: expected a registry path with a tag or digest, "
            "e.g. us-docker.pkg.dev/PROJECT/REPO/fmnist-train:v1"
        )
    if not _SERVICE_ACCOUNT.match(job.service_account):
        problems.append(
            f"--service-account {job.service_account!r}: expected "
            "NAME@PROJECT.iam.gserviceaccount.com (a dedicated account, not the default one)"
        )
    if not re.match(r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/.*)?$", job.output_dir):
        problems.append(f"--output-dir {job.output_dir!r}: expected gs://BUCKET[/PATH]")
    if job.accelerator_type and job.accelerator_type not in ACCELERATOR_TYPES:
        problems.append(
            f"--accelerator-type {job.accelerator_type!r}: one of {', '.join(ACCELERATOR_TYPES)}"
        )
    if job.accelerator_type and job.accelerator_count not in ACCELERATOR_COUNTS:
        problems.append(f"--accelerator-count {job.accelerator_count}: one of 1, 2, 4, 8, 16")
    if not job.accelerator_type and job.accelerator_count:
        problems.append("--accelerator-count without --accelerator-type")
    if job.workers < 1:
        problems.append(f"--workers {job.workers}: at least 1")
    if job.boot_disk_gb < 100:
        problems.append(f"--boot-disk-gb {job.boot_disk_gb}: Vertex AI needs at least 100")
    if problems:
        raise PipelineError("the job is not valid:\n" + "\n".join(f"  - {p}" for p in problems))


def container_script(train_cmd: str, remote: str = "") -> str:
    """The shell script every replica runs, from the image's working copy of the repository."""
    r = f" -r {shlex.quote(remote)}" if remote else ""
    return f"""\
set -eu
dvc pull{r} prepare
if python3 -m fmnist.training.distribute; then
  dvc repro --force --single-item train
  dvc push{r} train
  python3 -c 'import sys, gcsfs; fs, out = gcsfs.GCSFileSystem(), sys.argv[1].rstrip("/"); \
[fs.put(p, f"{{out}}/{{p}}", recursive=True) for p in sys.argv[2:]]' "$AIP_MODEL_DIR" \
dvc.lock params.yaml metrics
else
  {train_cmd}
fi
"""


def render(job: JobConfig, train_cmd: str) -> dict[str, Any]:
    """The CustomJobSpec: the chief's pool, then (with several workers) the other workers'."""
    check(job)
    machine: dict[str, Any] = {"machineType": job.machine_type}
    if job.accelerator_type:
        machine |= {
            "acceleratorType": job.accelerator_type,
            "acceleratorCount": job.accelerator_count,
        }
    pool = {
        "machineSpec": machine,
        "replicaCount": 1,
        "diskSpec": {"bootDiskType": "pd-ssd", "bootDiskSizeGb": job.boot_disk_gb},
        "containerSpec": {
            "imageUri": job.image,
            "command": ["sh", "-c"],
            "args": [container_script(train_cmd, job.remote)],
        },
    }
    # Vertex AI names pool 0 `chief` and pool 1 `worker` in each replica's TF_CONFIG.
    pools = [pool] + ([{**pool, "replicaCount": job.workers - 1}] if job.workers > 1 else [])
    return {
        "workerPoolSpecs": pools,
        "serviceAccount": job.service_account,
        "baseOutputDirectory": {"outputUriPrefix": job.output_dir},
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the script) as readable `|` blocks; no `&id001` anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


_Dumper.add_representer(
    str,
    lambda dumper, s: dumper.represent_scalar(
        "tag:yaml.org,2002:str", s, style="|" if "\n" in s else None
    ),
)


def to_yaml(spec: dict[str, Any]) -> str:
    """`spec` as the YAML file `gcloud ai custom-jobs create --config` reads."""
    header = (
        "# gcloud ai custom-jobs create --region=REGION --display-name=fmnist-train "
        "--config=THIS_FILE\n"
    )
    return header + yaml.dump(spec, Dumper=_Dumper, sort_keys=False, width=100)


def load_profile(path: Path, name: str) -> dict[str, Any]:
    """The sizes profile `name` in `path` sets, checked against `JobConfig`'s fields."""
    try:
        profiles = yaml.safe_load(path.read_text())["profiles"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise PipelineError(f"{path}: cannot read its `profiles` ({exc})") from None
    if name not in profiles:
        raise PipelineError(f"{path}: no profile {name!r}; there are {', '.join(profiles)}")
    types = {f.name: type(f.default) for f in dataclasses.fields(JobConfig)}
    for key, value in profiles[name].items():
        if key not in types:
            raise PipelineError(f"{path}: {name}.{key}: unknown; valid keys: {', '.join(types)}")
        if type(value) is not types[key]:
            raise PipelineError(f"{path}: {name}.{key}: expected {types[key].__name__}")
    return profiles[name]


def stage_command(dvc_yaml: Path, stage: str = "train") -> str:
    """The command of `stage` in `dvc.yaml`: what the non-chief workers run."""
    commands = dvcfiles.stage_commands(dvcfiles.read_spec(dvc_yaml))
    if stage not in commands:
        raise PipelineError(f"{dvc_yaml}: no `{stage}` stage command")
    return commands[stage]


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fmnist vertex-job", description=__doc__.splitlines()[0].split(": ", 1)[1]
    )
    parser.add_argument("--profile", help="a machine profile in --profiles (flags override it)")
    parser.add_argument("--profiles", type=Path, default=Path("vertex.yaml"))
    parser.add_argument("--dvc-yaml", type=Path, default=Path("dvc.yaml"))
    parser.add_argument("--out", type=Path, help="write the spec here (default: stdout)")
    for f in dataclasses.fields(JobConfig):
        flag = "--" + f.name.replace("_", "-")
        parser.add_argument(flag, type=type(f.default), dest=f.name, default=None)
    args = parser.parse_args(argv)

    settings = load_profile(args.profiles, args.profile) if args.profile else {}
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(JobConfig)}
    settings |= {k: v for k, v in flags.items() if v is not None}
    spec = render(JobConfig(**settings), stage_command(args.dvc_yaml))
    text = to_yaml(spec)
    if args.out:
        atomic.write_text(args.out, text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
