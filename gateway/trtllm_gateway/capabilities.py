"""Capability checks: a request that needs something the served model lacks is a 400.

Protocol: the service's ``GetModelInfo.capabilities`` (tools, reasoning,
structured_output, images, logprobs) against what a Responses request asks for. Each rule
in :data:`RULES` names a capability and returns the request field that needs it (or None);
the first unmet one is a 400 ``invalid_request_error`` whose message names the capability
and whose ``param`` names the field.

Not a rule: ``reasoning.effort``. A model without a reasoning parser or thinking switch
accepts and ignores it (GetModelInfo still says ``reasoning: false``).
"""
from __future__ import annotations

from collections.abc import Callable

from trtllm_responses.inference.v1 import inference_pb2 as pb

from .errors import ApiError
from .output_format import structured
from .request import CreateRequest
from .tools import forces_call, offered_tools


def _images(req: CreateRequest) -> str | None:
    return req.input.image_params[0] if req.input.image_params else None


def _logprobs(req: CreateRequest) -> str | None:
    if not req.logprobs:
        return None
    return "include" if "message.output_text.logprobs" in req.include else "top_logprobs"


def _tools(req: CreateRequest) -> str | None:
    return "tools" if offered_tools(req.tools, req.tool_choice) else None


def _forced_call(req: CreateRequest) -> str | None:
    return "tool_choice" if req.tools and forces_call(req.tool_choice) else None


def _text_format(req: CreateRequest) -> str | None:
    return "text.format" if structured(req.text) else None


# (capability field of pb.Capabilities, what it is called in messages, rule)
RULES: list[tuple[str, str, Callable[[CreateRequest], str | None]]] = [
    ("images", "image inputs", _images),
    ("logprobs", "token logprobs", _logprobs),
    ("tools", "function calling", _tools),
    ("structured_output", "constrained decoding (needed to force a tool call)", _forced_call),
    ("structured_output", "structured output", _text_format),
]


def check(req: CreateRequest, info: pb.ModelInfo) -> None:
    """Raises a 400 naming the first capability ``req`` needs that ``info`` lacks."""
    for capability, what, rule in RULES:
        param = rule(req)
        if param is not None and not getattr(info.capabilities, capability):
            raise ApiError("invalid_request", f"The model '{info.model_id}' does not support {what} "
                           f"(capability '{capability}'), which '{param}' asks for.", param=param)
