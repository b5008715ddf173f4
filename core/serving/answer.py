"""One request on its way through the server: the prompt checked against the model's context,
its row submitted to the model's lane, and its text pieces carried from the lane's thread to the
event loop that answers the client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Literal

from lladapt.evaluation.continuous import Row, Sampling
from lladapt.serving.lanes import Job
from lladapt.serving.models import ServedModel, ServedModels
from lladapt.serving.protocol import ApiError, GenerationRequest
from lladapt.serving.text import TextDeltas

__all__ = ["Answer", "COMPLETION_MAX_TOKENS"]

#: OpenAI's default ``max_tokens`` of ``/v1/completions``.
COMPLETION_MAX_TOKENS = 16


class Answer:
    """Made inside the event loop; the lane's thread feeds :meth:`pieces`."""

    def __init__(self, served: ServedModels, model: ServedModel, prompt: str, request: GenerationRequest,
                 *, kind: Literal["text", "chat"], max_tokens: int | None, default_max_tokens: int):
        loop = asyncio.get_running_loop()
        self.kind, self.model = kind, model
        self.prompt_ids = served.tokenizer(prompt)["input_ids"]
        limit = self._limit(served.context, max_tokens, default_max_tokens, kind)
        stops = request.stops() + ([model.template.response_marker] if kind == "chat" else [])
        self._pieces: asyncio.Queue[str | None] = asyncio.Queue()

        def send(piece: str | None) -> None:
            loop.call_soon_threadsafe(self._pieces.put_nowait, piece)

        self.deltas = TextDeltas(
            served.tokenizer, stops=stops,
            visible=(lambda text: model.template.extract_response(prompt + text)) if kind == "chat" else str,
            on_text=send, on_end=lambda: (served.count_finished(self.row.finish_reason), send(None)),
        )
        sampling = Sampling(request.temperature, request.top_p, request.top_k, request.seed)
        self.row = Row(self.prompt_ids, limit, stop_ids=served.stop_ids, sampling=sampling,
                       slot=model.slot, streamer=self.deltas)
        self.deltas.row = self.row
        model.lane.submit(Job(self.row, request.num_beams))

    def _limit(self, context: int, max_tokens: int | None, default: int, kind: str) -> int:
        """The row's token limit; a prompt or a ``max_tokens`` past the context is an error."""
        used = len(self.prompt_ids)
        param = "messages" if kind == "chat" else "prompt"
        if used >= context:
            raise ApiError(400, f"{param}: the prompt is {used} tokens long; the model's context is "
                           f"{context} tokens", param=param, code="context_length_exceeded")
        if max_tokens is None:
            return min(default if kind == "chat" else COMPLETION_MAX_TOKENS, context - used)
        if used + max_tokens > context:
            raise ApiError(400, f"max_tokens: {max_tokens} new tokens after a prompt of {used} exceed "
                           f"the model's context of {context} tokens (at most {context - used})",
                           param="max_tokens", code="context_length_exceeded")
        return max_tokens

    async def pieces(self) -> AsyncIterator[str]:
        """The answer's text as it settles; asks the row to stop if the consumer goes away."""
        try:
            while (piece := await self._pieces.get()) is not None:
                yield piece
        finally:
            if not self.row.finished:
                self.row.stop("cancelled")

    async def whole(self) -> str:
        async for _ in self.pieces():
            pass
        return self.deltas.text

    def failed(self) -> ApiError | None:
        """The error to tell the client when generation failed."""
        if self.row.finish_reason != "error":
            return None
        return ApiError(500, f"generation failed: {type(self.row.error).__name__}: {self.row.error}",
                        type="server_error")
