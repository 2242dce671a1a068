"""The `openai` backend against a real OpenAI-compatible server: our own `serve` app on the real model."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from assistant.errors import BackendError
from assistant.llm.base import GenerationOptions, Message
from assistant.llm.engine import TransformersEngine
from assistant.llm.loader import load_causal_lm
from assistant.llm.openai_backend import OpenAIBackend
from assistant.openai_server import create_app
from tests.conftest import REPO

pytestmark = pytest.mark.slow

QUESTION: list[Message] = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def engine(models_dir: Path) -> Iterator[TransformersEngine]:
    eng = TransformersEngine(lambda: load_causal_lm("smollm2-135m-instruct", models_dir))
    yield eng
    eng.close()


@pytest.fixture
async def server(engine: TransformersEngine) -> AsyncIterator[TestServer]:
    app = create_app(engine, model_name="local", defaults=GenerationOptions(max_new_tokens=24), api_key="k3y")
    async with TestServer(app, host="127.0.0.1") as srv:
        yield srv


async def test_streamed_answer_equals_local_answer(server: TestServer, engine: TransformersEngine) -> None:
    backend = OpenAIBackend(str(server.make_url("/v1")), "local", api_key="k3y")
    try:
        options = GenerationOptions(max_new_tokens=24)
        deltas = [d async for d in backend.stream(QUESTION, options)]
        assert len(deltas) > 1
        assert "".join(deltas) == await engine.complete(QUESTION, options)
        assert "Paris" in "".join(deltas)
    finally:
        await backend.aclose()


async def test_non_streamed_and_models_endpoints(server: TestServer) -> None:
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer k3y"}) as http:
        async with http.get(server.make_url("/v1/models")) as r:
            assert (await r.json())["data"][0]["id"] == "local"
        body = {"messages": QUESTION, "max_tokens": 12}
        async with http.post(server.make_url("/v1/chat/completions"), json=body) as r:
            assert r.status == 200
            assert "Paris" in (await r.json())["choices"][0]["message"]["content"]


@pytest.mark.parametrize("body, words", [
    ({"messages": []}, "non-empty"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "role"),
    ({"messages": QUESTION, "max_tokens": 0}, "max_tokens"),
    ({"messages": QUESTION, "temperature": "hot"}, "temperature"),
])
async def test_server_rejects_bad_requests(server: TestServer, body: dict, words: str) -> None:
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer k3y"}) as http:
        async with http.post(server.make_url("/v1/chat/completions"), json=body) as r:
            assert r.status == 400
            assert words in (await r.json())["error"]["message"]
        async with http.post(server.make_url("/v1/chat/completions"), data=b"{not json",
                             headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400


async def test_client_errors_are_friendly(server: TestServer) -> None:
    wrong_key = OpenAIBackend(str(server.make_url("/v1")), "local", api_key="nope")
    with pytest.raises(BackendError, match="401"):
        await wrong_key.complete(QUESTION)
    await wrong_key.aclose()
    nobody = OpenAIBackend("http://127.0.0.1:9/v1", "local")
    with pytest.raises(BackendError, match="Cannot reach"):
        await nobody.complete(QUESTION)
    await nobody.aclose()


async def test_ask_cli_with_openai_backend(server: TestServer, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[model]\nbackend = "openai"\nopenai_base_url = "{server.make_url("/v1")}"\n'
                      'openai_api_key_env = "TEST_KEY"\nmax_new_tokens = 24\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "assistant", "--config", str(config), "ask", "What is the capital of France?",
        cwd=REPO, env={"TEST_KEY": "k3y", "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    assert "Paris" in out.decode()


async def test_hostile_requests_are_refused_cleanly(server: TestServer, engine: TransformersEngine) -> None:
    """What any web page (DNS rebinding) or local program can send: never a 500, never unbounded work."""
    url = server.make_url("/v1/chat/completions")
    auth = {"Authorization": "Bearer k3y", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        deep = b"[" * 100_000 + b"]" * 100_000
        async with http.post(url, data=deep, headers=auth) as r:
            assert r.status == 400, await r.text()
        async with http.post(url, data=b'{"messages": []}', headers={"Authorization": "Bearer k3y"}) as r:
            assert r.status == 415
        for rebound in ("evil.example:80", "127.0.0.1.evil.example", "127.attacker.example:8080"):
            async with http.post(url, json={"messages": QUESTION}, headers={**auth, "Host": rebound}) as r:
                assert r.status == 421, rebound
        async with http.post(url, json={"messages": QUESTION}, headers={**auth, "Authorization": "Bearer k3x"}) as r:
            assert r.status == 401
        async with http.post(url, data=b"x" * (2 * 1024 * 1024), headers=auth) as r:
            assert r.status == 413
        long_task = [{"role": "user", "content": "Count from 1 to 500, one number per line."}]
        async with http.post(url, json={"messages": long_task, "max_tokens": 30000}, headers=auth) as r:
            assert r.status == 200
            text = (await r.json())["choices"][0]["message"]["content"]
    assert 0 < len(engine.tokenizer(text)["input_ids"]) <= 24 + 1  # clamped to the server's max_new_tokens


async def test_concurrent_requests_beyond_the_bound_get_429(engine: TransformersEngine) -> None:
    app = create_app(engine, model_name="local", defaults=GenerationOptions(max_new_tokens=8), max_concurrent=2)
    async with TestServer(app, host="127.0.0.1") as srv, aiohttp.ClientSession() as http:
        async def one() -> int:
            async with http.post(srv.make_url("/v1/chat/completions"), json={"messages": QUESTION}) as r:
                await r.read()
                return r.status

        codes = await asyncio.gather(*(one() for _ in range(6)))
    assert codes.count(200) >= 2 and 429 in codes and set(codes) <= {200, 429}


def test_serve_refuses_a_public_bind_without_a_key(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    env = {k: v for k, v in __import__("os").environ.items() if k != "OPENAI_API_KEY"}
    result = run_cli("serve", "--host", "0.0.0.0", "--port", "0", env=env, timeout=120)
    assert result.returncode == 2 and "API key" in result.stdout + result.stderr


@pytest.mark.parametrize("host, loopback", [
    ("localhost", True), ("LOCALHOST.", True), ("127.0.0.1", True), ("127.3.4.5", True), ("::1", True),
    ("127.0.0.1.evil.example", False), ("127.attacker.example", False), ("0.0.0.0", False),
    ("192.168.1.2", False), ("evil.example", False), ("", False),
])
def test_only_real_loopback_names_count_as_loopback(host: str, loopback: bool) -> None:
    """A rebinding domain may start with "127."; only an address that is loopback, or localhost, passes."""
    from assistant.openai_server import is_loopback

    assert is_loopback(host) is loopback
