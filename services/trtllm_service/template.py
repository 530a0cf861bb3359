"""Chat templating and tokenization with the model's own Hugging Face tokenizer.

`Chat` (proto) -> OpenAI-style message dicts -> `tokenizer.apply_chat_template(...,
add_generation_prompt=True)` -> token ids. Generate and CountTokens both go through
`Templater.prompt_ids`, so they count exactly the same tokens. Jinja rendering and
tokenization are CPU work: callers run them off the event loop (`asyncio.to_thread`).

Role handling: "developer" is OpenAI's newer name for "system"; templates that do not know
it get "system". Tool results are role "tool" with `tool_call_id`; assistant tool calls are
`tool_calls: [{id, type: function, function: {name, arguments}}]` (the HF convention), with
arguments parsed back to an object because most templates `tojson` them.

Templates without tool support (no `tools` variable, e.g. SmolLM2's ChatML) get the tools
described in the system prompt in Hermes format, assistant calls rendered as
`<tool_call>{json}</tool_call>` text and results as `<tool_response>` text, so the model
sees the whole exchange and the `hermes` parser reads its calls.

Reasoning effort: templates with a thinking switch (`enable_thinking`, Qwen3) get it set
from the effort ("none" turns thinking off); other templates ignore the effort.
"""
from __future__ import annotations

import json
from typing import Any

from trtllm_responses.inference.v1 import inference_pb2 as pb

from .errors import InvalidRequest

ROLES = ("system", "developer", "user", "assistant", "tool")


def _text_of(msg: pb.ChatMessage, index: int, images_ok: bool) -> str:
    parts: list[str] = []
    for part in msg.content:
        kind = part.WhichOneof("part")
        if kind == "text":
            parts.append(part.text)
        elif kind == "image" and not images_ok:
            raise InvalidRequest(f"messages[{index}]: this model does not accept images", "messages")
    return "".join(parts)


def _arguments(call: pb.ToolCall, index: int) -> Any:
    if not call.arguments:
        return {}
    try:
        return json.loads(call.arguments)
    except json.JSONDecodeError:
        # Keep the model's own (malformed) text: the template renders what it was given.
        return call.arguments


def _tool_calls(msg: pb.ChatMessage, index: int) -> list[dict]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": _arguments(c, index)}}
        for c in msg.tool_calls
    ]


def _tools(chat: pb.Chat) -> list[dict] | None:
    if not chat.tools:
        return None
    tools = []
    for i, tool in enumerate(chat.tools):
        try:
            params = json.loads(tool.parameters_json) if tool.parameters_json else {"type": "object", "properties": {}}
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"tools[{i}].parameters is not valid JSON: {exc.msg}", "tools") from None
        fn = {"name": tool.name, "description": tool.description, "parameters": params}
        tools.append({"type": "function", "function": fn})
    return tools


_TOOLS_PROMPT = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""


def _with_tools_in_text(messages: list[dict], tools: list[dict] | None) -> list[dict]:
    """Hermes-format rendering of tools, calls and results for templates without tools."""
    out = []
    for m in messages:
        m = dict(m)
        calls = m.pop("tool_calls", None)
        if calls:
            rendered = [json.dumps({"name": c["function"]["name"], "arguments": c["function"]["arguments"]})
                        for c in calls]
            m["content"] = (m["content"] + "\n" if m["content"] else "") + "\n".join(
                f"<tool_call>\n{r}\n</tool_call>" for r in rendered)
        if m["role"] == "tool":
            m["content"] = f"<tool_response>\n{m['content']}\n</tool_response>"
            m.pop("tool_call_id", None)
        out.append(m)
    if tools:
        prompt = _TOOLS_PROMPT.format(tools="\n".join(json.dumps(t) for t in tools))
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": out[0]["content"] + "\n\n" + prompt}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out


