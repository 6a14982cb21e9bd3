# syntax=docker/dockerfile:1
#
# authsvc: gunicorn serving wsgi:app (see gunicorn.conf.py for the environment it reads).
#
#   docker build -t authsvc .
#   docker run --rm -e AUTHSVC_SECRET_KEY=... -e AUTHSVC_ISSUER=... -e DATABASE_URL=... authsvc \
#       flask --app wsgi db upgrade
#   docker run -p 8000:8000 -e ... authsvc
#
# Two stages. `builder` resolves the runtime dependencies declared in pyproject.toml into a
# virtualenv, from wheels only (every dependency ships manylinux wheels for x86_64 and aarch64),
# so nothing is compiled and no compiler or header exists in any stage; should a dependency ever
# need one, install it in `builder` only. The final stage copies that venv and the source.
#
# The source is not installed into site-packages: it lives in /app and is imported from there
# (PYTHONPATH), because authsvc finds its Alembic scripts at <package dir>/../migrations
# (authsvc.MIGRATIONS_DIR = /app/migrations) and Flask puts its instance folder beside the
# package (/app/instance, the only directory the service user may write).

FROM python:3.11.15-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1


FROM base AS builder
WORKDIR /build
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print(*deps, sep='\n')" > requirements.txt \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --only-binary=:all: --requirement requirements.txt


FROM base AS final
LABEL org.opencontainers.image.title="authsvc" \
      org.opencontainers.image.description="Token issuer: signup, login, rotating refresh tokens, JWKS"

RUN groupadd --system --gid 10001 authsvc \
    && useradd --system --no-log-init --uid 10001 --gid authsvc --home-dir /app \
       --shell /usr/sbin/nologin authsvc

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# Owned by root and read-only for the service user; only instance/ is writable.
COPY authsvc/ authsvc/
COPY migrations/ migrations/
COPY wsgi.py gunicorn.conf.py ./
RUN python -m compileall -q authsvc migrations wsgi.py gunicorn.conf.py \
    && install -d -o authsvc -g authsvc -m 0700 instance

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONPATH=/app \
    PORT=8000

USER 10001:10001
EXPOSE 8000

# The slim image has no curl: ask /healthz with Python (urlopen raises on any non-2xx answer).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/healthz', timeout=4)"]

CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
