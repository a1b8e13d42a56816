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
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import pydantic
import yaml
from pydantic import Field
from pydantic_core import PydanticCustomError

from fmnist import dvcfiles
from fmnist.errors import PipelineError, report_errors
from fmnist.tools import write_or_print

# GPUs Vertex AI custom training offers (AcceleratorType in the Vertex AI REST reference).
AcceleratorType = Literal[
    "",  # CPU only
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
]
ACCELERATOR_TYPES = get_args(AcceleratorType)[1:]
# GPUs per machine that Compute Engine machine types come with.
ACCELERATOR_COUNTS = (1, 2, 4, 8, 16)
_SERVICE_ACCOUNT = r"^[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z0-9.-]+\.iam\.gserviceaccount\.com$"
_IMAGE = r"^[a-z0-9.-]+(:\d+)?/[a-z0-9._/-]+(:[\w.-]+|@sha256:[0-9a-f]{64})$"
_GCS_DIR = r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/.*)?$"

# What each field must be, in the words of an error message.
_EXPECTED = {
    "image": "expected a registry path with a tag or digest, "
    "e.g. us-docker.pkg.dev/PROJECT/REPO/fmnist-train:v1",
    "service_account": "expected NAME@PROJECT.iam.gserviceaccount.com "
    "(a dedicated account, not the default one)",
    "output_dir": "expected gs://BUCKET[/PATH]",
    "accelerator_type": f"one of {', '.join(ACCELERATOR_TYPES)}",
    "workers": "at least 1",
    "boot_disk_gb": "Vertex AI needs at least 100",
}
_TYPE_ERRORS = {"string_type": "expected a string", "int_type": "expected an integer"}


class JobConfig(pydantic.BaseModel):
    """Everything the job spec needs; the fields a profile in `vertex.yaml` may set are sizes.

    Checked when made: a field Vertex AI would reject, or one left unset, is an error (made
    with `job_config`, a `PipelineError` naming the flag or profile, every problem at once)."""

    model_config = pydantic.ConfigDict(
        frozen=True,
        extra="forbid",
        strict=True,
        validate_default=True,  # an unset image, account or output dir is an error too
        use_attribute_docstrings=True,
    )

    image: Annotated[str, Field(pattern=_IMAGE)] = ""
    """The training image, e.g. us-docker.pkg.dev/PROJECT/REPO/fmnist-train:TAG."""
    service_account: Annotated[str, Field(pattern=_SERVICE_ACCOUNT)] = ""
    """NAME@PROJECT.iam.gserviceaccount.com, the job's own identity."""
    output_dir: Annotated[str, Field(pattern=_GCS_DIR)] = ""
    """gs://BUCKET/PATH: the job's baseOutputDirectory."""
    machine_type: str = "n1-standard-8"
    """The Compute Engine machine type of every replica."""
    accelerator_type: AcceleratorType = ""
    """The GPU of every replica ("" for CPU only)."""
    accelerator_count: int = 0
    """GPUs per replica: 1, 2, 4, 8 or 16 with an accelerator type, else 0."""
    workers: Annotated[int, Field(ge=1)] = 1
    """Machines; more than one trains with MultiWorkerMirroredStrategy."""
    boot_disk_gb: Annotated[int, Field(ge=100)] = 100
    """Boot disk size of every replica, in GB."""
    remote: str = ""
    """The DVC remote to pull from and push to ("" = the default remote)."""

    @pydantic.model_validator(mode="after")
    def _accelerators(self) -> JobConfig:
        if self.accelerator_type and self.accelerator_count not in ACCELERATOR_COUNTS:
            raise PydanticCustomError(
                "job_rule",
                "--accelerator-count {count}: one of 1, 2, 4, 8, 16",
                {"count": self.accelerator_count},
            )
        if not self.accelerator_type and self.accelerator_count:
            raise PydanticCustomError("job_rule", "--accelerator-count without --accelerator-type")
        return self


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _help(info: pydantic.fields.FieldInfo) -> str:
    default = f" (default: {info.default})" if info.default not in ("", None) else ""
    text = (info.description or "").rstrip(".")
    return f"{text}{default}; overrides the profile".replace("%", "%%")


def _invalid(exc: pydantic.ValidationError, origins: dict[str, str]) -> str:
    """The job's problems, each naming the flag (or the profile) that set the value."""
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        where = origins.get(field, _flag(field))
        if error["type"] == "job_rule":
            problems.append(error["msg"])
        elif error["type"] in ("extra_forbidden", "invalid_key"):
            valid = ", ".join(JobConfig.model_fields)
            problems.append(f"{where}: unknown key {field!r}; valid keys: {valid}")
        else:
            expected = _TYPE_ERRORS.get(error["type"]) or _EXPECTED.get(field, error["msg"])
            problems.append(f"{where} {error['input']!r}: {expected}")
    return "the job is not valid:\n" + "\n".join(f"  - {p}" for p in problems)


def job_config(settings: dict[str, Any], origins: dict[str, str] | None = None) -> JobConfig:
    """`settings` as a checked `JobConfig`; a problem with a value a profile set names the
    profile (`origins`: field -> where it was set), any other names its flag."""
    try:
        return JobConfig.model_validate(settings)
    except pydantic.ValidationError as exc:
        raise PipelineError(_invalid(exc, origins or {})) from None


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
    """The settings profile `name` in `path` sets (checked with the flags, by `job_config`)."""
    try:
        profiles = yaml.safe_load(path.read_text())["profiles"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise PipelineError(f"{path}: cannot read its `profiles` ({exc})") from None
    if not isinstance(profiles, dict):
        raise PipelineError(f"{path}: `profiles` is not a mapping of names to settings")
    if name not in profiles:
        raise PipelineError(f"{path}: no profile {name!r}; there are {', '.join(profiles)}")
    profile = profiles[name]
    if not isinstance(profile, dict):
        raise PipelineError(f"{path}: profile {name!r} is not a mapping of settings")
    return profile


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
    parser.add_argument(
        "--profiles",
        type=Path,
        default=Path("vertex.yaml"),
        help="the file of machine profiles (default: %(default)s)",
    )
    parser.add_argument(
        "--dvc-yaml",
        type=Path,
        default=Path("dvc.yaml"),
        help="where the workers' train command is read (default: %(default)s)",
    )
    parser.add_argument("--out", type=Path, help="write the spec here (default: stdout)")
    for name, info in JobConfig.model_fields.items():
        kind = int if info.annotation is int else str  # a Literal of strings: a string
        parser.add_argument(_flag(name), type=kind, dest=name, default=None, help=_help(info))
    args = parser.parse_args(argv)

    settings = load_profile(args.profiles, args.profile) if args.profile else {}
    origins = {str(key): f"{args.profiles}: profile {args.profile!r}, {key}" for key in settings}
    flags = {name: getattr(args, name) for name in JobConfig.model_fields}
    for key, value in flags.items():
        if value is not None:
            settings[key] = value
            origins.pop(key, None)
    spec = render(job_config(settings, origins), stage_command(args.dvc_yaml))
    text = to_yaml(spec)
    write_or_print(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
