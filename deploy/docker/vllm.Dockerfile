# syntax=docker/dockerfile:1.7
# GPU inference: vLLM's OpenAI-compatible server on a CUDA base. In the Kubernetes pod it listens on
# 127.0.0.1 only; the sidecar is the one way in.
#   docker build -f deploy/docker/vllm.Dockerfile -t custos/vllm:0.10.1.1-cu128 .
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04
ARG VLLM_VERSION=0.10.1.1

FROM ${CUDA_IMAGE} AS build
ARG VLLM_VERSION
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Ubuntu 24.04's Python 3.12; its point releases come with the base image tag pinned above.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3.12 -m venv /opt/vllm \
    && /opt/vllm/bin/pip install --no-cache-dir "vllm==${VLLM_VERSION}"

FROM ${CUDA_IMAGE}
ARG VLLM_VERSION
LABEL org.opencontainers.image.title="custos-vllm" \
      org.opencontainers.image.description="vLLM OpenAI-compatible server for the Custos sidecar pattern" \
      org.opencontainers.image.version="${VLLM_VERSION}"
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 vllm \
    && useradd --system --uid 10001 --gid vllm --create-home --home-dir /home/vllm vllm
COPY --from=build /opt/vllm /opt/vllm
ENV PATH=/opt/vllm/bin:$PATH \
    HF_HOME=/models/.cache \
    VLLM_NO_USAGE_STATS=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8000
# Model loading can take minutes: a long start period before failures count.
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=3 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["vllm", "serve"]
CMD ["--help"]
