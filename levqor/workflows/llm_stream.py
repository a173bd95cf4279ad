"""A streamed chat completion, put back together from its server-sent events.

Each event's `data:` is a JSON chunk whose `choices[0].delta` adds to the message; with
`stream_options.include_usage` the last chunk before `data: [DONE]` carries the `usage` (and no
choices). Only the first choice is kept: the payload cannot ask for more than one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from levqor.workflows.context import TokenUsage

DONE = "[DONE]"


def token_usage(usage: Any) -> TokenUsage | None:
    """`usage` of a chat completion (or of a stream's last chunk), or None when there is none."""
    if not isinstance(usage, Mapping):
        return None

    def count(value: Any) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return TokenUsage(
        prompt_tokens=count(usage.get("prompt_tokens")),
        completion_tokens=count(usage.get("completion_tokens")),
        cached_tokens=count(prompt_details.get("cached_tokens"))
        if isinstance(prompt_details, Mapping)
        else 0,
        reasoning_tokens=(
            count(completion_details.get("reasoning_tokens"))
            if isinstance(completion_details, Mapping)
            else 0
        ),
    )


@dataclass
class _ToolCall:
    id: str | None = None
    type: str = "function"
    name: str = ""
    arguments: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass
class ChatStream:
    model: str | None = None
    role: str = "assistant"
    content: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    tool_calls: dict[int, _ToolCall] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: TokenUsage | None = None
    done: bool = False  # `data: [DONE]` arrived
    broken: bool = False  # an event's data was not a JSON object

    @classmethod
    def parse(cls, body: bytes) -> ChatStream:
        stream = cls()
        for data in _event_data(body.decode("utf-8", errors="replace")):
            if data == DONE:
                stream.done = True
                break
            try:
                chunk = json.loads(data)
            except ValueError:
                chunk = None
            if not isinstance(chunk, dict):
                stream.broken = True
                break
            stream.model = chunk.get("model") or stream.model
            if chunk.get("usage") is not None:
                stream.usage = token_usage(chunk["usage"])
            stream._add(chunk.get("choices"))
        return stream

    def _add(self, choices: Any) -> None:
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
            return
        choice = choices[0]
        if choice.get("finish_reason"):
            self.finish_reason = str(choice["finish_reason"])
        delta = choice.get("delta")
        if not isinstance(delta, Mapping):
            return
        if isinstance(delta.get("role"), str):
            self.role = delta["role"]
        if isinstance(delta.get("content"), str):
            self.content.append(delta["content"])
        if isinstance(delta.get("refusal"), str):
            self.refusal.append(delta["refusal"])
        for call in delta.get("tool_calls") or []:
            if isinstance(call, Mapping):
                self._add_tool_call(call)

    def _add_tool_call(self, call: Mapping[str, Any]) -> None:
        # A tool call arrives in pieces keyed by `index`: its id, type and name first, then its
        # arguments a few characters at a time.
        index = call.get("index", len(self.tool_calls))
        if not isinstance(index, int):
            return
        found = self.tool_calls.setdefault(index, _ToolCall())
        if isinstance(call.get("id"), str):
            found.id = call["id"]
        if isinstance(call.get("type"), str):
            found.type = call["type"]
        function = call.get("function")
        if isinstance(function, Mapping):
            if isinstance(function.get("name"), str):
                found.name += function["name"]
            if isinstance(function.get("arguments"), str):
                found.arguments += function["arguments"]

    def message(self) -> dict[str, Any]:
        """The assembled message, shaped as a non-streamed completion's `choices[0].message`."""
        message: dict[str, Any] = {
            "role": self.role,
            "content": "".join(self.content) if self.content else None,
        }
        if self.refusal:
            message["refusal"] = "".join(self.refusal)
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[index].as_dict() for index in sorted(self.tool_calls)]
        return message


def _event_data(text: str) -> list[str]:
    """The data of each event, in order (the text/event-stream format: lines of `field: value`,
    events ended by a blank line, several `data` lines of one event joined with newlines)."""
    events: list[str] = []
    lines: list[str] = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line:
            if lines:
                events.append("\n".join(lines))
                lines = []
            continue
        name, _, value = line.partition(":")
        if name == "data":
            lines.append(value.removeprefix(" "))
    # An event that the stream's end cut off before its blank line is not dispatched (the format's
    # rule), so a cut final chunk is never half-read.
    return events
