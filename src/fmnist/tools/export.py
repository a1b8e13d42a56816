"""A registered version where servers load it: TensorFlow Serving's layout, Vertex AI's model
upload, and request bodies for both.

`fmnist export` writes a version into TensorFlow Serving's model base path:

    BASE/fashion-mnist-cnn/<N>/saved_model.pb, variables/, ...    (the whole package)

where N, the integer TensorFlow Serving orders versions by (it serves the highest), is
MAJOR × 1,000,000 + MINOR × 1,000 + PATCH: v1.2.3 is 1002003, so a later semantic version is
always a higher number. MINOR and PATCH must stay below 1,000. The version directory appears
whole, in one rename: the server, which polls the base path, never sees half of it.

`fmnist vertex-model` renders the Vertex AI model upload: the prebuilt TensorFlow prediction
container, and the package directory (copied to Cloud Storage) as the artifact URI. Vertex AI's
prebuilt container answers `projects.locations.endpoints.predict` with the SavedModel's
`serving_default` signature.

`fmnist request` renders the JSON body of a predict request from image files, in TensorFlow
Serving's row (`instances`) or columnar (`inputs`) format: pixels for the pixel signatures,
`{"b64": ...}` encoded files for `serving_bytes`.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fmnist import atomic
from fmnist.errors import ImageError, PipelineError, report_errors
from fmnist.serving import layout
from fmnist.tools import image_files, registry, write_or_print

# Vertex AI's prebuilt TensorFlow prediction image (CPU). The SavedModel is written by this
# project's TensorFlow: serve it with a container of that version or the nearest one offered.
VERTEX_IMAGE = "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"
# Each of MINOR and PATCH gets three decimal digits of the integer version.
_PART = 1000
# TensorFlow Serving's signatures, as `fmnist.serving.signatures` names them.
PIXEL_SIGNATURES = ("serving_default", "serving_averaged")
BYTES_SIGNATURE = "serving_bytes"


def integer_version(version: str) -> int:
    """The integer TensorFlow Serving version of a semantic version: v1.2.3 -> 1002003."""
    major, minor, patch = registry.parse_version(version)
    if minor >= _PART or patch >= _PART:
        raise PipelineError(
            f"{version}: minor and patch must be below {_PART} to map to an integer version "
            f"(MAJOR × {_PART**2:,} + MINOR × {_PART:,} + PATCH)"
        )
    return major * _PART**2 + minor * _PART + patch


def check_package(package: Path) -> None:
    """Raise `PipelineError` unless `package` is a loadable model package with a SavedModel."""
    if not (package / layout.SAVED_MODEL_FILE).is_file():
        raise PipelineError(f"{package}: not a model package (no {layout.SAVED_MODEL_FILE})")
    layout.load_package(package)


def export_for_serving(package: Path, base: Path, version: str) -> Path:
    """Copy `package` into TensorFlow Serving's layout under `base` as `version`; return the
    version directory. An existing version directory is never overwritten."""
    target = base / registry.ARTIFACT / str(integer_version(version))
    if target.exists():
        raise PipelineError(
            f"{target} exists already: a server may be loading it. Remove it first to replace it"
        )
    check_package(package)
    # atomic_path stages the copy in a hidden sibling: not a number, so the server skips it.
    with atomic.atomic_path(target) as tmp:
        shutil.copytree(package, tmp)
    return target


def serving_command(base: Path) -> str:
    """The command that serves the versions under `base` with TensorFlow Serving's image."""
    return (
        f"docker run --rm -p 8501:8501 -v {shlex.quote(str(base.resolve()))}:/models "
        f"-e MODEL_NAME={registry.ARTIFACT} tensorflow/serving"
    )


def vertex_label(value: str) -> str:
    """`value` as a Vertex AI label value or version alias: lower case, digits, `-` and `_`."""
    return re.sub(r"[^a-z0-9_-]", "-", value.lower())[:63]


