# syntax=docker/dockerfile:1.7
# The Custos sidecar: slim, non-root, no torch. Build from the repository root:
#   docker build -f deploy/docker/sidecar.Dockerfile -t custos/sidecar:0.1.0 .
ARG PYTHON_IMAGE=python:3.12.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/custos
# Dependencies first (exact pins) so source edits do not invalidate this layer.
COPY deploy/docker/sidecar-requirements.txt /tmp/requirements.txt
RUN /opt/custos/bin/pip install --no-cache-dir -r /tmp/requirements.txt
COPY pyproject.toml README.md ./
COPY custos ./custos
COPY gpu ./gpu
COPY sidecar ./sidecar
COPY inference ./inference
COPY alerting ./alerting
# --no-deps: everything is pinned above; the `inference` extra (torch, transformers) is never installed.
RUN /opt/custos/bin/pip install --no-cache-dir --no-deps . \
    && /opt/custos/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="custos-sidecar" \
      org.opencontainers.image.description="Compliance and observability sidecar for self-hosted LLMs" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 custos \
    && useradd --system --uid 10001 --gid custos --home-dir /var/lib/custos --shell /usr/sbin/nologin custos \
    && mkdir -p /var/lib/custos /etc/custos \
    && chown custos:custos /var/lib/custos
COPY --from=build /opt/custos /opt/custos
COPY policies /etc/custos/policies
ENV PATH=/opt/custos/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CUSTOS_STATE_DIR=/var/lib/custos
WORKDIR /var/lib/custos
USER 10001:10001
EXPOSE 8080
# Liveness only: /health never touches the upstream (readiness is /ready, used by orchestrators).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2)"]
ENTRYPOINT ["custos"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
