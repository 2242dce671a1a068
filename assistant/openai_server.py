"""An OpenAI-compatible HTTP API over any ChatBackend (`assistant serve`).

Lets other tools (editors, scripts, a second assistant with `model.backend = "openai"`) use
the locally hosted model, and gives our own OpenAI client a real server to be tested against.
Implements `GET /v1/models` and `POST /v1/chat/completions` (streamed as server-sent events
or whole). Bound to 127.0.0.1 by default: there is no authentication beyond an optional key.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from aiohttp import web

from assistant.errors import AssistantError
from assistant.llm.base import ChatBackend, GenerationOptions, Message

ROLES = {"system", "user", "assistant"}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error"}}, status=status)


def _parse_request(body: Any, defaults: GenerationOptions) -> tuple[list[Message], GenerationOptions, bool]:
    """Validate a chat-completions body; raises ValueError with a message for the client."""
    if not isinstance(body, dict):
        raise ValueError("The body must be a JSON object.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list.")
    parsed: list[Message] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"messages[{i}] needs a role (system, user, assistant) and string content.")
        parsed.append({"role": m["role"], "content": m["content"]})
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens", defaults.max_new_tokens))
    temperature = body.get("temperature", defaults.temperature)
    top_p = body.get("top_p", defaults.top_p)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= 32768:
        raise ValueError("'max_tokens' must be a whole number from 1 to 32768.")
    for name, value, hi in (("temperature", temperature, 5.0), ("top_p", top_p, 1.0)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= hi:
            raise ValueError(f"'{name}' must be a number from 0 to {hi}.")
    seed = body.get("seed")
    options = GenerationOptions(max_new_tokens=max_tokens, temperature=float(temperature), top_p=float(top_p),
                                seed=seed if isinstance(seed, int) else None)
    return parsed, options, bool(body.get("stream", False))


def create_app(backend: ChatBackend, *, model_name: str, defaults: GenerationOptions,
               api_key: str = "") -> web.Application:
    async def check_key(request: web.Request) -> web.Response | None:
        if api_key and request.headers.get("Authorization") != f"Bearer {api_key}":
            return _error(401, "Missing or wrong API key.")
        return None

    async def models(request: web.Request) -> web.Response:
        return await check_key(request) or web.json_response(
            {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "local"}]})

    async def completions(request: web.Request) -> web.StreamResponse:
        if denied := await check_key(request):
            return denied
        try:
            messages, options, stream = _parse_request(await request.json(), defaults)
        except json.JSONDecodeError as exc:
            return _error(400, f"The body is not valid JSON ({exc}).")
        except ValueError as exc:
            return _error(400, str(exc))
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(delta: dict[str, str], finish: str | None) -> bytes:
            event = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model_name,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(event)}\n\n".encode()

        if not stream:
            try:
                text = await backend.complete(messages, options)
            except AssistantError as exc:
                return _error(400, str(exc))
            return web.json_response({"id": ident, "object": "chat.completion", "created": created,
                                      "model": model_name, "choices": [{
                                          "index": 0, "message": {"role": "assistant", "content": text},
                                          "finish_reason": "stop"}]})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        await response.write(chunk({"role": "assistant"}, None))
        try:
            async for delta in backend.stream(messages, options):
                await response.write(chunk({"content": delta}, None))
            await response.write(chunk({}, "stop"))
        except AssistantError as exc:
            await response.write(f"data: {json.dumps({'error': {'message': str(exc)}})}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", completions)
    return app
