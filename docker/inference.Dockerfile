# The inference service on NVIDIA GPUs: trtllm-responses-service --engine trtllm.
#
# Base: NVIDIA's TensorRT-LLM release image, pinned to a 1.2.x tag. It already carries
# tensorrt_llm, torch (CUDA), transformers and xgrammar; we add only this package's own
# dependencies (grpcio, protobuf, aiohttp, prometheus-client, ...), not the [cpu] extra.
# Pin the digest too once the image has been pulled:  FROM ...:1.2.1@sha256:<digest>.
#
#   docker build -f docker/inference.Dockerfile -t trtllm-responses-service .
#   docker run --gpus all -p 50051:50051 -p 9400:9400 -v /path/to/ckpt:/models/model:ro \
#     trtllm-responses-service --model /models/model
#
# Probe: gRPC health (grpc.health.v1) on 50051 turns SERVING after the model is loaded and
# warmed up; the HEALTHCHECK below asks it. Kubernetes uses its own grpc probes instead.
FROM nvcr.io/nvidia/tensorrt-llm/release:1.2.1

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONUNBUFFERED=1

WORKDIR /opt/trtllm-responses
COPY pyproject.toml README.md ./
COPY services ./services
COPY gateway ./gateway
RUN python3 -m pip install --no-cache-dir . \
    && python3 -c "import tensorrt_llm.llmapi, trtllm_service.engine.trtllm"

# Non-root. The Helm chart runs as uid/gid 1000; Ubuntu-based images may already have a
# user with that uid, so reuse it if present.
RUN if ! getent group 1000 >/dev/null; then groupadd --gid 1000 trtllm; fi \
    && if ! getent passwd 1000 >/dev/null; then \
         useradd --uid 1000 --gid 1000 --no-log-init --create-home --home-dir /home/trtllm trtllm; fi \
    && mkdir -p /home/trtllm/.cache \
    && chown -R 1000:1000 /home/trtllm
ENV HOME=/home/trtllm \
    HF_HOME=/home/trtllm/.cache/huggingface
USER 1000:1000

EXPOSE 50051 9400
HEALTHCHECK --interval=30s --timeout=5s --start-period=900s --retries=3 \
    CMD ["python3", "-c", "import sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; c = grpc.insecure_channel('127.0.0.1:50051'); sys.exit(0 if g.HealthStub(c).Check(h.HealthCheckRequest(), timeout=3).status == h.HealthCheckResponse.SERVING else 1)"]

ENTRYPOINT ["trtllm-responses-service", "--engine", "trtllm"]
CMD ["--model", "/models/model"]
