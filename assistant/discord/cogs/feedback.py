"""Teaching signals: `correct`, replies starting with "correct:", `feedback`, and 👍/👎 reactions.

Every contribution is committed to the store (in a worker thread: SQLite fsyncs) before
the bot says thanks, so an acknowledged correction survives a crash right after.
"""

from __future__ import annotations

import asyncio
import logging

import nextcord
from nextcord.ext import commands

from assistant.discord import replies
from assistant.discord.invocation import Invocation
from assistant.discord.limits import over_limit, slow_down
from assistant.discord.policy import correction_text
from assistant.discord.services import BotServices
from assistant.errors import AssistantError, ReviewError
from assistant.review import Submitted
from assistant.store import Turn

logger = logging.getLogger(__name__)

LABELS = {"👍": 1, "👎": -1}
SEEN = "👀"  # the bot's reaction: a 👍/👎 was recorded


def channel_of(conversation_key: str) -> int | None:
    """The Discord channel a stored conversation happened in (text or voice), from its key."""
    kind, _, channel = conversation_key.partition(":")
    return int(channel) if kind in ("discord", "discord-voice") and channel.isdigit() else None


def review_status(auto_approve: str, admin: bool) -> str:
    """Whether a new contribution waits for review (`security.auto_approve`)."""
    return "approved" if auto_approve == "all" or (auto_approve == "admins" and admin) else "pending"


def acknowledgement(done: Submitted) -> str:
    number = f"#{done.item[1:]}"
    if done.duplicate:
        return f"You already sent this correction ({number}, {done.status}); it counts once."
    if done.status == "approved":
        return (f"Thanks — correction {number} saved and approved; I use it from now on, and the next "
                "`train feedback` learns it.")
    return (f"Thanks — correction {number} saved; it waits for an admin's review (`review`) before I use it "
            "or train on it.")


