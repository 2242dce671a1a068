"""Our adapters on vLLM, against a local HTTP server that implements exactly vLLM's documented LoRA endpoints.

vLLM itself needs a GPU, which this machine does not have: the server below speaks the
documented API (`GET /v1/models` with `parent` for adapters, `POST /v1/load_lora_adapter`,
`POST /v1/unload_lora_adapter`, chat completions selecting the adapter by `model`) and checks
what a real vLLM would: the adapter folder exists where the server looks for it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from assistant.adapters import AdapterManager
from assistant.errors import AdapterError
from assistant.llm.base import GenerationOptions, Message
from assistant.llm.openai_backend import OpenAIBackend
from assistant.llm.served_adapters import normalised_model_name

BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"
SERVER_RUNS = "/srv/assistant-runs"
HELLO: list[Message] = [{"role": "user", "content": "hello"}]


class FakeVllm:
    def __init__(self, runs: Path, base: str = BASE) -> None:
        self.runs, self.base = runs, base
        self.loaded: dict[str, str] = {}
        self.calls: list[tuple[str, Any]] = []

    def local(self, server_path: str) -> Path | None:
        """Where the server's path lies on this machine; None outside the folder it can see."""
        path = PurePosixPath(server_path)
        return self.runs / path.relative_to(SERVER_RUNS) if path.is_relative_to(SERVER_RUNS) else None

    async def models(self, _: web.Request) -> web.Response:
        data = [{"id": self.base, "object": "model", "root": self.base, "parent": None}]
        data += [{"id": n, "object": "model", "root": p, "parent": self.base} for n, p in self.loaded.items()]
        return web.json_response({"object": "list", "data": data})

    async def load(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append(("load", body))
        if body["lora_name"] in self.loaded:
            return web.json_response({"message": f"The lora adapter '{body['lora_name']}' has already been loaded."},
                                     status=400)
        local = self.local(body["lora_path"])
        if local is None or not (local / "adapter_config.json").is_file():
            return web.json_response({"message": "No adapter found"}, status=404)
        self.loaded[body["lora_name"]] = body["lora_path"]
        return web.Response(text=f"Success: LoRA adapter '{body['lora_name']}' added successfully.")

    async def unload(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append(("unload", body))
        self.loaded.pop(body["lora_name"], None)
        return web.Response(text="Success")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.calls.append(("chat", body["model"]))
        if body["model"] != self.base and body["model"] not in self.loaded:
            return web.json_response({"error": {"message": f"The model `{body['model']}` does not exist."}},
                                     status=404)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for word in ("served ", "by ", body["model"]):
            event = {"choices": [{"delta": {"content": word}}]}
            await response.write(f"data: {json.dumps(event)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/load_lora_adapter", self.load)
        app.router.add_post("/v1/unload_lora_adapter", self.unload)
        app.router.add_post("/v1/chat/completions", self.chat)
        return app


def make_adapter(runs: Path, name: str, *, base: str = "smollm2-135m-instruct",
                 modules_to_save: list[str] | None = None) -> Path:
    folder = runs / name / "adapter"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 8, "base_model_name_or_path": f"/models/{base}",
         "modules_to_save": modules_to_save}), encoding="utf-8")
    (folder / "finetune.json").write_text(json.dumps({"base_model": {"name": base, "sha256": None}}),
                                          encoding="utf-8")
    return folder


@pytest.fixture
async def vllm(tmp_path: Path) -> AsyncIterator[tuple[FakeVllm, TestServer]]:
    fake = FakeVllm(tmp_path / "runs")
    async with TestServer(fake.app(), host="127.0.0.1") as server:
        yield fake, server


async def answer(backend: OpenAIBackend, **options: Any) -> str:
    return "".join([d async for d in backend.stream(HELLO, GenerationOptions(max_new_tokens=8, **options))])


async def test_adapters_are_loaded_on_the_server_and_named_per_request(vllm, tmp_path: Path) -> None:
    fake, server = vllm
    make_adapter(fake.runs, "facts")
    backend = OpenAIBackend(str(server.make_url("/v1")), BASE, server="vllm", adapter_dir=SERVER_RUNS)
    manager = AdapterManager(fake.runs, backend, base_source="smollm2-135m-instruct")
    try:
        assert backend.supports_adapters
        await manager.activate("facts")
        assert fake.loaded == {"facts": f"{SERVER_RUNS}/facts/adapter"}
        assert await answer(backend) == "served by facts"  # the active adapter
        assert await answer(backend, adapter=None) == f"served by {BASE}"  # the base, side by side
        await manager.activate(None)
        assert await answer(backend) == f"served by {BASE}"
    finally:
        await backend.aclose()
    # The bot restarts; the server still has "facts" from before: it is unloaded first, so a
    # retrained adapter of that name is read anew.
    backend = OpenAIBackend(str(server.make_url("/v1")), BASE, server="vllm", adapter_dir=SERVER_RUNS)
    try:
        await AdapterManager(fake.runs, backend, base_source="smollm2-135m-instruct").activate("facts")
        assert [c[0] for c in fake.calls if c[0] != "chat"][-2:] == ["unload", "load"]
        assert await answer(backend) == "served by facts"
    finally:
        await backend.aclose()


async def test_adapters_that_vllm_cannot_serve_are_refused_with_the_reason(vllm) -> None:
    fake, server = vllm
    backend = OpenAIBackend(str(server.make_url("/v1")), BASE, server="vllm", adapter_dir=SERVER_RUNS)
    try:
        whole = make_adapter(fake.runs, "whole", modules_to_save=["lm_head"])
        with pytest.raises(AdapterError, match="modules_to_save empty"):
            await backend.load_adapter("whole", str(whole))
        other = make_adapter(fake.runs, "qwen-facts", base="Qwen2.5-Coder-0.5B-Instruct")
        with pytest.raises(AdapterError, match="trained on qwen2.5-coder-0.5b-instruct.*serves smollm2-135m-instruct"):
            await backend.load_adapter("qwen-facts", str(other))
        assert not [c for c in fake.calls if c[0] == "load"], "nothing reaches the server"
        missing = fake.runs / "ghost" / "adapter"
        make_adapter(fake.runs, "ghost")
        backend._served.adapter_dir = "/elsewhere"  # type: ignore[union-attr]  # the server cannot see it
        with pytest.raises(AdapterError, match="could not load.*openai_adapter_dir"):
            await backend.load_adapter("ghost", str(missing))
    finally:
        await backend.aclose()


async def test_a_generic_server_refuses_adapters_clearly(vllm) -> None:
    fake, server = vllm
    backend = OpenAIBackend(str(server.make_url("/v1")), BASE)
    try:
        assert not backend.supports_adapters
        with pytest.raises(AdapterError, match='openai_server = "vllm"'):
            await backend.load_adapter("facts", str(make_adapter(fake.runs, "facts")))
        assert await answer(backend) == f"served by {BASE}"
    finally:
        await backend.aclose()


@pytest.mark.parametrize(("a", "b"), [("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2-135m-instruct"),
                                      ("/models/smollm2-135m-instruct/", "SmolLM2-135M-Instruct.Q4_1.gguf"),
                                      ("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "Qwen/Qwen2.5-Coder-0.5B-Instruct"),
                                      ("models/llm/smollm2-135m-instruct/model.gguf", "smollm2-135m-instruct")])
def test_model_names_normalise(a: str, b: str) -> None:
    assert normalised_model_name(a) == normalised_model_name(b)


def test_different_models_stay_different() -> None:
    assert normalised_model_name("SmolLM2-360M-Instruct") != normalised_model_name("SmolLM2-135M-Instruct")
