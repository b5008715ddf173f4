"""The OpenAI-compatible wire format: request models (pydantic, strict types: a string where a
number belongs is an error naming the field, not a guess), the error body, and the response
and stream-chunk bodies of ``/v1/completions`` and ``/v1/chat/completions``.

Beyond OpenAI's fields a request may give ``top_k`` and ``num_beams`` (the paper's generation
UI has both); ``n`` must be 1 and ``logprobs`` is not supported (both refused by name)."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ApiError",
    "ChatRequest",
    "CompletionRequest",
    "chunk_body",
    "completion_body",
    "error_body",
]


class ApiError(Exception):
    """An error a client caused: its HTTP status and OpenAI's error fields."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class _Strict(BaseModel):
    # strict: no coercion of "5" to 5; unknown fields (OpenAI clients send many) are ignored.
    model_config = ConfigDict(strict=True, extra="ignore")


class GenerationRequest(_Strict):
    """Fields both routes share."""

    model: str
    #: new tokens at most (default: completions 16, as OpenAI; chat the server's default).
    max_tokens: int | None = Field(default=None, ge=1)
    #: 0: greedy.
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    #: extension: keep the k likeliest tokens (0: off).
    top_k: int = Field(default=0, ge=0)
    #: extension: beam search (not streamed token by token; greedy within the beams).
    num_beams: int = Field(default=1, ge=1, le=8)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    n: int = Field(default=1, ge=1, le=1)
    logprobs: Any = None
    user: str | None = None

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        if len(stops) > 4:
            raise ApiError(400, "stop: at most 4 stop strings", param="stop")
        return stops

    def check_supported(self) -> None:
        if self.logprobs not in (None, False, 0):
            raise ApiError(400, "logprobs: not supported by this server", param="logprobs")
        if self.num_beams > 1 and self.temperature > 0:
            raise ApiError(400, "num_beams > 1 needs temperature 0 (beam search here is greedy)",
                           param="num_beams")


class CompletionRequest(GenerationRequest):
    prompt: str | list[str]

    def text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise ApiError(400, "prompt: one prompt per request", param="prompt")
        return self.prompt[0]


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(part.text for part in self.content)


class ChatRequest(GenerationRequest):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    def instruction(self) -> str:
        """The last user message: the instruction the template renders."""
        users = [m for m in self.messages if m.role == "user"]
        if not users:
            raise ApiError(400, "messages: no message with role 'user'", param="messages")
        return users[-1].text()


def _ids(kind: str) -> tuple[str, int]:
    return f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}", int(time.time())


def completion_body(kind: Literal["text", "chat"], model: str, text: str, finish_reason: str,
                    prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """A whole (not streamed) response."""
    rid, created = _ids(kind)
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish_reason, "logprobs": None}
    if kind == "chat":
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {
        "id": rid, "object": "chat.completion" if kind == "chat" else "text_completion",
        "created": created, "model": model, "choices": [choice],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


class ChunkIds:
    """The id and time every chunk of one stream repeats."""

    def __init__(self, kind: Literal["text", "chat"], model: str):
        self.kind, self.model = kind, model
        self.id, self.created = _ids(kind)


def chunk_body(ids: ChunkIds, text: str | None, finish_reason: str | None = None,
               first: bool = False) -> dict[str, Any]:
    """One server-sent event of a stream."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish_reason, "logprobs": None}
    if ids.kind == "chat":
        delta: dict[str, Any] = {"role": "assistant"} if first else {}
        if text is not None:
            delta["content"] = text
        choice["delta"] = delta
    else:
        choice["text"] = text or ""
    return {"id": ids.id, "object": "chat.completion.chunk" if ids.kind == "chat" else "text_completion",
            "created": ids.created, "model": ids.model, "choices": [choice]}
