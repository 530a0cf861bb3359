"""Responses request -> inference service ``GenerateRequest`` (proto v1).

Protocol: Responses input items (canonical form from ``input_items.py``) become
``Chat.messages``, oldest first:

* ``instructions`` of THIS request become the first message (role ``system``); earlier
  turns' instructions do not carry over (they are not part of the stored history);
* history from ``previous_response_id`` (inputs then outputs of every earlier turn), then
  this turn's input items;
* ``message`` -> ChatMessage(role, text/image parts; ``refusal`` parts as text);
* ``function_call`` -> a ``tool_calls`` entry on the assistant message of the same turn
  (a new assistant message when the previous message is not an assistant one), named
  ``namespace.name`` when the call has a namespace (as namespaced tools are offered);
* ``function_call_output`` -> ChatMessage(role ``tool``, tool_call_id=call_id);
* custom tool, shell, local shell and apply-patch calls and outputs -> tool calls and
  ``tool`` messages the same way (``tool_items.py`` says how each reads);
* ``reasoning`` -> ``reasoning`` of the next assistant message; with ``reasoning.context:
  "current_turn"`` only the reasoning items after the last user message are passed on
  (``all_turns`` and ``auto`` pass them all; a chat template may still drop earlier turns');
* an assistant message's ``phase`` is not shown to the model (chat templates have none);
* ``compaction`` -> its summary as context (``compaction_item.py``): appended to the leading
  system/developer message (a new system message if there is none) while no conversation
  message came yet, so truncation keeps it; later, a user message.

Agentic fields (:func:`build_chat`, :func:`generate_request`): ``tools``/``tool_choice``/
``parallel_tool_calls``/``max_tool_calls`` -> the Chat's tool fields (``tools.apply_to_chat``),
``reasoning.effort`` -> ``Chat.reasoning_effort``, ``text.format`` -> ``response_format``
(not sent when the turn forces a tool call: the call grammar is the constraint).

Sampling: temperature, top_p, presence/frequency penalty, ``max_output_tokens`` ->
``max_tokens``, logprobs/top_logprobs when the request asks for them.

Truncation ``auto`` (:func:`fit_context`) drops whole turns from the oldest (never the
leading system/developer messages, never the last user turn) until CountTokens fits
``max_context - reserve``; ``disabled`` leaves the service to refuse an over-long prompt.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from trtllm_responses.inference.v1 import inference_pb2 as pb

from . import compaction_item, tool_items
from .errors import ApiError
from .output_format import response_format, service_effort
from .request import CreateRequest
from .tools import apply_to_chat, forces_call


def _parts(content: list[dict]) -> list[pb.ContentPart]:
    parts = []
    for part in content:
        kind = part["type"]
        if kind == "input_image":
            parts.append(pb.ContentPart(image=pb.ImagePart(url=part["image_url"], detail=part.get("detail", "auto"))))
        elif kind == "refusal":
            parts.append(pb.ContentPart(text=part["refusal"]))
        else:
            parts.append(pb.ContentPart(text=part["text"]))
    return parts


class _Builder:
    """Accumulates ChatMessages; reasoning waits for the next assistant message."""

    def __init__(self) -> None:
        self.messages: list[pb.ChatMessage] = []
        self.reasoning = ""

    def _assistant(self, msg: pb.ChatMessage) -> pb.ChatMessage:
        if self.reasoning:
            msg.reasoning = self.reasoning
            self.reasoning = ""
        return msg

    def message(self, item: dict) -> None:
        msg = pb.ChatMessage(role=item["role"], content=_parts(item["content"]))
        if item["role"] == "assistant":
            self._assistant(msg)
        self.messages.append(msg)

    def _call(self, call_id: str, name: str, arguments: str) -> None:
        last = self.messages[-1] if self.messages else None
        if last is None or last.role != "assistant":
            last = self._assistant(pb.ChatMessage(role="assistant"))
            self.messages.append(last)
        last.tool_calls.add(id=call_id, name=name, arguments=arguments)

    def _result(self, call_id: str, text: str) -> None:
        self.messages.append(pb.ChatMessage(role="tool", tool_call_id=call_id, content=[pb.ContentPart(text=text)]))

    def function_call(self, item: dict) -> None:
        self._call(item["call_id"], tool_items.qualified(item), item["arguments"])

    def function_call_output(self, item: dict) -> None:
        self._result(item["call_id"], item["output"])

    def tool_call(self, item: dict) -> None:
        self._call(item["call_id"], *tool_items.CALLS[item["type"]](item))

    def tool_result(self, item: dict) -> None:
        self._result(*tool_items.RESULTS[item["type"]](item))

    def reasoning_item(self, item: dict) -> None:
        texts = [p["text"] for p in item.get("content") or []] or [p["text"] for p in item.get("summary") or []]
        self.reasoning += "".join(texts)

    def compaction(self, item: dict) -> None:
        if not compaction_item.decode(item["encrypted_content"]):
            return  # an empty summary (nothing was older than the kept turn): nothing to read
        text = compaction_item.context_text(item)
        if self.messages and all(m.role in ("system", "developer") for m in self.messages):
            self.messages[-1].content.add(text="\n\n" + text)
        else:
            role = "user" if self.messages else "system"
            self.messages.append(pb.ChatMessage(role=role, content=[pb.ContentPart(text=text)]))


ITEM_HANDLERS: dict[str, Callable[[_Builder, dict], None]] = {
    "message": _Builder.message,
    "function_call": _Builder.function_call,
    "function_call_output": _Builder.function_call_output,
    "reasoning": _Builder.reasoning_item,
    "compaction": _Builder.compaction,
    **{kind: _Builder.tool_call for kind in tool_items.CALLS},
    **{kind: _Builder.tool_result for kind in tool_items.RESULTS},
}


def chat_messages(instructions: str | None, items: list[dict]) -> list[pb.ChatMessage]:
    """The chat for ``instructions`` + items (history first, then this turn's input)."""
    builder = _Builder()
    if instructions:
        builder.messages.append(pb.ChatMessage(role="system", content=[pb.ContentPart(text=instructions)]))
    for item in items:
        handler = ITEM_HANDLERS.get(item.get("type", ""))
        if handler is not None:  # stored items of other kinds (none yet) have no chat form
            handler(builder, item)
    if not any(m.role != "system" and m.role != "developer" for m in builder.messages):
        raise ApiError("invalid_request", "The input must contain at least one message that is not "
                       "a system or developer message.", param="input")
    return builder.messages


def sampling(req: CreateRequest) -> pb.SamplingParams:
    params = pb.SamplingParams(temperature=req.temperature, top_p=req.top_p)
    if req.presence_penalty:
        params.presence_penalty = req.presence_penalty
    if req.frequency_penalty:
        params.frequency_penalty = req.frequency_penalty
    if req.max_output_tokens is not None:
        params.max_tokens = req.max_output_tokens
    if req.logprobs:
        params.logprobs = True
        params.top_logprobs = req.top_logprobs or 0
    return params


def _reasoning_in_context(req: CreateRequest, items: list[dict]) -> list[dict]:
    """``items`` without reasoning from before the last user message, when
    ``reasoning.context`` is ``current_turn``."""
    if (req.reasoning or {}).get("context") != "current_turn":
        return items
    users = [i for i, item in enumerate(items) if item.get("type") == "message" and item.get("role") == "user"]
    cut = users[-1] if users else 0
    return [item for i, item in enumerate(items) if i >= cut or item.get("type") != "reasoning"]


def build_chat(req: CreateRequest, items: list[dict]) -> pb.Chat:
    """The whole Chat for a request: messages (history + input) and the agentic fields."""
    chat = pb.Chat(messages=chat_messages(req.instructions, _reasoning_in_context(req, items)))
    apply_to_chat(chat, req.tools, req.tool_choice, req.parallel_tool_calls, req.max_tool_calls)
    effort = service_effort(req.reasoning)
    if effort is not None:
        chat.reasoning_effort = effort
    return chat


def generate_request(req: CreateRequest, chat: pb.Chat, request_id: str) -> pb.GenerateRequest:
    out = pb.GenerateRequest(request_id=request_id, chat=chat, sampling=sampling(req))
    fmt = response_format(req.text)
    if fmt is not None and not (chat.tools and forces_call(req.tool_choice)):
        out.response_format.CopyFrom(fmt)
    return out


def _cut_points(messages: list[pb.ChatMessage]) -> tuple[int, list[int]]:
    """(length of the system/developer prefix, indices where a user turn starts after it)."""
    prefix = 0
    while prefix < len(messages) and messages[prefix].role in ("system", "developer"):
        prefix += 1
    cuts = [i for i in range(prefix + 1, len(messages)) if messages[i].role == "user"]
    return prefix, cuts


def _without(chat: pb.Chat, prefix: int, cut: int) -> pb.Chat:
    out = pb.Chat()
    out.CopyFrom(chat)
    del out.messages[prefix:cut]
    return out


async def fit_context(chat: pb.Chat, count: Callable[[pb.Chat], Awaitable[tuple[int, int]]],
                      reserve: int) -> pb.Chat:
    """Drop the oldest turns until the prompt fits ``max_context - reserve`` (truncation=auto).

    ``count(chat) -> (input_tokens, max_context_length)`` is the service's CountTokens.
    Binary search over turn boundaries: O(log turns) CountTokens calls.
    """
    tokens, max_context = await count(chat)
    budget = max_context - reserve
    if tokens <= budget:
        return chat
    prefix, cuts = _cut_points(list(chat.messages))
    lo, hi, best = 0, len(cuts) - 1, None
    while lo <= hi:  # find the earliest cut (keeping most history) that fits
        mid = (lo + hi) // 2
        candidate = _without(chat, prefix, cuts[mid])
        if (await count(candidate))[0] <= budget:
            best, hi = candidate, mid - 1
        else:
            lo = mid + 1
    if best is None:
        raise ApiError("context_length_exceeded",
                       f"The input ({tokens} tokens) does not fit the model's context of {max_context} "
                       f"tokens with {reserve} tokens left for the output, even after dropping earlier turns.",
                       param="input")
    return best
