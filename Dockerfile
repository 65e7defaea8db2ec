# syntax=docker/dockerfile:1
# hosted-engine-operator: build a wheel, install it into a clean venv, run as non-root.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade pip \
 && /opt/venv/bin/pip wheel --wheel-dir /wheels . \
 && /opt/venv/bin/pip install --no-index --find-links /wheels hosted-engine-operator

FROM python:3.11-slim
LABEL org.opencontainers.image.title="hosted-engine-operator" \
      org.opencontainers.image.description="oVirt's self-hosted engine and CloudStack's host operations on KubeVirt" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 65532 operator \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin operator
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric, so that Kubernetes can check runAsNonRoot without reading /etc/passwd.
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080
CMD ["hosted-engine", "run", "--all-namespaces"]
