# The one Modeldeck image: web (gunicorn), worker and beat differ only by command.
# Build context is the repository; `docker compose up --build` uses it.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    MODELDECK_VAR_DIR=/var/lib/modeldeck
WORKDIR /app

RUN groupadd --system --gid 10001 modeldeck \
 && useradd --system --uid 10001 --gid modeldeck --home-dir /app modeldeck

COPY pyproject.toml ./
COPY runtime/pyproject.toml runtime/README.md runtime/
COPY runtime/modeldeck_runtime runtime/modeldeck_runtime
COPY config config
COPY common common
COPY accounts accounts
COPY events events
COPY registry registry
COPY deployments deployments
COPY edge edge
COPY monitoring monitoring
RUN pip install ./runtime .

COPY manage.py gunicorn.conf.py ./
COPY templates templates
COPY static static
RUN DEBUG=false SECRET_KEY=collectstatic-only python manage.py collectstatic --no-input \
 && mkdir -p /var/lib/modeldeck && chown modeldeck:modeldeck /var/lib/modeldeck

USER modeldeck
EXPOSE 8000
CMD ["gunicorn", "config.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--threads", "4"]
