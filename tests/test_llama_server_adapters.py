"""How our adapters are named to an operator-run llama-server: ids from GET /lora-adapters, every id's
scale on each request (an omitted adapter would keep whatever scale it had).

The server below answers llama-server's documented endpoints with what the request selected; the
real server, started by us, is exercised in tests/finetune/test_llama_server.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from assistant.errors import AdapterError
from assistant.llm.base import GenerationOptions, Message
from assistant.llm.openai_backend import OpenAIBackend

HELLO: list[Message] = [{"role": "user", "content": "hello"}]


class FakeLlamaServer:
    def __init__(self, adapters: list[Path]) -> None:
        self.adapters = adapters
        self.requests: list[dict[str, Any]] = []

    async def models(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "SmolLM2-135M-Instruct.Q4_1.gguf"}]})

    async def lora(self, _: web.Request) -> web.Response:
        return web.json_response([{"id": i, "path": str(p), "scale": 0.0} for i, p in enumerate(self.adapters)])

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        on = [a["id"] for a in body.get("lora", []) if a["scale"] > 0]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        event = {"choices": [{"delta": {"content": f"adapters {on}"}}]}
        await response.write(f"data: {json.dumps(event)}\n\ndata: [DONE]\n\n".encode())
        return response

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/lora-adapters", self.lora)
        app.router.add_post("/v1/chat/completions", self.chat)
        return app


def adapter(runs: Path, name: str) -> Path:
    folder = runs / name / "adapter"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "smollm2-135m-instruct"}))
    (folder / "finetune.json").write_text(json.dumps({"base_model": {"name": "smollm2-135m-instruct"}}))
    return folder


def to_gguf(folder: Path) -> Path:
    """Stands in for the real peft→GGUF converter (tested on a trained adapter elsewhere)."""
    out = folder / "adapter.gguf"
    out.write_bytes(b"GGUF")
    return out


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[FakeLlamaServer, TestServer, Path]]:
    runs = tmp_path / "runs"
    fake = FakeLlamaServer([runs / "zeta" / "adapter" / "adapter.gguf", runs / "alpha" / "adapter" / "adapter.gguf"])
    async with TestServer(fake.app(), host="127.0.0.1") as srv:
        yield fake, srv, runs


async def answer(backend: OpenAIBackend, **options: Any) -> str:
    return "".join([d async for d in backend.stream(HELLO, GenerationOptions(max_new_tokens=4, **options))])


async def test_every_adapter_gets_an_explicit_scale(server) -> None:
    fake, srv, runs = server
    backend = OpenAIBackend(str(srv.make_url("/v1")), "local", server="llama-server", convert=to_gguf)
    try:
        await backend.load_adapter("alpha", str(adapter(runs, "alpha")))
        backend.set_active_adapter("alpha")
        assert await answer(backend) == "adapters [1]"
        assert fake.requests[-1]["lora"] == [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 1.0}]
        assert await answer(backend, adapter=None) == "adapters []"
        assert fake.requests[-1]["lora"] == [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 0.0}], "never an empty list"
    finally:
        await backend.aclose()


async def test_an_adapter_the_server_was_not_started_with_is_refused_with_the_flag_to_add(server) -> None:
    _, srv, runs = server
    backend = OpenAIBackend(str(srv.make_url("/v1")), "local", server="llama-server", convert=to_gguf)
    try:
        with pytest.raises(AdapterError, match="--lora .*beta.*adapter.gguf.*manage_server"):
            await backend.load_adapter("beta", str(adapter(runs, "beta")))
        assert backend.adapters() == []
        without_gguf = OpenAIBackend(str(srv.make_url("/v1")), "local", server="llama-server")
        with pytest.raises(AdapterError, match="model's GGUF"):
            await without_gguf.load_adapter("alpha", str(adapter(runs, "alpha")))
        await without_gguf.aclose()
    finally:
        await backend.aclose()
