"""The one builder of the Responses API response object (docs/responses-api.md §2).

Every field is present, ``null`` where nullable; request settings are echoed. The stream's
``response.created`` snapshot, the terminal event's payload, the JSON reply and the stored
copy all start from :func:`new_response` and are finished by ``streaming.finalize``; every stored
record of one is built by :func:`stored`.
The agentic settings are echoed in their validated form (``tools.py``, ``output_format.py``):
``tools`` (function tools with ``type, name, description, parameters, strict``),
``tool_choice``, ``max_tool_calls``, ``reasoning`` (``{effort, summary}`` or null) and
``text`` (``{format, verbosity}``).
"""
from __future__ import annotations

from .request import CreateRequest
from .store import StoredResponse


def new_response(req: CreateRequest, response_id: str, model_id: str, created_at: int) -> dict:
    """The response object in state ``in_progress``, with no output yet."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "completed_at": None,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": req.instructions,
        "model": model_id,
        "output": [],
        "parallel_tool_calls": req.parallel_tool_calls,
        "previous_response_id": req.previous_response_id,
        "conversation": {"id": req.conversation} if req.conversation else None,
        "reasoning": dict(req.reasoning) if req.reasoning is not None else None,
        "store": req.store,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "presence_penalty": req.presence_penalty,
        "frequency_penalty": req.frequency_penalty,
        "top_logprobs": req.top_logprobs or 0,  # a number, as OpenAI echoes it (0 when unset)
        "max_output_tokens": req.max_output_tokens,
        "max_tool_calls": req.max_tool_calls,
        "text": req.text,
        "tool_choice": req.tool_choice,
        "tools": req.tools,
        "truncation": req.truncation,
        "usage": None,
        "user": req.user,
        "metadata": dict(req.metadata),
        "safety_identifier": req.safety_identifier,
        "prompt_cache_key": req.prompt_cache_key,
        "service_tier": req.service_tier,
    }


def stored(resp: dict, tenant: str, input_items: list[dict], previous_response_id: str | None) -> StoredResponse:
    """The one constructor of a stored record: ``resp`` (any status) and its turn's input."""
    return StoredResponse(id=resp["id"], tenant=tenant, created_at=resp["created_at"], status=resp["status"],
                          response=resp, input_items=input_items, previous_response_id=previous_response_id)


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int, reasoning_tokens: int) -> dict:
    """``usage`` from the service's Final.usage."""
    return {
        "input_tokens": prompt_tokens,
        "input_tokens_details": {"cached_tokens": cached_tokens, "cache_write_tokens": 0},
        "output_tokens": completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": prompt_tokens + completion_tokens,
    }


def deleted(response_id: str) -> dict:
    return {"id": response_id, "object": "response.deleted", "deleted": True}
