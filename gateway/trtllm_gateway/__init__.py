"""trtllm-responses gateway: the OpenAI Responses API over the inference service."""
