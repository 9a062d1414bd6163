# syntax=docker/dockerfile:1
# lucidgrant: the operator image. Build: docker build -t ghcr.io/lucidgrant/lucidgrant:0.1.0 .
# checkov:skip=CKV_DOCKER_2:No HEALTHCHECK: Kubernetes ignores it; the Deployment's liveness and readiness probes (/healthz, /readyz) do that job.

# One base for both stages, pinned by digest (the multi-platform index of the Docker official
# image python:3.11.16-slim-bookworm, as recorded in docker-library/repo-info). A tag can be
# moved; a digest cannot. To update: take the new index digest from the same record, change it
# here, rebuild, run the tests.
FROM python:3.11.16-slim-bookworm@sha256:c425d915a89a6dcd3183b1797ad9bd8878caff5a417f6371c8df93c8ea8b727f AS python

# ---- builder: the project and its dependencies, installed under /install ---------------------
FROM python AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip install --no-cache-dir --prefix=/install .

# ---- final: Python and the installed packages; no pip, no shell ------------------------------
FROM python
LABEL org.opencontainers.image.title="lucidgrant" \
      org.opencontainers.image.description="Kubernetes operator that keeps Lucid OAuth grants alive" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The base's installers go (pip, ensurepip, setuptools, wheel), and with them the shells: a
# process that breaks into the container finds no package manager and no sh to script with.
# The shell removing itself is the last thing this image ever runs; `kubectl debug` brings an
# ephemeral container with tools when a person needs one.
RUN rm -rf /usr/local/bin/pip* /usr/local/bin/wheel /usr/local/lib/python3.11/ensurepip \
        /usr/local/lib/python3.11/site-packages/pip \
        /usr/local/lib/python3.11/site-packages/pip-* \
        /usr/local/lib/python3.11/site-packages/setuptools \
        /usr/local/lib/python3.11/site-packages/setuptools-* \
        /usr/local/lib/python3.11/site-packages/pkg_resources \
        /usr/local/lib/python3.11/site-packages/_distutils_hack \
        /usr/local/lib/python3.11/site-packages/distutils-precedence.pth \
        /usr/local/lib/python3.11/site-packages/wheel \
        /usr/local/lib/python3.11/site-packages/wheel-* \
    && rm -f /bin/bash /bin/dash /bin/rbash /bin/sh /usr/bin/bash /usr/bin/dash /usr/bin/rbash /usr/bin/sh
# Only what the builder installed: no compiler, no build backend, no source tree, no wheels.
COPY --from=builder /install /usr/local
# A numeric uid/gid (no /etc/passwd entry needed) so that runAsNonRoot can verify it.
USER 65532:65532
# 8080: probes and /metrics; 8081: the authorization web flow.
EXPOSE 8080 8081
ENTRYPOINT ["lucidgrant"]
CMD ["run", "--all-namespaces"]
