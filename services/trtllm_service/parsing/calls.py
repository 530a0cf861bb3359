"""Turning scanner events of one tool call into `ToolCallPiece`s (see `base` for the protocol).

Streaming policy: once the function name is known and the arguments value has started
with `{`, the call is announced (id + name) and the arguments' raw JSON text is streamed
as it arrives; the wrapper's own closing brace and the markup after it are never part of
it. So the concatenated `arguments_delta`s are the arguments object's JSON text exactly as
the model wrote it (for a grammar-forced call that is `json.dumps` spacing). Arguments in
any other shape (a JSON-encoded string, `null`, missing, or before the name) are buffered
and emitted when the call completes: a string holding a JSON object is unwrapped, `null`
or missing becomes `{}`.

Errors never raise: they end up in the `error` of one piece of the call.
"""
from __future__ import annotations

import json

from .base import IdFactory, ToolCallPiece


class CallEmitter:
    """One tool call being streamed: collects name and arguments, emits pieces."""

    def __init__(self, index: int, tool_names: frozenset[str] | None, new_id: IdFactory,
                 name: str | None = None) -> None:
        self.index = index
        self.tool_names = tool_names
        self.new_id = new_id
        self.name: str | None = None
        self.error = ""
        self.error_sent = False
        self.announced = False
        self._pending: list[str] = []  # argument text not yet emitted
        self._streamed: list[str] = []  # argument text already emitted
        self._args_kind = ""
        self._args_done = False
        if name is not None:
            self.set_name(name)

    def set_name(self, name: str) -> None:
        self.name = name
        if self.tool_names is not None and name not in self.tool_names:
            known = ", ".join(sorted(self.tool_names)) or "none"
            self._fail(f"unknown function {name!r} (available: {known})")

    def _fail(self, reason: str) -> None:
        if not self.error:
            self.error = reason

    def event(self, kind: str, value: str) -> list[ToolCallPiece]:
        if kind == "name":
            return self._on_name(value)
        if kind == "args":
            return self._on_args(value)
        if kind == "args_end":
            self._args_done = True
        return []

    def _on_name(self, raw: str) -> list[ToolCallPiece]:
        try:
            name = json.loads(raw)
        except ValueError:
            name = None
        if not isinstance(name, str) or not name:
            self._fail(f"the function name {raw.strip()} is not a non-empty string")
            self.name = raw.strip()
            return []
        self.set_name(name)
        if self._args_kind == "{" and not self.announced:
            return [self._announce("".join(self._pending))]
        return []

    def _on_args(self, chunk: str) -> list[ToolCallPiece]:
        if not self._args_kind:
            self._args_kind = chunk[0]
        if self.announced:
            self._streamed.append(chunk)
            return [ToolCallPiece(self.index, arguments_delta=chunk)]
        self._pending.append(chunk)
        if self._args_kind == "{" and self.name is not None:
            return [self._announce("".join(self._pending))]
        return []

    def _announce(self, arguments: str) -> ToolCallPiece:
        self.announced = True
        self._pending, self._streamed = [], [arguments] if arguments else []
        piece = ToolCallPiece(self.index, id=self.new_id(), name=self.name or "",
                              arguments_delta=arguments, error=self.error)
        self.error_sent = bool(self.error)
        return piece

    def close(self, complete: bool, raw: str = "", reason: str = "") -> list[ToolCallPiece]:
        """Ends the call. `complete`: the wrapper was well-formed and closed; otherwise
        `reason` says why not and `raw` is the call's raw text, used if nothing was emitted."""
        # A wrapper broken or cut short after its name and arguments is still a usable call.
        complete = complete or (self.name is not None and self._args_done)
        if not complete:
            self._fail(reason or "the output ended inside a tool call")
        if self.announced:
            if complete:
                self._check_json("".join(self._streamed))
            if self.error and not self.error_sent:
                self.error_sent = True
                return [ToolCallPiece(self.index, error=self.error)]
            return []
        if self.name is None:
            self._fail("the tool call has no function name")
        arguments = self._final_arguments() if complete else ("".join(self._pending) or raw)
        return [self._announce(arguments)]

    def _check_json(self, arguments: str) -> None:
        try:
            value = json.loads(arguments)
        except ValueError as exc:
            self._fail(f"the arguments are not valid JSON: {exc}")
            return
        if not isinstance(value, dict):
            self._fail("the arguments are not a JSON object")

    def _final_arguments(self) -> str:
        raw = "".join(self._pending).strip()
        try:
            value = json.loads(raw) if raw else None
        except ValueError as exc:
            self._fail(f"the arguments are not valid JSON: {exc}")
            return raw
        if value is None:
            return "{}"
        if isinstance(value, str):  # some models JSON-encode the arguments object
            self._check_json(value)
            return value
        if not isinstance(value, dict):
            self._fail("the arguments are not a JSON object")
        return raw
