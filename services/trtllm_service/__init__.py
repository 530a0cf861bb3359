"""trtllm-responses inference service: the gRPC `InferenceService` over an engine."""
