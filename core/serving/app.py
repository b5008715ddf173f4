"""The HTTP application (FastAPI): OpenAI's ``/v1/models``, ``/v1/completions`` and
``/v1/chat/completions`` (streamed as server-sent events or not), ``/health``, and the playground
page at ``/``. Every error is a JSON body in OpenAI's shape naming the field at fault."""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from lladapt.serving.answer import Answer
from lladapt.serving.models import ServedModel, ServedModels
from lladapt.serving.protocol import (
    ApiError,
    ChatRequest,
    ChunkIds,
    CompletionRequest,
    GenerationRequest,
    chunk_body,
    completion_body,
    error_body,
)

__all__ = ["create_app"]

#: routes anyone may read without the API key: the health check, and the playground page (static
#: HTML; every request it makes goes through the keyed API).
OPEN_PATHS = frozenset({"/health", "/"})


def _error(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


def _validation_error(exc: RequestValidationError) -> ApiError:
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        return ApiError(400, f"the request body is not valid JSON ({first.get('msg')})", code="invalid_json")
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(loc) or None
    return ApiError(400, f"{param or 'body'}: {first.get('msg')}", param=param, code=first.get("type"))


def create_app(served: ServedModels, *, api_key: str | None = None, default_max_tokens: int = 256,
               close_models: bool = True) -> FastAPI:
    """The application over ``served``; at shutdown it closes their lanes after their requests
    (unless ``close_models`` is False: another application serves them too)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if close_models:
            served.close()

    app = FastAPI(title="lladapt serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    _errors_and_key(app, api_key)
    _read_routes(app, served)
    _generation_routes(app, served, default_max_tokens)
    return app


def _errors_and_key(app: FastAPI, api_key: str | None) -> None:
    """Every error as OpenAI's JSON body; the API key checked on every route but the open ones."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(_validation_error(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error"), status_code=exc.status_code)

    @app.middleware("http")
    async def authorize(request: Request, call_next: Any) -> Any:
        if api_key and request.url.path not in OPEN_PATHS:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return _error(ApiError(401, "missing or wrong API key: send the header "
                                       "'Authorization: Bearer <key>'", code="invalid_api_key"))
        return await call_next(request)


def _read_routes(app: FastAPI, served: ServedModels) -> None:
    """``/health``, the playground page and ``/v1/models``."""

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": sorted(served.models), "finished": dict(served.finished)}

    @app.get("/", response_class=HTMLResponse)
    async def playground() -> str:
        return resources.files("lladapt.serving").joinpath("playground.html").read_text(encoding="utf-8")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        created = int(time.time())
        return {"object": "list", "data": [
            {"id": m.name, "object": "model", "created": created, "owned_by": "lladapt",
             "adapter": m.kind, "folder": m.folder, "shares_base": m.shares_base}
            for m in served.models.values()]}


def _generation_routes(app: FastAPI, served: ServedModels, default_max_tokens: int) -> None:
    """``/v1/completions`` (the prompt as raw text) and ``/v1/chat/completions`` (the last user
    message through the model's prompt template)."""

    def pick(request: GenerationRequest) -> ServedModel:
        request.check_supported()
        if request.model not in served.models:
            raise ApiError(404, f"model: '{request.model}' is not served here; served: "
                           + ", ".join(sorted(served.models)), param="model", code="model_not_found")
        return served.models[request.model]

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest) -> Any:
        model = pick(body)
        answer = Answer(served, model, body.text(), body, kind="text", max_tokens=body.max_tokens,
                        default_max_tokens=default_max_tokens)
        return await _respond(answer, body, "text")

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest) -> Any:
        from lladapt.components.interfaces import Example

        model = pick(body)
        prompt = model.template.eval_prompt(Example(instruction=body.instruction()))
        answer = Answer(served, model, prompt, body, kind="chat",
                        max_tokens=body.max_completion_tokens or body.max_tokens,
                        default_max_tokens=default_max_tokens)
        return await _respond(answer, body, "chat")


async def _respond(answer: Answer, body: GenerationRequest, kind: Literal["text", "chat"]) -> Any:
    if body.stream:
        return StreamingResponse(_events(answer, ChunkIds(kind, body.model)), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    text = await answer.whole()
    failed = answer.failed()
    if failed is not None:
        return _error(failed)
    return completion_body(kind, body.model, text, answer.row.finish_reason or "stop",
                           len(answer.prompt_ids), len(answer.row.tokens))


def _sse(data: Any) -> str:
    return f"data: {json.dumps(data)}\n\n"


async def _events(answer: Answer, ids: ChunkIds) -> AsyncIterator[str]:
    """The stream: a first chunk (chat: the role), one chunk per settled piece, a last chunk with
    the finish reason, ``[DONE]``. A client that goes away stops its row (``Answer.pieces``)."""
    first = ids.kind == "chat"
    if first:
        yield _sse(chunk_body(ids, "", first=True))
    async for piece in answer.pieces():
        yield _sse(chunk_body(ids, piece))
    failed = answer.failed()
    if failed is not None:
        yield _sse(failed.body())
    else:
        yield _sse(chunk_body(ids, None if ids.kind == "chat" else "", answer.row.finish_reason or "stop"))
    yield "data: [DONE]\n\n"
