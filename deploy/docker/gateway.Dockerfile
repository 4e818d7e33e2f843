# The gateway image: the web tier (gunicorn), the MQTT gateway (python -m web.mqtt) and
# Flower (python -m scripts.flower). No compiler, no llama.cpp, no torch: it installs
# requirements-gateway.txt from wheels only (tests/test_images.py checks that list).
#   docker build -f deploy/docker/gateway.Dockerfile -t mia-gateway .
# The build context is the repository root; .dockerignore keeps local environments,
# tokens, keys and databases out of it. No secret is baked in: tokens come from the
# environment at run time (docker-compose.yml reads them from .env).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# The same user and uid in every MIA image; /var/lib/mia (MIA_DATA_DIR) is its own, so a
# volume mounted there starts out writable by it.
ARG MIA_UID=10001
RUN groupadd --system --gid ${MIA_UID} mia \
    && useradd --system --uid ${MIA_UID} --gid mia --create-home --home-dir /home/mia mia \
    && install -d -o mia -g mia -m 0700 /var/lib/mia

WORKDIR /app
COPY requirements-gateway.txt ./
RUN pip install --no-cache-dir --only-binary=:all: -r requirements-gateway.txt
COPY . .

ENV MIA_DATA_DIR=/var/lib/mia
# mia, by number: a runtime that must not run root (runAsNonRoot) can tell it is not
USER ${MIA_UID}:${MIA_UID}
EXPOSE 5000
CMD ["gunicorn", "--bind", "0.0.0.0:5000", "--workers", "2", "--worker-class", "gthread", "--threads", "16", "web:create_app()"]