def vertex_upload(version: str, artifact_uri: str, image: str, commit: str | None) -> dict:
    """The body of Vertex AI's `models.upload` for `version` stored at `artifact_uri`."""
    if not re.fullmatch(r"gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/[^\s]*)?", artifact_uri):
        raise PipelineError(
            f"--artifact-uri {artifact_uri!r}: expected gs://BUCKET/PATH, the directory the "
            "package was copied to"
        )
    registry.parse_version(version)
    labels = {"version": vertex_label(version)}
    if commit:
        labels["commit"] = commit[:12]
    return {
        "model": {
            "displayName": registry.ARTIFACT,
            "description": f"{registry.ARTIFACT} {version}: Fashion-MNIST classifier "
            "(serving_default takes uint8 pixels (batch, 28, 28, 1))",
            "versionAliases": [vertex_label(version)],
            "labels": labels,
            "artifactUri": artifact_uri.rstrip("/"),
            "containerSpec": {"imageUri": image},
        }
    }


def upload_command(upload: dict, region: str) -> str:
    """The `gcloud ai models upload` command equivalent to `upload`."""
    model = upload["model"]
    labels = ",".join(f"{k}={v}" for k, v in model["labels"].items())
    return " \\\n    ".join(
        [
            "gcloud ai models upload",
            f"--region={region}",
            f"--display-name={model['displayName']}",
            f"--artifact-uri={model['artifactUri']}",
            f"--container-image-uri={model['containerSpec']['imageUri']}",
            f"--version-aliases={','.join(model['versionAliases'])}",
            f"--labels={labels}",
        ]
    )


def render_vertex(upload: dict, region: str, package_source: str) -> str:
    """The YAML `fmnist vertex-model` prints: the steps as comments, then the upload body."""
    model = upload["model"]
    steps = [
        "# 1. Copy the package to Cloud Storage:",
        f"#    {package_source}",
        f"#    gcloud storage cp -r package/* {model['artifactUri']}/",
        "# 2. Upload it (this command, or POST the body below to",
        f"#    https://{region}-aiplatform.googleapis.com/v1/projects/PROJECT/locations/"
        f"{region}/models:upload):",
        *(f"#    {line}" for line in upload_command(upload, region).splitlines()),
        "# 3. Deploy it to an endpoint and send requests (`fmnist request`):",
        f"#    gcloud ai endpoints predict ENDPOINT --region={region} --json-request=request.json",
    ]
    body = yaml.safe_dump(upload, sort_keys=False, width=100)
    return "\n".join(steps) + "\n" + body


def pixel_request(images: np.ndarray, signature: str, columnar: bool) -> dict:
    """A predict request for uint8 images (N, 28, 28): row or columnar format."""
    pixels = images[..., None].tolist()  # (N, 28, 28, 1)
    body: dict[str, Any] = {"signature_name": signature} if signature != "serving_default" else {}
    if columnar:
        return body | {"inputs": {"pixels": pixels}}
    return body | {"instances": pixels}


def bytes_request(files: list[bytes], columnar: bool) -> dict:
    """A `serving_bytes` request for encoded image files: row or columnar format."""
    encoded = [{"b64": base64.b64encode(data).decode("ascii")} for data in files]
    body = {"signature_name": BYTES_SIGNATURE}
    if columnar:
        return body | {"inputs": {"image_bytes": encoded}}
    return body | {"instances": [{"image_bytes": value} for value in encoded]}


def _fetch_or_local(args: argparse.Namespace, tmp: Path) -> Path:
    """The package to export: `--package`, or the registered version fetched and verified."""
    if args.package:
        return args.package
    out = tmp / "package"
    registry.get(args.repo, out, registry.resolve(args.repo, version=args.version))
    return out


