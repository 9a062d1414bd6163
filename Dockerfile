# syntax=docker/dockerfile:1
# lucidgrant: the operator image. Build: docker build -t ghcr.io/lucidgrant/lucidgrant:0.1.0 .
# Both stages use the same pinned base; bump PYTHON_IMAGE (or pin a digest) in one place.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---- builder: the project's wheel and every dependency's wheel, into /wheels ------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# ---- final: the wheels installed, nothing else ------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="lucidgrant" \
      org.opencontainers.image.description="Kubernetes operator that keeps Lucid OAuth grants alive" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The wheels are bind-mounted from the builder, not copied: no layer keeps them, and the image
# gets no compiler, no build backend, no source tree. --no-index: only the builder's wheels.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/lucidgrant-*.whl
# A numeric uid/gid (no /etc/passwd entry needed) so that runAsNonRoot can verify it.
USER 65532:65532
# Probes, /metrics and the authorization web flow. No HEALTHCHECK: Kubernetes probes do that.
EXPOSE 8080
ENTRYPOINT ["lucidgrant"]
CMD ["run", "--all-namespaces"]