class Feedback(commands.Cog):
    def __init__(self, bot: commands.Bot, services: BotServices) -> None:
        self.bot = bot
        self.services = services

    async def _turn(self, inv: Invocation, message_id: int) -> Turn:
        """The stored prompt and reply behind bot message `message_id`, if it was said where `inv` was typed
        (the same server, or the same DM): ids are public, so a correction must not reach across servers."""
        store = self.services.store
        turn = await asyncio.to_thread(store.turn_for_reply, str(message_id))
        if turn is not None and self._same_place(turn.conversation_key, inv):
            return turn
        raise AssistantError(f"I can't find an answer of mine with id {message_id} here; reply to my message with "
                             "`correct: the right answer`, or copy the id of my reply (not of your question).")

    def _same_place(self, conversation_key: str, inv: Invocation) -> bool:
        channel_id = channel_of(conversation_key)
        if channel_id is None:
            return False
        if inv.guild is None:
            return inv.channel is not None and int(inv.channel.id) == channel_id
        return inv.guild.get_channel_or_thread(channel_id) is not None  # a channel or thread of this server

    def _status(self, user_id: int, role_ids: list[int]) -> str:
        return review_status(self.services.config.security.auto_approve,
                             self.services.is_admin(user_id, role_ids))

    async def store_correction(self, inv: Invocation, message_id: int, correction: str) -> None:
        correction = correction.strip()
        if not correction:
            raise AssistantError("Write the answer I should have given after the message id.")
        turn = await self._turn(inv, message_id)
        security = self.services.config.security
        scope = f"guild:{inv.guild.id}" if inv.guild is not None else f"dm:{inv.channel.id}"
        done = await asyncio.to_thread(
            self.services.store.submit_correction, prompt=turn.prompt, original_reply=turn.reply,
            correction=correction, user_id=str(inv.user.id), message_external_id=str(message_id), scope=scope,
            status=self._status(inv.user.id, inv.role_ids), max_pending=security.max_pending_per_user)
        if done.status == "approved":
            await asyncio.to_thread(self.services.memory.refresh)
        await inv.send(acknowledgement(done))

    async def correct(self, inv: Invocation, args: str) -> None:
        """`correct MESSAGE_ID CORRECTION`, or `correct CORRECTION` as a reply to the bot's message."""
        head, _, rest = args.strip().partition(" ")
        if head.isdigit():
            await self.store_correction(inv, int(head), rest)
        elif inv.reference is not None and inv.reference.message_id is not None:
            await self.store_correction(inv, inv.reference.message_id, args)
        else:
            prefix = self.services.config.discord.command_prefix
            raise AssistantError(f"Use `{prefix}correct MESSAGE_ID the right answer`, or reply to my message "
                                 "with `correct: the right answer`.")

    @commands.command(name="correct", help="Correct an answer: correct MESSAGE_ID the right answer.")
    async def correct_prefix(self, ctx: commands.Context, *, args: str = "") -> None:
        await self.correct(Invocation.from_context(ctx), args)

    @nextcord.slash_command(name="correct", description="Correct one of the assistant's answers.")
    async def correct_slash(
        self, interaction: nextcord.Interaction,
        message_id: str = nextcord.SlashOption(description="id of the assistant's message (Copy Message ID)"),
        correction: str = nextcord.SlashOption(description="the answer it should have given"),
    ) -> None:
        inv = await Invocation.from_interaction(interaction)
        if not message_id.strip().isdigit():
            raise AssistantError("The message id is a number: right-click my message → Copy Message ID.")
        await self.store_correction(inv, int(message_id.strip()), correction)

    @commands.Cog.listener()
    async def on_message(self, message: nextcord.Message) -> None:
        """A reply to one of the bot's messages that starts with "correct:" is a correction."""
        if message.author.bot or message.reference is None or message.reference.message_id is None:
            return
        text = correction_text(message.content)
        if text is None:
            return
        refused = over_limit(self.services.limits.commands, message.author.id, "corrections")
        if refused is not None:
            await slow_down(message, refused[0], warn=refused[1])
            return
        inv = Invocation.from_context_message(message)
        try:
            await self.store_correction(inv, message.reference.message_id, text)
        except Exception as exc:  # noqa: BLE001 - one friendly reply
            await replies.report(message.channel.send, exc)

    # -- feedback ---------------------------------------------------------------------------
    async def feedback(self, inv: Invocation, text: str) -> None:
        ref = str(inv.reference.message_id) if inv.reference and inv.reference.message_id else None
        if not text.strip():
            raise AssistantError("Write your feedback after the command, e.g. `feedback answers are too long`.")
        await asyncio.to_thread(self.services.store.add_feedback, text.strip(), user_id=str(inv.user.id),
                                message_external_id=ref)
        await inv.send("Thank you for your feedback; it is saved and will help improve the assistant.")

    @commands.command(name="feedback", help="Tell us what to improve: feedback TEXT.")
    async def feedback_prefix(self, ctx: commands.Context, *, text: str = "") -> None:
        await self.feedback(Invocation.from_context(ctx), text)

    @nextcord.slash_command(name="feedback", description="Tell the assistant's owners what to improve.")
    async def feedback_slash(self, interaction: nextcord.Interaction,
                             text: str = nextcord.SlashOption(description="your feedback")) -> None:
        await self.feedback(await Invocation.from_interaction(interaction), text)

    # -- reactions --------------------------------------------------------------------------
    async def _reaction(self, payload: nextcord.RawReactionActionEvent, added: bool) -> None:
        label = LABELS.get(str(payload.emoji))
        me = self.bot.user
        if label is None or me is None or payload.user_id == me.id:
            return
        member = payload.member if payload.member is not None else self.bot.get_user(payload.user_id)
        if member is not None and member.bot:
            return  # another bot's votes are not people's judgement
        if not self.services.limits.reactions.allow(payload.user_id):
            logger.info("Ignoring a reaction from %s: over security.reaction_rate_limit", payload.user_id)
            return
        store = self.services.store
        key = str(payload.message_id)
        turn = await asyncio.to_thread(store.turn_for_reply, key)
        if turn is None:
            return  # not one of the bot's answers
        if not added:
            await asyncio.to_thread(store.remove_reaction, key, str(payload.user_id))
            return
        roles = [r.id for r in getattr(member, "roles", [])]
        try:
            done = await asyncio.to_thread(store.submit_reaction, key, str(payload.user_id), label,
                                           status=self._status(payload.user_id, roles),
                                           max_pending=self.services.config.security.max_pending_per_user)
        except ReviewError as exc:
            logger.info("Reaction by %s not stored: %s", payload.user_id, exc)
            return
        if not done.duplicate:
            await self._acknowledge(payload)

    async def _acknowledge(self, payload: nextcord.RawReactionActionEvent) -> None:
        """A 👀 on the answer says "your vote was recorded" without a message per vote."""
        try:
            await self.bot.http.add_reaction(payload.channel_id, payload.message_id, SEEN)
        except nextcord.HTTPException as exc:
            logger.info("Could not acknowledge a reaction: %s", exc)

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: nextcord.RawReactionActionEvent) -> None:
        await self._reaction(payload, True)

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, payload: nextcord.RawReactionActionEvent) -> None:
        await self._reaction(payload, False)


COGS = (Feedback,)