@report_errors
def main(argv: list[str] | None = None) -> int:
    """`fmnist export`: a registered version into TensorFlow Serving's layout."""
    parser = argparse.ArgumentParser(
        prog="fmnist export",
        description="Write a registered version into TensorFlow Serving's layout: "
        f"BASE/{registry.ARTIFACT}/<MAJOR×1000000 + MINOR×1000 + PATCH>/",
    )
    parser.add_argument("--version", required=True, help="the version, e.g. v1.2.0")
    parser.add_argument("--base", type=Path, required=True, help="TF Serving's model base path")
    parser.add_argument("--repo", default=".", help="the registry's git repo (path or URL)")
    parser.add_argument(
        "--package", type=Path, help="a local copy of that version's package (not fetched)"
    )
    args = parser.parse_args(argv)
    integer_version(args.version)  # a bad version fails before any download
    with tempfile.TemporaryDirectory(prefix="fmnist-export-") as tmp:
        target = export_for_serving(_fetch_or_local(args, Path(tmp)), args.base, args.version)
    print(f"{registry.ARTIFACT} {args.version} -> {target}")
    print(f"serve it: {serving_command(args.base)}")
    print(
        f"predict:  curl -s -d @request.json "
        f"http://localhost:8501/v1/models/{registry.ARTIFACT}:predict"
    )
    return 0


@report_errors
def vertex_main(argv: list[str] | None = None) -> int:
    """`fmnist vertex-model`: the Vertex AI model upload of a registered version."""
    parser = argparse.ArgumentParser(
        prog="fmnist vertex-model",
        description="Render the Vertex AI model upload of a registered version: the prebuilt "
        "TensorFlow container, the package directory as artifact URI",
    )
    parser.add_argument("--version", required=True, help="the version, e.g. v1.2.0")
    parser.add_argument(
        "--artifact-uri", required=True, help="gs://BUCKET/PATH the package is copied to"
    )
    parser.add_argument(
        "--region", default="us-central1", help="the Vertex AI region (default: us-central1)"
    )
    parser.add_argument("--image", default=VERTEX_IMAGE, help="the prediction container image")
    parser.add_argument("--commit", help="the version's git commit, recorded as a label")
    parser.add_argument("--out", type=Path, help="write the YAML here (default: stdout)")
    args = parser.parse_args(argv)
    upload = vertex_upload(args.version, args.artifact_uri, args.image, args.commit)
    source = f"dvc artifacts get . {registry.ARTIFACT} --rev {args.version} -o package"
    text = render_vertex(upload, args.region, source)
    write_or_print(text, args.out)
    return 0


@report_errors
def request_main(argv: list[str] | None = None) -> int:
    """`fmnist request`: the JSON body of a predict request from files."""
    parser = argparse.ArgumentParser(
        prog="fmnist request",
        description="Render a TensorFlow Serving / Vertex AI predict request body from files",
    )
    parser.add_argument(
        "files", nargs="+", type=Path, metavar="FILE", help="the images (or .npy/IDX/CSV) to send"
    )
    parser.add_argument(
        "--signature",
        default="serving_default",
        choices=[*PIXEL_SIGNATURES, BYTES_SIGNATURE],
        help="pixel signatures take 28×28 grayscale images (or .npy/IDX/CSV); serving_bytes "
        'takes any image file, sent as {"b64": ...}',
    )
    parser.add_argument(
        "--columnar", action="store_true", help="the columnar format (`inputs`), not rows"
    )
    parser.add_argument("--out", type=Path, help="write the JSON here (default: stdout)")
    args = parser.parse_args(argv)
    if args.signature == BYTES_SIGNATURE:
        files = []
        for path in args.files:
            if not path.is_file():
                raise PipelineError(f"{path}: no such file")
            files.append(path.read_bytes())
        body = bytes_request(files, args.columnar)
    else:
        try:
            images = np.concatenate([image_files.read_inputs(path)[1] for path in args.files])
        except ImageError as exc:
            raise PipelineError(f"{exc} (or send it to serving_bytes)") from None
        body = pixel_request(images, args.signature, args.columnar)
    text = json.dumps(body) + "\n"
    write_or_print(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
