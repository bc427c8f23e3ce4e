# Loupe's one image: web (gunicorn), Celery worker, trainer and beat all run from it (docker-compose.yml).
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LOUPE_VAR_DIR=/var/lib/loupe \
    LOUPE_STATIC_ROOT=/app/staticfiles \
    HF_HOME=/var/lib/loupe/hf

RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/loupe loupe

WORKDIR /app
COPY requirements.txt .
# The CPU build of torch first (the default wheel on PyPI for Linux brings CUDA, several GB).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "$TORCH_INDEX_URL" "torch==2.13.0" \
    && pip install -r requirements.txt

COPY . .
# Static files are collected at build time and served by WhiteNoise (compressed, far-future cache headers).
# Placeholder URLs keep settings from starting the embedded servers during the build.
RUN DATABASE_URL=postgres://build@localhost/build REDIS_URL=redis://localhost:6379/0 DJANGO_SECRET_KEY=build \
    python manage.py collectstatic --noinput --verbosity 0 \
    && mkdir -p /var/lib/loupe && chown -R loupe /var/lib/loupe

USER loupe
EXPOSE 8000
CMD ["gunicorn", "config.asgi:application", "-c", "python:config.gunicorn_conf", "--bind", "0.0.0.0:8000"]
