# text2art's HTTP service on an NVIDIA GPU.
#   docker build -t text2art .
#   docker run --gpus all -p 8000:8000 -v text2art-cache:/cache -v text2art-outputs:/outputs text2art
# Settings come from T2A_* variables (README, "HTTP service"), e.g. -e T2A_API_KEYS=secret.
# One image, two roles: `serve` (the default) or `worker` (README "Scale-out";
# deploy/compose.yaml runs both with PostgreSQL and Redis).
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TEXT2ART_CACHE=/cache \
    T2A_OUTPUT_DIR=/outputs \
    T2A_HOST=0.0.0.0 \
    T2A_PORT=8000

# The base image's CUDA build of torch and torchvision satisfies the requirements: pip keeps it.
WORKDIR /app
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY api ./api
RUN pip install ".[redis,postgres,s3]" \
    && useradd --create-home --uid 1000 text2art \
    && mkdir -p /cache /outputs \
    && chown text2art:text2art /cache /outputs

USER text2art
# Downloaded CLIP/VQGAN weights and every result survive the container.
VOLUME ["/cache", "/outputs"]
EXPOSE 8000

# Liveness of either role: the API's /healthz on T2A_PORT, or a worker's on T2A_HEALTH_PORT.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request as u; port = os.environ.get('T2A_HEALTH_PORT') or os.environ['T2A_PORT']; u.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)" || exit 1

ENTRYPOINT ["text2art"]
CMD ["serve"]
