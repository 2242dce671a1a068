"""`getfile NAME` (files from the exports folder only) and managed datasets: `archive`, `select_dataset`.

Names typed by users never reach the file system unchecked: `getfile` resolves them with
`resolve_inside` (one component, inside exports, symlinks followed), datasets go through
the finetune layer's `check_name`. Admin only.
"""

from __future__ import annotations

import asyncio

import nextcord
from nextcord.ext import commands

from assistant.discord.invocation import Invocation
from assistant.discord.paths import list_files, resolve_inside
from assistant.discord.services import BotServices
from assistant.errors import AssistantError, UnsafeNameError

MAX_CHOICES = 25  # Discord shows at most 25 autocomplete choices


def matching(names: list[str], typed: str) -> list[str]:
    typed = (typed or "").casefold()
    return [n for n in names if typed in n.casefold()][:MAX_CHOICES]


class Files(commands.Cog):
    def __init__(self, bot: commands.Bot, services: BotServices) -> None:
        self.bot = bot
        self.services = services

    # -- getfile ----------------------------------------------------------------------------
    async def getfile(self, inv: Invocation, name: str) -> None:
        self.services.require_admin(inv.user.id, inv.role_ids, "download files")
        root = self.services.config.storage.exports_dir
        available = await asyncio.to_thread(list_files, root)
        if not name.strip():
            listing = ", ".join(f"`{n}`" for n in available) or "none yet"
            await inv.send_long(f"Files you can get: {listing}.")
            return
        try:
            path = await asyncio.to_thread(resolve_inside, root, name.strip())
        except UnsafeNameError as exc:
            hint = f" Available: {', '.join(available[:20])}." if available else ""
            raise UnsafeNameError(f"{exc}{hint}") from None
        size = path.stat().st_size
        limit = self.services.config.security.max_attachment_bytes
        if size > limit:
            raise AssistantError(f"{path.name} is {size / 1e6:.1f} MB, over the {limit / 1e6:.1f} MB upload limit.")
        await inv.send(f"Here is `{path.name}`:", file=nextcord.File(str(path), filename=path.name))

    @commands.command(name="getfile", help="Send a file from the exports folder: getfile NAME (admins).")
    async def getfile_prefix(self, ctx: commands.Context, *, name: str = "") -> None:
        await self.getfile(Invocation.from_context(ctx), name)

    @nextcord.slash_command(name="getfile", description="Send a file from the exports folder (admins).")
    async def getfile_slash(self, interaction: nextcord.Interaction,
                            name: str = nextcord.SlashOption(description="file name", required=False,
                                                             default="")) -> None:
        await self.getfile(await Invocation.from_interaction(interaction), name)

    @getfile_slash.on_autocomplete("name")
    async def getfile_names(self, interaction: nextcord.Interaction, name: str) -> None:
        user = interaction.user
        roles = [role.id for role in getattr(user, "roles", [])]
        if user is None or not self.services.is_admin(user.id, roles):
            await interaction.response.send_autocomplete([])  # what is in exports is admin business
            return
        names = await asyncio.to_thread(list_files, self.services.config.storage.exports_dir)
        await interaction.response.send_autocomplete(matching(names, name))

    # -- datasets ---------------------------------------------------------------------------
    async def dataset_names(self) -> list[str]:
        return [info.name for info in await asyncio.to_thread(self.services.datasets.list)]

    async def archive(self, inv: Invocation, name: str) -> None:
        self.services.require_admin(inv.user.id, inv.role_ids, "archive datasets")
        target = await asyncio.to_thread(self.services.datasets.archive, name.strip())
        await inv.send(f"Dataset `{name.strip()}` archived as `{target.name}`.")

    @commands.command(name="archive", help="Archive a managed dataset: archive NAME (admins).")
    async def archive_prefix(self, ctx: commands.Context, name: str) -> None:
        await self.archive(Invocation.from_context(ctx), name)

    @nextcord.slash_command(name="archive", description="Archive a managed dataset (admins).")
    async def archive_slash(self, interaction: nextcord.Interaction,
                            name: str = nextcord.SlashOption(description="dataset name")) -> None:
        await self.archive(await Invocation.from_interaction(interaction), name)

    @archive_slash.on_autocomplete("name")
    async def archive_names(self, interaction: nextcord.Interaction, name: str) -> None:
        await interaction.response.send_autocomplete(matching(await self.dataset_names(), name))

    async def select_dataset(self, inv: Invocation, names: str) -> None:
        wanted = [n for n in names.replace(",", " ").split() if n]
        if not wanted:
            available = await self.dataset_names()
            selected = await asyncio.to_thread(self.services.datasets.selected)
            await inv.send_long(f"Datasets: {', '.join(available) or 'none'}. "
                                f"Selected for training: {', '.join(selected) or 'none'}.")
            return
        self.services.require_admin(inv.user.id, inv.role_ids, "select datasets")
        chosen = await asyncio.to_thread(self.services.datasets.select, wanted)
        await inv.send(f"Selected for the next training run: {', '.join(chosen)}.")

    @commands.command(name="select_dataset", help="Choose datasets for training: select_dataset NAME... (admins).")
    async def select_prefix(self, ctx: commands.Context, *, names: str = "") -> None:
        await self.select_dataset(Invocation.from_context(ctx), names)

    @nextcord.slash_command(name="select_dataset", description="Choose the datasets to train on (admins).")
    async def select_slash(self, interaction: nextcord.Interaction,
                           name: str = nextcord.SlashOption(description="dataset name (blank: list them)",
                                                            required=False, default="")) -> None:
        await self.select_dataset(await Invocation.from_interaction(interaction), name)

    @select_slash.on_autocomplete("name")
    async def select_names(self, interaction: nextcord.Interaction, name: str) -> None:
        await interaction.response.send_autocomplete(matching(await self.dataset_names(), name))


COGS = (Files,)
