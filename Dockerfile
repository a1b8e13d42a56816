# The training image for Vertex AI custom training: this repository, its locked environment,
# and nothing else. `fmnist vertex-job` renders the job that runs it (docs/scaling.md, "Vertex
# AI custom training"). Build it from the repository root after `dvc repro prepare && dvc push`,
# so that the dvc.lock inside names the prepared data the job pulls from the DVC remote:
#
#   docker build -t us-docker.pkg.dev/PROJECT/REPO/fmnist-train:$(git rev-parse --short HEAD) .
#
# EXTRAS=gpu (the default) installs TensorFlow with its CUDA libraries from PyPI, so a slim
# Python base serves GPUs too; `--build-arg EXTRAS=` gives a smaller CPU-only image.
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=1

ARG EXTRAS=gpu

# A fixed, unprivileged user: the job never runs as root.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin fmnist \
    && install -d -o fmnist -g fmnist /home/fmnist/app
WORKDIR /home/fmnist/app

# Dependencies before the pipeline files, so editing params.yaml does not reinstall TensorFlow.
# The versions are the lock's, hash-checked (the base image's Python is the lock's, 3.11;
# EXTRAS=gpu: the lock with the CUDA libraries); the stamp puts the lock's hash in every
# training record made in the image (docs/environment.md).
COPY pyproject.toml README.md ./
COPY requirements ./requirements
COPY src ./src
RUN lock="requirements/lock-py3.11${EXTRAS:+-$EXTRAS}.txt" \
    && pip install --require-hashes -r "$lock" \
    && pip install --no-deps --no-build-isolation . \
    && PYTHONPATH=src python -m fmnist.environment stamp "$lock" \
    && rm -rf build src/*.egg-info

# The pipeline as committed: stages, params, the lock naming the data, the DVC remote.
COPY --chown=fmnist:fmnist dvc.yaml dvc.lock params.yaml .dvcignore ./
COPY --chown=fmnist:fmnist .dvc/config .dvc/config

USER 10001
# No git in the image: DVC runs without an SCM; the job copies the new dvc.lock out.
RUN dvc config --local core.no_scm true
