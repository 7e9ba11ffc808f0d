# Flywheel API / worker image (CPU). The same image runs `flywheel serve` and `flywheel worker`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    FLYWHEEL_DATA_DIR=/data

WORKDIR /srv/flywheel

# torch first, pinned, from PyTorch's CPU wheels: the default PyPI wheel is a multi-GB CUDA build.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "$TORCH_INDEX" "torch==2.13.0"

COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
RUN pip install -e . && useradd --system --uid 10001 flywheel && mkdir -p /data && chown flywheel /data

USER flywheel
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status != 200)"
CMD ["flywheel", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-worker"]
