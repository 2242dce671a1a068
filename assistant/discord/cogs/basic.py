"""`hi`, `instruction` (the shipped guide) and `stats` (latency of recent text and voice answers)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nextcord
from nextcord.ext import commands

from assistant.discord.invocation import Invocation
from assistant.discord.services import BotServices
from assistant.personas import describe_scope
from assistant.errors import AssistantError

REPO = Path(__file__).resolve().parents[3]


class Basic(commands.Cog):
    def __init__(self, bot: commands.Bot, services: BotServices) -> None:
        self.bot = bot
        self.services = services

    # -- hi ---------------------------------------------------------------------------------
    async def hi(self, inv: Invocation) -> None:
        await inv.send("HI! Mention me or reply to me to talk; type "
                       f"`{self.services.config.discord.command_prefix}instruction` for the guide.")

    @commands.command(name="hi", help="Say hello.")
    async def hi_prefix(self, ctx: commands.Context) -> None:
        await self.hi(Invocation.from_context(ctx))

    @nextcord.slash_command(name="hi", description="Say hello to the assistant.")
    async def hi_slash(self, interaction: nextcord.Interaction) -> None:
        await self.hi(await Invocation.from_interaction(interaction))

    # -- instruction ------------------------------------------------------------------------
    def instruction_path(self) -> Path:
        path = Path(self.services.config.discord.instruction_file)
        if not path.is_absolute():
            base = self.services.config.source.parent if self.services.config.source else REPO
            path = base / path if (base / path).is_file() else REPO / path
        return path

    async def instruction(self, inv: Invocation) -> None:
        path = self.instruction_path()
        try:
            text = await asyncio.to_thread(path.read_text, encoding="utf-8")
        except OSError:
            raise AssistantError(f"The guide file {path.name} is missing; check discord.instruction_file.") from None
        await inv.send_long(text.replace("{prefix}", self.services.config.discord.command_prefix))

    @commands.command(name="instruction", help="Show the bot's guide.")
    async def instruction_prefix(self, ctx: commands.Context) -> None:
        await self.instruction(Invocation.from_context(ctx))

    @nextcord.slash_command(name="instruction", description="Show how to use the assistant.")
    async def instruction_slash(self, interaction: nextcord.Interaction) -> None:
        await self.instruction(await Invocation.from_interaction(interaction))

    # -- stats ------------------------------------------------------------------------------
    async def stats(self, inv: Invocation) -> None:
        backend = self.services.backend
        adapter = backend.active_adapter or "base model"
        persona = await self.services.persona_for(inv.channel)
        here = (f"Persona here: {describe_scope(persona.scope)}'s, set by <@{persona.set_by}>." if persona is not None
                else "Persona here: the default system prompt.")
        await inv.send_long(f"Model: {self.services.config.model.name} ({adapter}). {here}\n"
                            + self.services.latency.summary() + "\n" + self.services.voice_latency.format())

    @commands.command(name="stats", help="Latency of recent answers (p50/p95) and tokens per second.")
    async def stats_prefix(self, ctx: commands.Context) -> None:
        await self.stats(Invocation.from_context(ctx))

    @nextcord.slash_command(name="stats", description="Latency of recent answers and generation speed.")
    async def stats_slash(self, interaction: nextcord.Interaction) -> None:
        await self.stats(await Invocation.from_interaction(interaction))
COGS = (Basic,)
