# eventproc: the console script `eventproc` in a slim Python 3.11 image.
#
#   docker build -t eventproc .
#   docker run --rm -p 8080:8080 -e DATABASE_URL=postgresql://... -e API_TOKENS=... eventproc
#
# The project is installed from the build context (pyproject.toml, README.md,
# src/; .dockerignore lets nothing else in), never fetched; only its
# dependencies come from PyPI. deploy/cloudrun.md and deploy/compose.yaml use it.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/eventproc
WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/eventproc/bin/pip install . \
 && /opt/eventproc/bin/eventproc --version

FROM python:3.11-slim-bookworm
# A fixed numeric uid, so that runAsNonRoot-style checks can see it is not root.
RUN groupadd --system --gid 10001 eventproc \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/eventproc --shell /usr/sbin/nologin eventproc \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/eventproc
COPY --from=build /opt/eventproc /opt/eventproc

# HOST=0.0.0.0: a container is reached from outside it. eventproc refuses to
# bind beyond loopback without a token (API_TOKEN, API_TOKENS or
# API_TOKENS_FILE) or ALLOW_UNAUTHENTICATED=true: give one at `docker run`.
# SHUTDOWN_GRACE_SECONDS=6: Cloud Run sends SIGKILL 10 s after SIGTERM. After
# the grace the process still releases the unfinished leases, writes the last
# results and exits; that took 0.7 s on an idle 2-core machine and up to 3.5 s
# on a loaded one (most of it Python's final garbage collection), so 4 s are kept.
# No DATABASE_URL: the SQLite default is /var/lib/eventproc/eventproc.db (the
# working directory, owned by the eventproc user), for one container with a
# volume there; PostgreSQL (DATABASE_URL) for anything more, Cloud Run included.
ENV PATH=/opt/eventproc/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=8080 \
    LOG_FORMAT=json \
    SHUTDOWN_GRACE_SECONDS=6

WORKDIR /var/lib/eventproc
USER 10001:10001
EXPOSE 8080

# No HEALTHCHECK: Cloud Run and Kubernetes ignore it and probe /health
# themselves; deploy/compose.yaml declares its own. A Docker one would start
# a Python process inside the container every interval for nothing.
HEALTHCHECK NONE

ENTRYPOINT ["eventproc"]
CMD ["run"]
