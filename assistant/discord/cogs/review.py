"""`review`: the admins' queue of pending corrections and 👍/👎, with Approve / Reject buttons.

One message shows a page (an embed, `PAGE_SIZE` items); each item has its own two buttons,
the last row pages and approves everything pending from the first item's author at once.
Buttons are handled from their custom_id in `on_interaction` (like Activate), so a queue
message keeps working after a restart, and every click re-checks that the clicker is an admin.
A decision refreshes the instant memory, so an approved fact is answered at once.
"""

from __future__ import annotations

import asyncio
import logging

import nextcord
from nextcord.ext import commands

from assistant.discord.invocation import Invocation
from assistant.discord.replies import report
from assistant.discord.services import BotServices
from assistant.errors import ReviewError
from assistant.review import ReviewItem

logger = logging.getLogger(__name__)

PREFIX = "assistant:review:"
PAGE_SIZE = 4  # Discord allows 5 rows of buttons: one per item, one for paging and bulk approval


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def page_embed(items: list[ReviewItem], page: int) -> nextcord.Embed:
    pages = max(1, -(-len(items) // PAGE_SIZE))
    page = min(max(page, 0), pages - 1)
    shown = items[page * PAGE_SIZE:(page + 1) * PAGE_SIZE]
    embed = nextcord.Embed(title=f"Review: {len(items)} pending", colour=0x5865F2,
                           description=None if shown else "Nothing waits for review.")
    for item in shown:
        what = f"correction → {_clip(item.correction, 300)}" if item.kind == "correction" else item.correction
        embed.add_field(name=f"{item.item} · by <@{item.user_id}>"[:256] if item.user_id else item.item,
                        value=_clip(f"Q: {item.prompt}\nA: {item.reply}\n{what}", 1000), inline=False)
    embed.set_footer(text=f"page {page + 1}/{pages}")
    return embed


def page_view(items: list[ReviewItem], page: int) -> nextcord.ui.View:
    view = nextcord.ui.View(timeout=None, prevent_update=False)
    pages = max(1, -(-len(items) // PAGE_SIZE))
    page = min(max(page, 0), pages - 1)
    shown = items[page * PAGE_SIZE:(page + 1) * PAGE_SIZE]
    for row, item in enumerate(shown):
        view.add_item(nextcord.ui.Button(label=f"Approve {item.item}", style=nextcord.ButtonStyle.success,
                                         custom_id=f"{PREFIX}approved:{item.item}:{page}", row=row))
        view.add_item(nextcord.ui.Button(label=f"Reject {item.item}", style=nextcord.ButtonStyle.danger,
                                         custom_id=f"{PREFIX}rejected:{item.item}:{page}", row=row))
    last = len(shown)
    if page > 0:
        view.add_item(nextcord.ui.Button(label="◀", custom_id=f"{PREFIX}page:-:{page - 1}", row=last))
    if page + 1 < pages:
        view.add_item(nextcord.ui.Button(label="▶", custom_id=f"{PREFIX}page:-:{page + 1}", row=last))
    if shown and shown[0].user_id:
        count = sum(1 for i in items if i.user_id == shown[0].user_id)
        view.add_item(nextcord.ui.Button(label=f"Approve all {count} by this user"[:80],
                                         style=nextcord.ButtonStyle.primary,
                                         custom_id=f"{PREFIX}user:{shown[0].user_id}:{page}", row=last))
    return view


class Review(commands.Cog):
    def __init__(self, bot: commands.Bot, services: BotServices) -> None:
        self.bot = bot
        self.services = services

    async def _pending(self) -> list[ReviewItem]:
        return await asyncio.to_thread(self.services.store.review_items, status="pending")

    async def review(self, inv: Invocation, action: str, target: str) -> None:
        self.services.require_admin(inv.user.id, inv.role_ids, "review corrections")
        action = action.strip().lower()
        store = self.services.store
        if action not in ("", "list", "approve", "reject", "user"):
            raise ReviewError(f"Unknown review action {action!r}; use `review`, `review approve ITEM...`, "
                              "`review reject ITEM...` or `review user USER_ID`.")
        if action in ("approve", "reject"):
            names = target.replace(",", " ").split()
            if not names:
                raise ReviewError(f"Name the items to {action}, e.g. `review {action} c3 r2` (`review` lists them).")
            state = {"approve": "approved", "reject": "rejected"}[action]
            count = await asyncio.to_thread(store.set_review, names, state, reviewer=str(inv.user.id))
            await asyncio.to_thread(self.services.memory.refresh)
            await inv.send(f"{state.capitalize()} {count} item(s).")
            return
        if action == "user":
            uid = target.strip().strip("<@!>")
            if not uid.isdigit():
                raise ReviewError("Give the user's id (or mention them): `review user USER_ID`.")
            count = await asyncio.to_thread(store.approve_user, uid, reviewer=str(inv.user.id))
            await asyncio.to_thread(self.services.memory.refresh)
            await inv.send(f"Approved {count} pending item(s) by <@{uid}>.")
            return
        items = await self._pending()
        await inv.send(embed=page_embed(items, 0), view=page_view(items, 0))

    @commands.command(name="review", help="Pending corrections and 👍/👎: review [approve|reject ITEM...] "
                                          "[user USER_ID] (admins).")
    async def review_prefix(self, ctx: commands.Context, action: str = "", *, target: str = "") -> None:
        await self.review(Invocation.from_context(ctx), action, target)

    @nextcord.slash_command(name="review", description="Review pending corrections and reactions (admins).")
    async def review_slash(self, interaction: nextcord.Interaction) -> None:
        await self.review(await Invocation.from_interaction(interaction), "", "")

    @commands.Cog.listener()
    async def on_interaction(self, interaction: nextcord.Interaction) -> None:
        data: dict[str, object] = dict(interaction.data or {})
        custom_id = str(data.get("custom_id", ""))
        if interaction.type != nextcord.InteractionType.component or not custom_id.startswith(PREFIX):
            return
        try:
            await self._click(interaction, custom_id[len(PREFIX):])
        except Exception as exc:  # noqa: BLE001 - one friendly reply
            if not interaction.response.is_done():
                await interaction.response.defer(ephemeral=True)
            await report(lambda **kw: interaction.followup.send(ephemeral=True, **kw), exc)

    async def _click(self, interaction: nextcord.Interaction, rest: str) -> None:
        action, _, tail = rest.partition(":")
        target, _, page_text = tail.rpartition(":")
        user = interaction.user
        assert user is not None
        self.services.require_admin(user.id, [r.id for r in getattr(user, "roles", [])], "review corrections")
        store = self.services.store
        if action in ("approved", "rejected"):
            await asyncio.to_thread(store.set_review, [target], action, reviewer=str(user.id))
        elif action == "user":
            await asyncio.to_thread(store.approve_user, target, reviewer=str(user.id))
        if action != "page":
            await asyncio.to_thread(self.services.memory.refresh)
        items = await self._pending()
        page = int(page_text) if page_text.isdigit() else 0
        await interaction.response.edit_message(embed=page_embed(items, page), view=page_view(items, page))


COGS = (Review,)
