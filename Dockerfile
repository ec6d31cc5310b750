# driftstream: one image for every command (worker, producer, topic setup, tools).
#   docker build -t driftstream . && docker run --rm driftstream --help
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what `pip install .` needs (see .dockerignore): a code change rebuilds from here on.
COPY pyproject.toml README.md ./
COPY driftstream ./driftstream
COPY stream ./stream
COPY consumers ./consumers
COPY producers ./producers
COPY state ./state
COPY transport ./transport
RUN pip install . && rm -rf /src

# Not root; /state (the shared state volume) belongs to this user, and a fresh named volume
# takes the owner of the directory it is mounted on.
RUN useradd --system --uid 10001 --home-dir /state driftstream \
    && mkdir -p /state && chown driftstream /state
USER driftstream
WORKDIR /state

EXPOSE 9100
ENTRYPOINT ["driftstream"]
CMD ["--help"]
