"""Training from Discord: an attached dataset → a job with live progress → loss curve → the
Activate button switches the running engine to the new adapter; then `test` and rollback."""

from __future__ import annotations

import json

import pytest

from tests.discord.conftest import bot_config, running_bot
from tests.fakediscord import FakeDiscord
from tests.finetune import fact_data

pytestmark = [pytest.mark.slow]


async def test_train_from_attachment_then_activate_with_the_button(tmp_path, repo_config, backend):
    data = "".join(json.dumps(r) + "\n" for r in fact_data.rows()).encode("utf-8")
    async with FakeDiscord() as server:
        config = bot_config(tmp_path, repo_config, server, finetune={"save_every": 1000, "max_seq_len": 128, "batch_size": 2})
        async with running_bot(server, config, backend) as bot:
            upload = server.upload("facts.jsonl", data, "application/octet-stream")
            asked = server.send_message(server.general, server.alice, "!train 4", attachments=[upload])
            stored = await server.wait_for_bot_message(server.general, lambda m: "Dataset `facts`" in m.content,
                                                       after=asked, timeout=60)
            progress = await server.wait_for_bot_message(server.general, lambda m: "Training job" in m.content,
                                                         after=stored, timeout=60)
            done = await server.wait_until(lambda: progress if "finished" in progress.content
                                           or "failed" in progress.content else None,
                                           timeout=400, what="the training job to end")
            assert "finished" in done.content, done.content
            assert any("step" in h and "█" in h for h in done.history), done.history  # live progress edits
            assert [a.filename for a in done.attachments] == ["loss.png"]
            assert done.attachments[0].data.startswith(b"\x89PNG")
            adapter = bot.services.adapters.names()[0]
            button = done.components[0]["components"][0]
            click = server.click_button(done, button["custom_id"], user=server.bob)
            await server.wait_until(lambda: click.messages, timeout=30, what="the refusal")
            assert "Only the bot's admins" in click.messages[-1].content
            click = server.click_button(done, button["custom_id"], user=server.alice)
            await server.wait_until(lambda: click.messages, timeout=60, what="the activation")
            assert f"adapter `{adapter}`" in click.messages[-1].content
            assert bot.services.backend.active_adapter == adapter
            assert bot.services.adapters.active == adapter

            status = server.send_message(server.general, server.bob, "!status")
            assert "succeeded" in (await server.wait_for_bot_message(server.general, after=status)).content
            test = server.send_message(server.general, server.alice,
                                       '!test [{"prompt": "What is your name?", "expected": "Zorblax"}]')
            await server.wait_until(lambda: any("Score:" in m.content for m in server.bot_messages(server.general)
                                                if m.id > test.id), timeout=120, what="the test report")
            report = "".join(m.content for m in server.bot_messages(server.general) if m.id > test.id)
            assert "adapter" in report and "base" in report
            back = server.send_message(server.general, server.alice, "!adapter rollback")
            reply = await server.wait_for_bot_message(server.general, after=back, timeout=30)
            assert "base model" in reply.content and bot.services.backend.active_adapter is None
