"""`persona set TEXT` / `persona show` / `persona clear` — the system prompt of a channel or server.

Admins set it for the channel they type in (threads under it inherit it, a thread may have its
own), or for the whole server with `--server`; voice calls use the voice channel's persona,
else the server's. `show` is open to everyone: people should know what the bot was told to be.
"""

from __future__ import annotations

import asyncio
import time

import nextcord
from nextcord.ext import commands

from assistant.discord.invocation import Invocation
from assistant.discord.services import BotServices
from assistant.errors import AssistantError
from assistant.personas import channel_scope, check_persona, describe_scope, guild_scope

ACTIONS = ("set", "show", "clear")
SERVER_FLAG = "--server"


def split_server_flag(text: str) -> tuple[bool, str]:
    """`--server` anywhere as its own word selects the server scope; the rest is the text."""
    words = text.split(" ")
    server = SERVER_FLAG in (w.strip() for w in words)
    return server, " ".join(w for w in words if w.strip() != SERVER_FLAG).strip()


class Persona(commands.Cog):
    def __init__(self, bot: commands.Bot, services: BotServices) -> None:
        self.bot = bot
        self.services = services

    def _scope(self, inv: Invocation, server: bool) -> str:
        if server:
            if inv.guild is None:
                raise AssistantError("`--server` works in a server channel; in a DM, set the persona without it.")
            return guild_scope(inv.guild.id)
        return channel_scope(inv.channel.id)

    async def persona(self, inv: Invocation, action: str, text: str, server: bool) -> None:
        action = action.strip().lower()
        if action not in ACTIONS:
            raise AssistantError(f"Use `persona set TEXT`, `persona show` or `persona clear` "
                                 f"(add `{SERVER_FLAG}` for the whole server).")
        if action == "show":
            await self.show(inv)
            return
        self.services.require_admin(inv.user.id, inv.role_ids, "change the persona")
        scope = self._scope(inv, server)
        if action == "clear":
            existed = await asyncio.to_thread(self.services.store.clear_persona, scope)
            await self._refresh_call(inv.guild)
            note = "cleared" if existed else "was not set"
            await inv.send(f"The persona of {describe_scope(scope)} {note}; " + await self._effective(inv))
            return
        tokenizer = getattr(self.services.backend, "tokenizer", None)
        special = list(getattr(tokenizer, "all_special_tokens", []) or [])
        persona = check_persona(text, special)
        await asyncio.to_thread(self.services.store.set_persona, scope, persona, set_by=str(inv.user.id))
        await self._refresh_call(inv.guild)
        await inv.send(f"Persona of {describe_scope(scope)} set. Answers here now follow it:\n> "
                       + persona[:300].replace("\n", "\n> ") + ("…" if len(persona) > 300 else ""))

    async def _refresh_call(self, guild: nextcord.Guild | None) -> None:
        calls = self.services.calls
        if calls is not None and guild is not None:
            await calls.refresh_persona(guild.id)

    async def _effective(self, inv: Invocation) -> str:
        persona = await self.services.persona_for(inv.channel)
        if persona is None:
            return "answers here use the default system prompt from config.toml."
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(persona.set_at))
        return (f"answers here follow the persona of {describe_scope(persona.scope)} "
                f"(set by <@{persona.set_by}> on {when}).")

    async def show(self, inv: Invocation) -> None:
        prompt = await self.services.system_prompt_for(inv.channel)
        await inv.send_long("Here, " + await self._effective(inv) + "\n> " + prompt.replace("\n", "\n> "))

    @commands.command(name="persona", help="The bot's persona here: persona show | set [--server] TEXT | "
                                            "clear [--server] (set/clear: admins).")
    async def persona_prefix(self, ctx: commands.Context, action: str = "show", *, text: str = "") -> None:
        server, rest = split_server_flag(text)
        await self.persona(Invocation.from_context(ctx), action, rest, server)

    @nextcord.slash_command(name="persona", description="Show or (admins) set the bot's persona in this channel.")
    async def persona_slash(self, interaction: nextcord.Interaction,
                            action: str = nextcord.SlashOption(description="what to do", choices=list(ACTIONS),
                                                               required=False, default="show"),
                            text: str = nextcord.SlashOption(description="the persona (for set)", required=False,
                                                             default=""),
                            server: bool = nextcord.SlashOption(description="for the whole server",
                                                                required=False, default=False)) -> None:
        await self.persona(await Invocation.from_interaction(interaction), action, text, server)


COGS = (Persona,)
