# syntax=docker/dockerfile:1.7
# CPU demo engine: Custos' own OpenAI-compatible engine (torch + transformers, CPU wheels) with a tiny
# random-weight model baked in, so the whole stack runs on a laptop or in CI without a GPU or a model hub.
#   docker build -f deploy/docker/cpu-engine.Dockerfile -t custos/cpu-engine:0.1.0 .
ARG PYTHON_IMAGE=python:3.12.7-slim-bookworm
ARG TORCH_VERSION=2.5.1
ARG TRANSFORMERS_VERSION=4.46.3

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION
ARG TRANSFORMERS_VERSION
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# CPU-only torch wheels are a fraction of the CUDA build's size.
RUN python -m venv /opt/custos \
    && /opt/custos/bin/pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"
COPY deploy/docker/sidecar-requirements.txt /tmp/requirements.txt
RUN /opt/custos/bin/pip install --no-cache-dir -r /tmp/requirements.txt \
        "transformers==${TRANSFORMERS_VERSION}" "tokenizers>=0.20,<0.21" "safetensors==0.4.5"
COPY pyproject.toml README.md ./
COPY custos ./custos
COPY gpu ./gpu
COPY sidecar ./sidecar
COPY inference ./inference
COPY alerting ./alerting
RUN /opt/custos/bin/pip install --no-cache-dir --no-deps . \
    && /opt/custos/bin/custos inference make-tiny-model /models/custos-tiny

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="custos-cpu-engine" \
      org.opencontainers.image.description="Custos CPU inference engine with a tiny demo model"
RUN groupadd --system --gid 10001 custos \
    && useradd --system --uid 10001 --gid custos --home-dir /var/lib/custos --shell /usr/sbin/nologin custos
COPY --from=build /opt/custos /opt/custos
COPY --from=build /models /models
ENV PATH=/opt/custos/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v1/models', timeout=2)"]
ENTRYPOINT ["custos", "inference", "serve"]
CMD ["--engine", "transformers", "--model", "/models/custos-tiny", "--served-model-name", "custos-tiny", \
     "--host", "0.0.0.0", "--port", "8000"]
