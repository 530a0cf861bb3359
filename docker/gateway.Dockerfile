# The gateway: OpenAI Responses API (HTTP/SSE) in front of the inference service.
# No GPU, no model: a slim Python 3.11 image with this package's core dependencies.
# Pin the digest too once pulled:  FROM python:3.11.14-slim-bookworm@sha256:<digest>.
#
#   docker build -f docker/gateway.Dockerfile -t trtllm-responses-gateway .
#   docker run -p 8080:8080 trtllm-responses-gateway --service inference:50051
#
# Probes: GET /healthz (process up) and GET /readyz (service reachable) on port 8080.
FROM python:3.11.14-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /opt/trtllm-responses
COPY pyproject.toml README.md ./
COPY services ./services
COPY gateway ./gateway
RUN python -m pip install --no-cache-dir . \
    && python -c "import trtllm_gateway.app"

RUN groupadd --gid 1000 trtllm \
    && useradd --uid 1000 --gid 1000 --no-log-init --create-home --home-dir /home/trtllm trtllm \
    && mkdir -p /var/lib/trtllm-responses \
    && chown 1000:1000 /var/lib/trtllm-responses
USER 1000:1000

EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]

ENTRYPOINT ["trtllm-responses-gateway"]
CMD ["--host", "0.0.0.0", "--port", "8080", "--service", "inference:50051", \
     "--store-url", "sqlite:////var/lib/trtllm-responses/responses.db"]
