"""pytest fixtures; import them into a test module (or a conftest):

    from tests.fakediscord.fixtures import fake_discord  # noqa: F401
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from .server import FakeDiscord


@pytest_asyncio.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """A started server that nextcord points at until the test ends.

    A crash inside the fake server fails the test at teardown: the bot only saw a
    501 and may have carried on, so the bug would otherwise go unnoticed.
    """
    async with FakeDiscord() as server:
        yield server
    if server.server_errors:
        pytest.fail(f"fakediscord crashed while serving: {server.server_errors}")
