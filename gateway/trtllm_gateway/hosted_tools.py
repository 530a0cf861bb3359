"""Hosted tools: the tool types OpenAI runs on its own servers, which this server cannot run.

Protocol: the Responses ``tools`` array (docs/responses-api.md §1, "Tools"). A hosted tool
(:data:`HOSTED_TYPES`: web search, file search, code interpreter, image generation, computer
use, remote MCP servers, tool search, programmatic tool calling, and the shell, local shell
and apply-patch tools, whose calls a hosted environment would run) is handled by the
gateway's ``--hosted-tools`` policy:

* ``drop`` (default): the tool is not offered to the model, the response echoes it in
  ``tools`` as sent, the request is logged (the dropped types) and each dropped tool is
  counted in ``trtllm_gateway_hosted_tools_dropped_total{type}``. Clients such as Codex send
  ``{"type": "web_search"}`` with every request and work without it.
* ``reject``: 400 ``unsupported_parameter`` naming ``tools[i].type``.

Either way, a ``tool_choice`` that names a hosted tool (``{"type": "web_search_preview"}``,
``{"type": "mcp", ...}``, ``{"type": "shell"}``...) is a 400 naming ``tool_choice``: the
model cannot be made to call a tool it is not offered.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .errors import ApiError, invalid, kind_of

if TYPE_CHECKING:  # the metrics object only; importing it here at runtime is not needed
    from .metrics import GatewayMetrics

log = logging.getLogger("trtllm_gateway.hosted_tools")

POLICIES = ("drop", "reject")
#: Every hosted tool type of openai-python's ``ToolParam`` (and its dated aliases).
HOSTED_TYPES = frozenset({
    "web_search", "web_search_2025_08_26", "web_search_preview", "web_search_preview_2025_03_11",
    "file_search", "code_interpreter", "image_generation", "computer", "computer_use",
    "computer_use_preview", "mcp", "tool_search", "programmatic_tool_calling", "local_shell",
    "shell", "apply_patch",
})


def check(tool: dict, path: str, policy: str) -> dict:
    """The echo form of hosted tool ``tool`` (as sent); 400 under the ``reject`` policy."""
    if policy == "reject":
        raise ApiError("unsupported", f"Tool type {tool['type']!r} is a hosted tool, which this server "
                       "cannot run (its --hosted-tools policy is 'reject').", param=f"{path}.type")
    return dict(tool)


def is_hosted(tool: dict) -> bool:
    return kind_of(tool) in HOSTED_TYPES


def check_choice(choice: Any, param: str) -> None:
    """400 when ``choice`` (a ``tool_choice`` object, or an ``allowed_tools`` entry) names a
    hosted tool."""
    if isinstance(choice, dict) and kind_of(choice) in HOSTED_TYPES:
        raise invalid(param, f"'{param}' names the hosted tool {choice['type']!r}, which this server "
                      "does not run, so the model cannot be made to call it.")


def dropped(tools: list[dict]) -> list[str]:
    """The types of the hosted tools in a validated ``tools`` list (those not offered)."""
    return [t["type"] for t in tools if is_hosted(t)]


def record(metrics: GatewayMetrics, tools: list[dict]) -> None:
    """Log and count the hosted tools a request had dropped."""
    kinds = dropped(tools)
    if not kinds:
        return
    log.info("hosted tools not offered to the model: %s", ", ".join(kinds))
    for kind in kinds:
        metrics.hosted_tools_dropped.labels(kind).inc()
