"""A job's progress message outlives the bot: after a restart the new bot finds the message it was
editing (remembered next to the database) and finishes it, with no interaction token involved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assistant.store import Store
from tests.discord.conftest import bot_config, running_bot
from tests.fakediscord import FakeDiscord

pytestmark = [pytest.mark.slow]


async def test_a_restarted_bot_resumes_editing_the_progress_message(tmp_path, repo_config, backend):
    async with FakeDiscord() as server:
        config = bot_config(tmp_path, repo_config, server)
        with Store.open(config.storage.database) as store:  # what the bot before the restart left behind
            store.create_job("job-1", kind="train", spec={"data": ["facts"]}, device="cpu",
                             out_dir=str(config.storage.runs_dir / "job-1"))
            store.update_job("job-1", state="running")
            store.update_job("job-1", state="failed", error="could not start: No space left on device")
        progress = server.world.create_message(server.general, server.bot, "Training job `job-1` queued on facts…")
        watched = Path(config.storage.database).parent / "training-messages.json"
        watched.write_text(json.dumps({"job-1": [server.general.id, progress.id]}))
        async with running_bot(server, config, backend):
            await server.wait_until(lambda: "No space left" in progress.content, timeout=60,
                                    what="the progress message to be finished")
        assert progress.content.startswith("Training `job-1` failed")
        assert json.loads(watched.read_text()) == {}
