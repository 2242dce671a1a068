"""`train`, `cancel`, `status`: fine-tuning jobs started from Discord through the finetune job runner.

The bot never trains in its own process: `JobRunner.submit` starts the same
`python -m finetune.train` a terminal user types, and the bot follows its JSON-lines
progress events, editing ONE message (step, loss, ETA, a bar) at the channel's edit pace.
At the end the loss curve is attached and a button activates the new adapter.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
import time
from pathlib import Path, PurePosixPath
from typing import Any

import nextcord
from nextcord.ext import commands

from assistant.discord import attachments
from assistant.discord.cogs.files import matching
from assistant.discord.invocation import Invocation
from assistant.discord.services import BotServices
from assistant.errors import AssistantError, TrainingError

logger = logging.getLogger(__name__)

ACTIVATE_PREFIX = "assistant:activate:"
FORCE_PREFIX = "assistant:activate-force:"
PROGRESS_EVERY_S = 2.0  # a training status message is edited at most this often
WATCHED_FILE = "training-messages.json"


def dataset_name_for(filename: str, taken: set[str]) -> str:
    """A valid, unused dataset name derived from an uploaded file's name."""
    stem = PurePosixPath(filename).stem
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.")[:48] or "upload"
    if not base[0].isalnum():
        base = "d" + base
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


