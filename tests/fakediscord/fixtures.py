"""pytest fixtures; import them into a test module or a conftest:

    from tests.fakediscord.fixtures import fake_discord  # noqa: F401
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from .server import FakeDiscord


@pytest_asyncio.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """A started server; nextcord points at it until the test ends."""
    async with FakeDiscord() as server:
        yield server
