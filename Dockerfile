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

# Not root. /state is the working directory (an SQLite state file, if one is used, or a
# mounted volume for reports); compose's workers keep their checkpoints in Kafka instead.
RUN useradd --system --uid 10001 --home-dir /state driftstream \
    && mkdir -p /state && chown driftstream /state
USER driftstream
WORKDIR /state

EXPOSE 9100
ENTRYPOINT ["driftstream"]
CMD ["--help"]