class Templater:
    """Renders chats with one tokenizer's template; safe to call from worker threads."""

    def __init__(self, tokenizer: Any, supports_images: bool = False) -> None:
        self.tokenizer = tokenizer
        self.supports_images = supports_images
        source = str(getattr(tokenizer, "chat_template", None) or "")
        self._knows_developer = "developer" in source
        self._native_tools = "tools" in source
        self._thinking_switch = "enable_thinking" in source

    def messages(self, chat: pb.Chat) -> list[dict]:
        if not chat.messages:
            raise InvalidRequest("messages must not be empty", "messages")
        out: list[dict] = []
        for i, msg in enumerate(chat.messages):
            if msg.role not in ROLES:
                raise InvalidRequest(f"messages[{i}].role {msg.role!r} is not one of {', '.join(ROLES)}", "messages")
            role = "system" if msg.role == "developer" and not self._knows_developer else msg.role
            entry: dict[str, Any] = {"role": role, "content": _text_of(msg, i, self.supports_images)}
            if msg.tool_calls:
                entry["tool_calls"] = _tool_calls(msg, i)
            if msg.tool_call_id:
                entry["tool_call_id"] = msg.tool_call_id
            if msg.name:
                entry["name"] = msg.name
            if msg.reasoning:
                entry["reasoning_content"] = msg.reasoning
            out.append(entry)
        return out

    def render(self, chat: pb.Chat) -> str:
        kwargs: dict[str, Any] = {}
        if chat.chat_template_kwargs_json:
            try:
                kwargs = json.loads(chat.chat_template_kwargs_json)
            except json.JSONDecodeError as exc:
                raise InvalidRequest(f"chat_template_kwargs is not valid JSON: {exc.msg}",
                                     "chat_template_kwargs") from None
            if not isinstance(kwargs, dict):
                raise InvalidRequest("chat_template_kwargs must be a JSON object", "chat_template_kwargs")
        if self._thinking_switch and chat.HasField("reasoning_effort") and "enable_thinking" not in kwargs:
            kwargs["enable_thinking"] = chat.reasoning_effort != "none"
        messages, tools = self.messages(chat), _tools(chat)
        if not self._native_tools:
            messages, tools = _with_tools_in_text(messages, tools), None
        try:
            return self.tokenizer.apply_chat_template(
                messages, tools=tools, add_generation_prompt=True, tokenize=False, **kwargs
            )
        except InvalidRequest:
            raise
        except Exception as exc:  # noqa: BLE001 - jinja errors raised by the template itself (raise_exception)
            raise InvalidRequest(f"the chat template rejected the conversation: {exc}", "messages") from None

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, request: pb.GenerateRequest | pb.CountTokensRequest) -> list[int]:
        """Token ids for a request's input, exactly as Generate feeds the engine."""
        return self.prompt(request)[1]

    def prompt(self, request: pb.GenerateRequest | pb.CountTokensRequest) -> tuple[str | None, list[int]]:
        """(rendered text or None for token-id input, token ids) of a request's input."""
        kind = request.WhichOneof("input")
        if kind == "chat":
            text = self.render(request.chat)
            return text, self.encode(text)
        if kind == "prompt":
            if not request.prompt:
                raise InvalidRequest("prompt must not be empty", "prompt")
            return request.prompt, list(self.tokenizer(request.prompt)["input_ids"])
        if kind == "prompt_token_ids" and isinstance(request, pb.GenerateRequest):  # not in CountTokens
            ids = list(request.prompt_token_ids.ids)
            if not ids:
                raise InvalidRequest("prompt_token_ids must not be empty", "prompt_token_ids")
            vocab = len(self.tokenizer)
            if any(i >= vocab for i in ids):
                raise InvalidRequest(f"prompt_token_ids has ids outside the vocabulary (size {vocab})",
                                     "prompt_token_ids")
            return None, ids
        raise InvalidRequest("one of chat, prompt or prompt_token_ids is required", "input")
