"""Every per-user and global limit the bot applies, built once from `[security]`.

Why one place: a flood of anything a user can send (messages, commands, `correct:` replies,
reactions, live-voice utterances, `test` runs) must cost that user a polite refusal, never
everyone else their answers. Prefix and slash commands are checked globally (a nextcord
check on every command) so no command can be added without a limit.
"""

from __future__ import annotations

import contextlib
import logging
from typing import AsyncIterator

import nextcord
from nextcord.ext import commands

from assistant.config import SecurityConfig
from assistant.discord.policy import Gate, RateLimiter
from assistant.errors import NotAllowedError

logger = logging.getLogger(__name__)

SLOW_DOWN_REACTION = "⏳"
EXPENSIVE_COMMANDS = frozenset({"test"})  # each run asks the engine for up to 2 x test_max_items answers


class Busy(NotAllowedError):
    """The bot is already generating as many answers as it may (security.max_concurrent_generations)."""


class CommandThrottled(commands.CheckFailure):
    """A prefix command refused by a rate limit; `warn` is False for repeats within the window."""

    def __init__(self, message: str, *, warn: bool) -> None:
        super().__init__(message)
        self.warn = warn


class SlashThrottled(nextcord.ApplicationCheckFailure):
    """A slash command refused by a rate limit (always answered, ephemerally)."""


class Limits:
    def __init__(self, security: SecurityConfig) -> None:
        window = security.rate_limit_window_s
        self.window = window
        self.chat = RateLimiter(security.rate_limit_messages, window)
        self.commands = RateLimiter(security.command_rate_limit, window)
        self.reactions = RateLimiter(security.reaction_rate_limit, window)
        self.voice = RateLimiter(security.voice_rate_limit, window)
        self.expensive = RateLimiter(security.expensive_rate_limit, window)
        self.generations = Gate(security.max_concurrent_generations)

    def refusal(self, user_id: int, command: str | None) -> tuple[str, RateLimiter] | None:
        """Why `user_id` may not run `command` now (and the limiter that said so), or None."""
        if not self.commands.allow(user_id):
            wait = max(1, round(self.commands.retry_after(user_id)))
            return (f"You're sending me commands faster than I can answer; please wait about {wait} s "
                    "and try again.", self.commands)
        if command in EXPENSIVE_COMMANDS and not self.expensive.allow(user_id):
            wait = max(1, round(self.expensive.retry_after(user_id)))
            return (f"`{command}` runs many generations, so each person may start only "
                    f"{self.expensive.limit} per {self.window / 60:g} min; please wait about {wait} s.", self.expensive)
        return None

    @contextlib.asynccontextmanager
    async def generating(self) -> AsyncIterator[None]:
        """Hold one of the bot's generation slots, or raise Busy at once."""
        if not self.generations.try_enter():
            raise Busy("I'm answering a lot of people right now; please ask again in a minute.")
        try:
            yield
        finally:
            self.generations.leave()


def install_checks(bot: commands.Bot, limits: Limits) -> None:
    """Rate-limit every prefix and slash command of `bot` (see module docstring)."""

    async def prefix_check(ctx: commands.Context) -> bool:
        name = ctx.command.qualified_name if ctx.command is not None else None
        refused = limits.refusal(ctx.author.id, name)
        if refused is not None:
            text, limiter = refused
            raise CommandThrottled(text, warn=limiter.should_warn(ctx.author.id))
        return True

    async def slash_check(interaction: nextcord.Interaction) -> bool:
        if interaction.user is None:
            return True
        command = interaction.application_command
        name = getattr(command, "qualified_name", None) or getattr(command, "name", None)
        refused = limits.refusal(interaction.user.id, str(name) if name else None)
        if refused is not None:
            raise SlashThrottled(refused[0])
        return True

    bot.add_check(prefix_check)
    bot.add_application_command_check(slash_check)


async def slow_down(message: nextcord.Message, text: str, *, warn: bool) -> None:
    """Tell a user over a limit: once per window in words, after that with a ⏳ reaction."""
    try:
        if warn:
            await message.reply(text, mention_author=False)
        else:
            await message.add_reaction(SLOW_DOWN_REACTION)
    except nextcord.HTTPException as exc:
        logger.info("Could not tell %s to slow down: %s", message.author.id, exc)


def over_limit(limiter: RateLimiter, user_id: int, what: str) -> tuple[str, bool] | None:
    """(polite text, whether to say it in words) when `user_id` is over `limiter`, else None
    (and then this one was counted)."""
    if limiter.allow(user_id):
        return None
    wait = max(1, round(limiter.retry_after(user_id)))
    return (f"You're sending {what} faster than I can answer; please wait about {wait} s and try again.",
            limiter.should_warn(user_id))


