"""`adapter` (list / activate NAME / rollback) and `test` (active adapter vs base on test data).

Switching adapters loads them into the running engine (no reload); `test` asks the engine
for both answers at once (each batch row names its adapter), so it needs no second copy
of the model.
"""

from __future__ import annotations

import asyncio
import logging

import nextcord
from nextcord.ext import commands

from assistant.discord import attachments
from assistant.discord.cogs.files import matching
from assistant.discord.invocation import Invocation
from assistant.discord.services import BotServices
from assistant.errors import AssistantError, DatasetError
from assistant.llm import default_options
from assistant.llm.base import ACTIVE_ADAPTER, Message

logger = logging.getLogger(__name__)

TEST_REPLY_TOKENS = 48
ACTIONS = ("list", "activate", "rollback", "base")


class Adapters(commands.Cog):
    def __init__(self, bot: commands.Bot, services: BotServices) -> None:
        self.bot = bot
        self.services = services
        services.adapter_switch = self

    # -- adapter ----------------------------------------------------------------------------
    async def activate(self, inv: Invocation, name: str, *, force: bool = False) -> None:
        self.services.require_admin(inv.user.id, inv.role_ids, "switch adapters")
        active = await self.services.adapters.activate(name or None, force=force)
        await inv.send(f"Now answering with adapter `{active}`." if active else "Now answering with the base model.")

    async def adapter(self, inv: Invocation, action: str, name: str, force: bool = False) -> None:
        action = (action or "list").strip().lower()
        manager = self.services.adapters
        if action == "list":
            names = await asyncio.to_thread(manager.names)
            active = manager.active
            lines = [f"{'▶' if n == active else '•'} `{n}`" for n in names]
            await inv.send_long("Adapters:\n" + ("\n".join(lines) if lines else "none trained yet") +
                                f"\nActive: `{active or 'base model'}`.")
        elif action == "activate":
            if not name.strip():
                raise AssistantError("Name the adapter to activate; `adapter list` shows them.")
            await self.activate(inv, name.strip(), force=force)
        elif action == "base":
            await self.activate(inv, "")
        elif action == "rollback":
            self.services.require_admin(inv.user.id, inv.role_ids, "switch adapters")
            back = await manager.rollback()
            await inv.send(f"Rolled back to `{back}`." if back else "Rolled back to the base model.")
        else:
            raise AssistantError(f"Unknown action {action!r}; use one of: {', '.join(ACTIONS)}.")

    @commands.command(name="adapter", help="LoRA adapters: adapter list | activate NAME [force] | rollback | base "
                                           "(admins).")
    async def adapter_prefix(self, ctx: commands.Context, action: str = "list", name: str = "",
                             override: str = "") -> None:
        inv = Invocation.from_context(ctx)
        if action.lower() != "list":
            self.services.require_admin(inv.user.id, inv.role_ids, "switch adapters")
        if override and override.lower() != "force":
            raise AssistantError("The only word after the adapter name is `force` (activate despite the gate).")
        await self.adapter(inv, action, name, force=override.lower() == "force")

    @nextcord.slash_command(name="adapter", description="List, activate or roll back LoRA adapters (admins).")
    async def adapter_slash(
        self, interaction: nextcord.Interaction,
        action: str = nextcord.SlashOption(description="what to do", choices=list(ACTIONS), required=False,
                                           default="list"),
        name: str = nextcord.SlashOption(description="adapter (for activate)", required=False, default=""),
    ) -> None:
        inv = await Invocation.from_interaction(interaction)
        if action != "list":
            self.services.require_admin(inv.user.id, inv.role_ids, "switch adapters")
        await self.adapter(inv, action, name)

    @adapter_slash.on_autocomplete("name")
    async def adapter_names(self, interaction: nextcord.Interaction, name: str) -> None:
        names = await asyncio.to_thread(self.services.adapters.names)
        await interaction.response.send_autocomplete(matching(names, name))

    # -- test -------------------------------------------------------------------------------
    async def _answer(self, prompt: str, adapter: object) -> str:
        config = self.services.config
        system: list[Message] = [{"role": "system", "content": config.model.system_prompt}] \
            if config.model.system_prompt else []
        options = default_options(config.model, max_new_tokens=min(TEST_REPLY_TOKENS, config.model.max_new_tokens),
                                  temperature=0.0, adapter=adapter)
        text = await self.services.backend.complete([*system, {"role": "user", "content": prompt}], options)
        return text.strip()

    async def _test_data(self, inv: Invocation, data: str) -> tuple[bytes, str]:
        """The raw test data, refused on size before it is read (typed text is capped the same way)."""
        limit = self.services.config.security.test_max_bytes
        if inv.attachments:
            raw = await attachments.fetch(self.services.http(), inv.attachments[0],
                                          max_bytes=min(limit, self.services.config.security.max_attachment_bytes),
                                          kind="data")
            return raw, inv.attachments[0].filename
        if data.strip():
            raw = data.strip().strip("`").removeprefix("json").encode("utf-8")
            if len(raw) > limit:
                raise DatasetError(f"That test data is {len(raw) / 1024:.0f} KiB; the limit is {limit / 1024:.0f} KiB.")
            return raw, "your test data"
        raise DatasetError('Give test data as JSON, e.g. `test [{"prompt": "2+2?", "expected": "4"}]`, '
                           "or attach a .json/.jsonl file.")

    async def test(self, inv: Invocation, data: str) -> None:
        from finetune.evaluate import matches, parse_eval

        raw, source = await self._test_data(inv, data)
        # Parsed off the event loop with the item cap applied while reading: a huge payload costs
        # this one user a refusal, never every user a stalled bot.
        items = await asyncio.to_thread(parse_eval, raw, source, max_items=self.services.config.security.test_max_items)
        active = self.services.backend.active_adapter
        # One of the bot's generation slots for the whole run, and at most one engine batch of its
        # questions in flight: a `test` shares the engine with everyone instead of filling its queue.
        async with self.services.limits.generating():
            room = asyncio.Semaphore(self.services.config.model.max_batch_size)

            async def answer(prompt: str, adapter: object) -> str:
                async with room:
                    return await self._answer(prompt, adapter)

            base = await asyncio.gather(*(answer(i.prompt, None) for i in items))
            tuned = await asyncio.gather(*(answer(i.prompt, ACTIVE_ADAPTER) for i in items)) if active else base
        lines = [f"Test: {len(items)} items; adapter `{active or 'none (base model only)'}`."]
        base_ok = tuned_ok = 0
        for n, (item, b, t) in enumerate(zip(items, base, tuned), start=1):
            b_ok, t_ok = matches(b, item.expected, item.match), matches(t, item.expected, item.match)
            base_ok, tuned_ok = base_ok + b_ok, tuned_ok + t_ok
            lines.append(f"{n}. {item.prompt[:200]}\n   expected: {item.expected[:200]}\n"
                         f"   base {'✅' if b_ok else '❌'}: {b[:300]}")
            if active:
                lines.append(f"   adapter {'✅' if t_ok else '❌'}: {t[:300]}")
        lines.append(f"Score: base {base_ok}/{len(items)}" + (f", adapter {tuned_ok}/{len(items)}." if active else "."))
        await inv.send_long("\n".join(lines))

    @commands.command(name="test", help='Compare adapter and base: test [{"prompt": ..., "expected": ...}] or attach JSON.')
    async def test_prefix(self, ctx: commands.Context, *, data: str = "") -> None:
        await self.test(Invocation.from_context(ctx), data)

    @nextcord.slash_command(name="test", description="Compare the active adapter with the base model on test data.")
    async def test_slash(
        self, interaction: nextcord.Interaction,
        data: str = nextcord.SlashOption(description='JSON: [{"prompt": ..., "expected": ...}]', required=False,
                                         default=""),
        file: nextcord.Attachment = nextcord.SlashOption(description="test data file (JSON/JSONL)", required=False,
                                                         default=None),
    ) -> None:
        await self.test(await Invocation.from_interaction(interaction, [file] if file else []), data)


COGS = (Adapters,)
