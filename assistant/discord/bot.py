"""The Discord bot: build it from services, run it until SIGTERM/SIGINT, handle every error in one place.

`run_bot(config)` is what `assistant run` calls when the token is set. `create_bot(services)`
is what tests call with their own services, against the local Discord-compatible server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

import nextcord
import nextcord.http
from nextcord.ext import commands

from assistant.config import Config
from assistant.discord import replies
from assistant.discord.guilds import GuildGate, event_origin
from assistant.discord.limits import CommandThrottled, SlashThrottled, install_checks, slow_down
from assistant.discord.services import BotServices, build_services
from assistant.errors import AssistantError

logger = logging.getLogger(__name__)

COGS = ("basic", "chat", "feedback", "files", "training", "adapters", "voice", "voice_messages", "persona")


class AssistantBot(commands.Bot):
    """A commands.Bot whose command errors all end in one friendly reply."""

    def __init__(self, services: BotServices, **kwargs: Any) -> None:
        intents = nextcord.Intents.default()
        intents.message_content = True
        intents.voice_states = True
        # Nothing the bot writes pings anyone: model output, echoed commands and error messages
        # repeat what users typed, and "@everyone" in them must stay text. nextcord applies this
        # client default to every send, edit, interaction response, follow-up and webhook message.
        kwargs.setdefault("allowed_mentions", nextcord.AllowedMentions.none())
        super().__init__(command_prefix=services.config.discord.command_prefix, intents=intents,
                         help_command=None, **kwargs)
        self.services = services
        self.guild_gate = GuildGate(services.config.security.allowed_guild_ids)
        self._gate_tasks: set[asyncio.Task[None]] = set()
        install_checks(self, services.limits)

    def dispatch(self, event_name: str, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]  # nextcord's Client and BotBase name this parameter differently
        """Drop what users do in servers the operator did not choose, and DMs from non-members
        (see assistant.discord.guilds); every other event goes through unchanged."""
        origin = event_origin(event_name, args) if self.guild_gate.allowed else None
        if origin is None:
            super().dispatch(event_name, *args, **kwargs)
            return
        is_dm, guild_id, user_id = origin
        if not is_dm:
            if guild_id is not None and self.guild_gate.allows_guild(guild_id):
                super().dispatch(event_name, *args, **kwargs)
            return
        if user_id is None or (me := self.user) is not None and user_id == me.id:
            super().dispatch(event_name, *args, **kwargs)
            return
        known = self.guild_gate.known_member(user_id)
        if known is None:
            task = asyncio.create_task(self._dispatch_if_member(user_id, event_name, args, kwargs))
            self._gate_tasks.add(task)
            task.add_done_callback(self._gate_tasks.discard)
        elif known:
            super().dispatch(event_name, *args, **kwargs)

    async def _dispatch_if_member(self, user_id: int, event_name: str, args: tuple[Any, ...],
                                  kwargs: dict[str, Any]) -> None:
        if await self.guild_gate.is_member(self, user_id):
            super().dispatch(event_name, *args, **kwargs)
        else:
            logger.info("Ignoring a DM from %s: not a member of an allowed server", user_id)

    async def on_guild_join(self, guild: nextcord.Guild) -> None:
        await self.guild_gate.leave_if_not_allowed(guild)

    async def on_command_error(self, ctx: commands.Context, error: Exception) -> None:
        if isinstance(error, commands.CommandNotFound):
            return
        if isinstance(error, CommandThrottled):
            await slow_down(ctx.message, str(error), warn=error.warn)
            return
        if isinstance(error, commands.CommandInvokeError):
            error = error.original
        if isinstance(error, (commands.MissingRequiredArgument, commands.BadArgument, commands.TooManyArguments)):
            usage = f"{ctx.prefix}{ctx.command.qualified_name} {ctx.command.signature}" if ctx.command else ""
            await replies.report(ctx.send, AssistantError(f"{error} Usage: `{usage.strip()}`"))
            return
        await replies.report(ctx.send, error)

    async def on_application_command_error(self, interaction: nextcord.Interaction,
                                           error: Exception) -> None:
        original = getattr(error, "original", error)
        if isinstance(original, SlashThrottled):
            with contextlib.suppress(nextcord.HTTPException):
                await interaction.response.send_message(str(original), ephemeral=True)
            return
        if interaction.response.is_done():
            async def send(**kwargs: Any) -> Any:
                return await interaction.followup.send(**kwargs)
        else:
            async def send(**kwargs: Any) -> Any:
                return await interaction.response.send_message(**kwargs)
        await replies.report(send, original)

    async def on_ready(self) -> None:
        logger.info("Logged in as %s (%s)", self.user, self.user.id if self.user else "?")
        for guild in list(self.guilds):
            await self.guild_gate.leave_if_not_allowed(guild)

    async def close(self) -> None:
        voice = self.get_cog("Voice")
        if voice is not None:
            await voice.disconnect_all()  # type: ignore[attr-defined]
        await super().close()


def create_bot(services: BotServices, **kwargs: Any) -> AssistantBot:
    """The bot with every cog, sharing `services`. Extra kwargs go to nextcord (connector, timeouts)."""
    import importlib

    bot = AssistantBot(services, **kwargs)
    for name in COGS:
        module = importlib.import_module(f"assistant.discord.cogs.{name}")
        for cog_cls in getattr(module, "COGS", ()):
            bot.add_cog(cog_cls(bot, services))
    return bot


def point_at(api_base: str) -> None:
    """Make nextcord talk to `api_base` (a Discord-compatible server) instead of discord.com."""
    nextcord.http.Route.BASE = api_base.rstrip("/")


async def _serve(config: Config) -> int:
    point_at(config.discord.api_base)
    services = await build_services(config)
    bot = create_bot(services)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def stop() -> None:
        logger.info("Stopping the bot.")
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    runner = asyncio.create_task(bot.start(config.discord_token))
    waiter = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({runner, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if runner.done():
            runner.result()  # raises LoginFailure and friends
            return 0
        return 0
    except nextcord.LoginFailure:
        print(f"error: Discord refused the token in {config.discord.token_env}; "
              "copy the bot token again from the Discord developer portal.")
        return 2
    except (nextcord.HTTPException, OSError) as exc:
        print(f"error: cannot reach Discord at {config.discord.api_base} ({exc}); check the network "
              "and discord.api_base.")
        return 3
    finally:
        waiter.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if not bot.is_closed():
            await bot.close()
        if not runner.done():
            runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await services.aclose()


def run_bot(config: Config) -> int:
    """Run the bot until SIGTERM/SIGINT; returns the process exit code."""
    return asyncio.run(_serve(config))