class WatchedJobs:
    """Which channel message shows each job's progress, kept in a small JSON file next to the
    database so a restarted bot resumes editing them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def all(self) -> dict[str, tuple[int, int]]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return {str(k): (int(v[0]), int(v[1])) for k, v in raw.items()}
        except (OSError, ValueError, TypeError, IndexError, AttributeError):
            return {}

    def _save(self, entries: dict[str, tuple[int, int]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps({k: list(v) for k, v in entries.items()}), encoding="utf-8")
        os.replace(tmp, self.path)

    def add(self, job_id: str, channel_id: int, message_id: int) -> None:
        with self._lock:
            entries = self.all()
            entries[job_id] = (channel_id, message_id)
            self._save(entries)

    def remove(self, job_id: str) -> None:
        with self._lock:
            entries = self.all()
            if entries.pop(job_id, None) is not None:
                self._save(entries)


def train_arguments(args: str) -> tuple[str, int | None, str | None]:
    """`feedback 40 name=facts-v2` → ("feedback", 40, "facts-v2"); every word is checked."""
    dataset: list[str] = []
    steps: int | None = None
    run_name: str | None = None
    for word in args.split():
        if word.isdigit():
            if steps is not None:
                raise TrainingError("Give MAX_STEPS once, e.g. `train feedback 40`.")
            steps = int(word)
            if not 1 <= steps <= 100000:
                raise TrainingError("MAX_STEPS must be between 1 and 100000.")
        elif word.lower().startswith("name="):
            run_name = word[5:]
        else:
            dataset.append(word)
    return " ".join(dataset), steps, run_name


def activate_view(adapter: str, *, passed: bool = True) -> nextcord.ui.View:
    """A button handled by `Training.on_interaction` from its custom_id (so it works after a restart),
    never by nextcord's view store, which would acknowledge the click a second time. An adapter that
    failed the gate gets an explicit override button instead."""
    view = nextcord.ui.View(timeout=None, prevent_update=False)
    if passed:
        view.add_item(nextcord.ui.Button(label=f"Activate {adapter}"[:80], style=nextcord.ButtonStyle.primary,
                                         custom_id=f"{ACTIVATE_PREFIX}{adapter}"[:100]))
    else:
        view.add_item(nextcord.ui.Button(label=f"Activate {adapter} anyway"[:80], style=nextcord.ButtonStyle.danger,
                                         custom_id=f"{FORCE_PREFIX}{adapter}"[:100]))
    return view


def job_line(job: Any) -> str:
    """One job for `status`: its state, and for a running one the step, loss and time left."""
    from finetune.events import EVENTS_FILE, format_progress, read_events

    line = f"`{job.id}` {job.state} → adapter `{Path(job.out_dir).name}`"
    if job.state == "running":
        events, _ = read_events(Path(job.out_dir) / EVENTS_FILE)
        steps = [e for e in events if e.kind == "step"]
        line += f": {format_progress(steps[-1])}" if steps else ": starting (loading the model, preparing data)"
    elif job.result and job.result.get("metrics"):
        metrics = job.result["metrics"]
        line += f" ({metrics.get('steps')} steps, final loss {metrics.get('final_loss')})"
    gate = Path(job.out_dir) / "gate.json"
    if gate.is_file():
        import json

        try:
            scores = json.loads(gate.read_text(encoding="utf-8")).get("scores", {})
            line += " — gate: " + ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in scores.items() if v[1])
        except ValueError:
            pass
    return line + (f" ({job.error[:200]})" if job.error else "")


class Training(commands.Cog):
    def __init__(self, bot: commands.Bot, services: BotServices) -> None:
        self.bot = bot
        self.services = services
        self._watchers: set[asyncio.Task[None]] = set()
        self.watched = WatchedJobs(Path(services.config.storage.database).parent / WATCHED_FILE)
        self._resumed = False

    # -- train ------------------------------------------------------------------------------
    async def _upload(self, inv: Invocation, name: str | None) -> str:
        att = inv.attachments[0]
        raw = await attachments.fetch(self.services.http(), att, max_bytes=self.services.config.security.max_attachment_bytes,
                                      kind="data")
        manager = self.services.datasets
        taken = {info.name for info in await asyncio.to_thread(manager.list)}
        target = name or dataset_name_for(att.filename, taken)
        info = await asyncio.to_thread(manager.add_bytes, raw, name=target, source=att.filename)
        await inv.send(f"Dataset `{info.name}` stored: {info.rows} rows ({info.format}).")
        return str(info.name)

    async def train(self, inv: Invocation, dataset: str, steps: int | None, run_name: str | None = None) -> None:
        self.services.require_admin(inv.user.id, inv.role_ids, "start training")
        from finetune.jobs import JobSpec
        from finetune.teach import FEEDBACK

        if inv.attachments:
            names = [await self._upload(inv, dataset.strip() or None)]
        elif dataset.strip().lower() == "feedback":
            names = [FEEDBACK]
            pending = await asyncio.to_thread(self.services.store.corrections, status="approved")
            if not pending:
                raise TrainingError("No approved corrections to train on yet; approve some with `review` first.")
        elif dataset.strip():
            names = [n for n in dataset.replace(",", " ").split() if n]
            for n in names:
                await asyncio.to_thread(self.services.datasets.info, n)  # validates the name, must exist
        else:
            names = await asyncio.to_thread(self.services.datasets.selected)
            if not names:
                prefix = self.services.config.discord.command_prefix
                raise TrainingError(f"Train on the approved corrections with `{prefix}train feedback`, attach a "
                                    f"dataset file, name one (`{prefix}train NAME`), or choose some with "
                                    f"`{prefix}select_dataset NAME` first.")
        job_id = await asyncio.to_thread(self.services.runner.submit,
                                         JobSpec(data=names, max_steps=steps, managed=True, name=run_name))
        what = "the approved corrections" if names == [FEEDBACK] else ", ".join(names)
        text = f"Training job `{job_id}` queued on {what}…"
        if inv.message is None:  # a slash command: its follow-ups stop being editable after 15 minutes
            await inv.send(f"Training job `{job_id}` queued; its progress is shown below.")
            message = await inv.channel.send(text)
        else:
            message = await inv.send(text)
        await asyncio.to_thread(self.watched.add, job_id, message.channel.id, message.id)
        await self.follow(job_id, message)

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        """After a restart, go on editing the progress messages of jobs started before it."""
        if self._resumed:
            return
        self._resumed = True
        for job_id, (channel_id, message_id) in (await asyncio.to_thread(self.watched.all)).items():
            try:
                channel = self.bot.get_channel(channel_id) or await self.bot.fetch_channel(channel_id)
                message = await channel.fetch_message(message_id)  # type: ignore[union-attr]
                await asyncio.to_thread(self.services.runner.status, job_id)
            except (nextcord.HTTPException, AttributeError, TrainingError) as exc:
                logger.info("Not resuming the progress of job %s: %s", job_id, exc)
                await asyncio.to_thread(self.watched.remove, job_id)
                continue
            task = asyncio.create_task(self.follow(job_id, message))
            self._watchers.add(task)
            task.add_done_callback(self._watchers.discard)

    async def follow(self, job_id: str, message: Any) -> None:
        """Edit `message` with the job's progress until it ends; then the gate, the loss curve and a button."""
        from finetune.events import format_progress
        from finetune.plots import loss_curve

        runner = self.services.runner
        events = []
        last_edit = 0.0
        about = ""
        async for event in runner.watch(job_id):
            events.append(event)
            if event.kind == "start" and event.message not in ("", "started", "resumed"):
                about = f" ({event.message})"  # what it trains on; the trainer's own "started" says nothing
            if event.kind == "step" and time.monotonic() - last_edit >= PROGRESS_EVERY_S:
                last_edit = time.monotonic()
                await self._edit(message, content=f"Training `{job_id}`{about}: {format_progress(event)}")
        job = await asyncio.to_thread(runner.status, job_id)
        await asyncio.to_thread(self.watched.remove, job_id)
        adapter = Path(job.out_dir).name
        if job.state != "succeeded":
            await self._edit(message, content=f"Training `{job_id}` {job.state}: {job.error or 'no details'}"[:2000])
            return
        steps = [e for e in events if e.kind == "step"]
        summary = format_progress(steps[-1]) if steps else "done"
        await self._edit(message, content=f"Training `{job_id}`: {summary}. Evaluating `{adapter}` "
                                          "against the base model…")
        try:
            gate = await self.evaluate(adapter, Path(job.out_dir))
            verdict, passed = f"\nEvaluation: {gate.summary()}", gate.passed
        except AssistantError as exc:
            verdict, passed = f"\nEvaluation could not run: {exc}", True
        png = await asyncio.to_thread(loss_curve, events, Path(job.out_dir) / "loss.png", title=adapter)
        hint = f"`adapter activate {adapter}`" if passed else f"`adapter activate {adapter} force`"
        kwargs: dict[str, Any] = {"content": (f"Training `{job_id}` finished{about}: {summary}.{verdict}\n"
                                              f"New adapter: `{adapter}` (activate with the button or {hint}; "
                                              "`adapter rollback` undoes it).")[:2000],
                                  "view": activate_view(adapter, passed=passed)}
        if png is not None:
            kwargs["file"] = nextcord.File(str(png), filename="loss.png")
        await self._edit(message, **kwargs)

    async def evaluate(self, adapter: str, run_dir: Path) -> Any:
        """The evaluation gate on the live engine: base and new adapter side by side in one batch."""
        from finetune.gate import load_items, run_gate, save_report

        config = self.services.config
        items = await asyncio.to_thread(load_items, run_dir, config.storage.control_set)
        await self.services.adapters.load(adapter)
        report = await run_gate(self.services.backend, adapter, items, system_prompt=config.model.system_prompt,
                                notes=self.services.memory.notes, min_control_kept=config.finetune.min_control_kept)
        await asyncio.to_thread(save_report, run_dir, report)
        return report

    async def _edit(self, message: Any, **kwargs: Any) -> None:
        channel = getattr(message, "channel", None)
        try:
            async with self.services.throttle.pace(channel.id if channel is not None else 0):
                await message.edit(**kwargs)
        except nextcord.HTTPException as exc:
            logger.warning("Could not update the training message: %s", exc)

    @commands.command(name="train", help="Train: train feedback | NAME | (attached file) [MAX_STEPS] [name=RUN] "
                                         "(admins).")
    async def train_prefix(self, ctx: commands.Context, *, args: str = "") -> None:
        dataset, steps, run_name = train_arguments(args)
        await self.train(Invocation.from_context(ctx), dataset, steps, run_name)

    @nextcord.slash_command(name="train", description="Fine-tune on a dataset or an attached file (admins).")
    async def train_slash(
        self, interaction: nextcord.Interaction,
        dataset: str = nextcord.SlashOption(description="dataset name (or a name for the file)", required=False,
                                            default=""),
        file: nextcord.Attachment = nextcord.SlashOption(description="training data (JSON/JSONL)", required=False,
                                                         default=None),
        max_steps: int = nextcord.SlashOption(description="stop after this many steps", required=False,
                                              default=None, min_value=1, max_value=100000),
        name: str = nextcord.SlashOption(description="a name for the new adapter", required=False, default=""),
    ) -> None:
        await self.train(await Invocation.from_interaction(interaction, [file] if file else []), dataset, max_steps,
                         name.strip() or None)

    @train_slash.on_autocomplete("dataset")
    async def train_names(self, interaction: nextcord.Interaction, dataset: str) -> None:
        names = [info.name for info in await asyncio.to_thread(self.services.datasets.list)]
        await interaction.response.send_autocomplete(matching(names, dataset))

    # -- cancel / status --------------------------------------------------------------------
    async def _job_id(self, job_id: str, states: tuple[str, ...]) -> str:
        """The named job, else the running one, else the newest in `states`."""
        if job_id.strip():
            return job_id.strip()
        jobs = await asyncio.to_thread(self.services.store.jobs, states=states)
        if not jobs:
            raise TrainingError("There is no training job to act on; start one with `train`.")
        running = [j for j in jobs if j.state == "running"]
        return (running or jobs)[-1].id

    async def cancel(self, inv: Invocation, job_id: str) -> None:
        self.services.require_admin(inv.user.id, inv.role_ids, "cancel training")
        job_id = await self._job_id(job_id, ("queued", "running"))
        job = await asyncio.to_thread(self.services.runner.cancel, job_id)
        await inv.send(f"Job `{job_id}`: {job.state} (stopping)" if job.state == "running"
                       else f"Job `{job_id}`: {job.state}.")

    @commands.command(name="cancel", help="Stop a training job: cancel [JOB_ID] (admins).")
    async def cancel_prefix(self, ctx: commands.Context, job_id: str = "") -> None:
        await self.cancel(Invocation.from_context(ctx), job_id)

    @nextcord.slash_command(name="cancel", description="Stop the running (or a named) training job (admins).")
    async def cancel_slash(self, interaction: nextcord.Interaction,
                           job_id: str = nextcord.SlashOption(description="job id", required=False,
                                                              default="")) -> None:
        await self.cancel(await Invocation.from_interaction(interaction), job_id)

    async def status(self, inv: Invocation, job_id: str) -> None:
        store = self.services.store
        if job_id.strip():
            jobs = [await asyncio.to_thread(self.services.runner.status, job_id.strip())]
        else:
            jobs = (await asyncio.to_thread(store.jobs))[-5:]
        if not jobs:
            await inv.send("No training jobs yet.")
            return
        lines = [await asyncio.to_thread(job_line, j) for j in jobs]
        await inv.send_long("\n".join(lines))

    @commands.command(name="status", help="Training jobs and their state: status [JOB_ID].")
    async def status_prefix(self, ctx: commands.Context, job_id: str = "") -> None:
        await self.status(Invocation.from_context(ctx), job_id)

    @nextcord.slash_command(name="status", description="Show training jobs and their state.")
    async def status_slash(self, interaction: nextcord.Interaction,
                           job_id: str = nextcord.SlashOption(description="job id", required=False,
                                                              default="")) -> None:
        await self.status(await Invocation.from_interaction(interaction), job_id)

    # -- the "Activate" button --------------------------------------------------------------
    @commands.Cog.listener()
    async def on_interaction(self, interaction: nextcord.Interaction) -> None:
        data: dict[str, object] = dict(interaction.data or {})
        custom_id = str(data.get("custom_id", ""))
        if interaction.type != nextcord.InteractionType.component:
            return
        force = custom_id.startswith(FORCE_PREFIX)
        if not force and not custom_id.startswith(ACTIVATE_PREFIX):
            return
        adapter = custom_id[len(FORCE_PREFIX if force else ACTIVATE_PREFIX):]
        inv = await Invocation.from_interaction(interaction)
        try:
            switch = self.services.adapter_switch
            if switch is None:
                raise AssistantError("Adapters cannot be switched in this bot.")
            await switch.activate(inv, adapter, force=force)
        except Exception as exc:  # noqa: BLE001 - one friendly reply
            from assistant.discord.replies import report

            await report(inv.send, exc)


COGS = (Training,)
