"""The bot on the llama.cpp engine (what `backend = "auto"` picks on a CPU), through the fake Discord."""

from __future__ import annotations

import pytest

from tests.discord.conftest import TEST_MODEL, bot_config, running_bot
from tests.fakediscord import FakeDiscord
from tests.llamacpp_support import require_llama_cpp

pytestmark = [pytest.mark.slow]


async def test_the_bot_answers_paris_through_llama_cpp(tmp_path, repo_config):
    require_llama_cpp()
    import dataclasses

    from assistant.llm import create_backend
    from assistant.llm.llamacpp_engine import LlamaCppEngine

    model = dataclasses.replace(repo_config.model, name=TEST_MODEL, backend="auto", device="cpu")
    backend = create_backend(model, repo_config.storage.models_dir)
    assert isinstance(backend, LlamaCppEngine)  # "auto" on this CPU, with the model's GGUF provisioned
    async with FakeDiscord() as server:
        config = bot_config(tmp_path, repo_config, server, model={"backend": "auto"})
        async with running_bot(server, config, backend):
            server.send_message(server.general, server.bob, f"<@{server.bot.id}> What is the capital of France?")
            reply = await server.wait_for_bot_message(server.general, timeout=60)
            await server.wait_until(lambda: not reply.content.endswith("▌"), timeout=120, what="the answer")
            assert "Paris" in reply.content
    await backend.aclose()
