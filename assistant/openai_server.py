"""An OpenAI-compatible HTTP API over any ChatBackend (`assistant serve`).

Lets other tools (editors, scripts, a second assistant with `model.backend = "openai"`) use
the locally hosted model, and gives our own OpenAI client a real server to be tested against.
Implements `GET /v1/models` and `POST /v1/chat/completions` (streamed as server-sent events
or whole). Bound to 127.0.0.1 by default; any other address needs an API key (`serve` refuses
to start without one). Hardened for a port any local program (and any web page, through DNS
rebinding) can reach: the Host header must name the loopback address it is bound to, bodies
must be JSON (`Content-Type: application/json`, size-capped, malformed or deeply nested → 400),
`max_tokens` is clamped to the config's `max_new_tokens`, requests beyond
`serve.max_concurrent_requests` get 429, and the key is compared in constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import time
import uuid
from typing import Any, Awaitable, Callable

from aiohttp import web

from assistant.errors import AssistantError
from assistant.llm.base import ChatBackend, GenerationOptions, Message

ROLES = {"system", "user", "assistant"}
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    """Only a real loopback address or `localhost`: a name that merely starts with "127."
    (`127.0.0.1.evil.example`) is exactly what a DNS-rebinding page would send."""
    if host.lower().rstrip(".") in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name part of a Host header: `localhost:8080` → `localhost`, `[::1]:80` → `::1`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


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
    max_tokens = min(max_tokens, defaults.max_new_tokens)  # the operator's limit, whatever a client asks
    for name, value, hi in (("temperature", temperature, 5.0), ("top_p", top_p, 1.0)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= hi:
            raise ValueError(f"'{name}' must be a number from 0 to {hi}.")
    seed = body.get("seed")
    options = GenerationOptions(max_new_tokens=max_tokens, temperature=float(temperature), top_p=float(top_p),
                                seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None)
    return parsed, options, bool(body.get("stream", False))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _guard(*, api_key: str, bind_host: str, max_concurrent: int) -> Any:
    """Middleware: Host check (loopback binds), API key, and the bound on requests in flight."""
    in_flight = 0
    expected = f"Bearer {api_key}".encode()

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal in_flight
        if is_loopback(bind_host) and not is_loopback(host_name(request.headers.get("Host", ""))):
            return _error(421, "This server only answers requests addressed to its loopback address.")
        if api_key and not hmac.compare_digest(request.headers.get("Authorization", "").encode(), expected):
            return _error(401, "Missing or wrong API key.")
        if in_flight >= max_concurrent:
            response = _error(429, f"The server is answering {in_flight} requests; try again shortly.")
            response.headers["Retry-After"] = "1"
            return response
        in_flight += 1
        try:
            return await handler(request)
        finally:
            in_flight -= 1

    return guard


async def _read_json(request: web.Request) -> Any:
    """The request's JSON body; ValueError (a 400 for the client) when it is not usable JSON."""
    if request.content_type != "application/json":
        raise TypeError("Send the body as JSON with 'Content-Type: application/json'.")
    raw = await request.read()
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("The body is nested too deeply.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"The body is not valid JSON ({exc}).") from None


def create_app(backend: ChatBackend, *, model_name: str, defaults: GenerationOptions, api_key: str = "",
               bind_host: str = "127.0.0.1", max_concurrent: int = 8,
               max_body_bytes: int = 1024 * 1024) -> web.Application:
    """The app; `defaults.max_new_tokens` caps every request's `max_tokens`."""
    async def models(request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "local"}]})

    async def completions(request: web.Request) -> web.StreamResponse:
        try:
            messages, options, stream = _parse_request(await _read_json(request), defaults)
        except TypeError as exc:
            return _error(415, str(exc))
        except (ValueError, RecursionError) as exc:
            return _error(400, str(exc) or "The request is too deeply nested.")
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

    app = web.Application(client_max_size=max_body_bytes,
                          middlewares=[_guard(api_key=api_key, bind_host=bind_host, max_concurrent=max_concurrent)])
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", completions)
    return app
