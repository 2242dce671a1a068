"""Trained adapters as the runtime sees them: which exist, which is active, whether one fits the base.

An adapter is the `adapter/` folder of a run in `storage.runs_dir` and is named after its
run. Which one the assistant uses is a small JSON pointer file, `runs_dir/active.json`
(`{"active": name | null, "history": [...]}`), written atomically: the chat engine reads it
through `active_adapter(config)` at start and when told to switch, so no database is needed
to answer "which adapter?". Activation refuses an adapter made for another base model,
comparing the weight hash recorded at training time (or the name when no hash is known).

This lives in the core, not in `finetune`, because the bot, the terminal chat and the API
server all need it without importing the training library; `finetune.adapters` adds what
only training needs (merging) on top.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.config import Config
from assistant.errors import AdapterError
from assistant.llm.base import ChatBackend
from assistant.names import is_valid_name

logger = logging.getLogger(__name__)

ACTIVE_FILE = "active.json"
ADAPTER_DIR = "adapter"
METADATA = "finetune.json"
GATE_FILE = "gate.json"  # the evaluation gate's verdict on a run (finetune.gate)


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    path: Path
    metadata: dict[str, Any]

    @property
    def base(self) -> str:
        return str(self.metadata.get("base_model", {}).get("name", "?"))


def read_metadata(adapter_dir: Path) -> dict[str, Any]:
    if not (adapter_dir / "adapter_config.json").is_file():
        raise AdapterError(f"{adapter_dir} is not a LoRA adapter folder (no adapter_config.json); "
                           "train one with `finetune train`.")
    try:
        return dict(json.loads((adapter_dir / METADATA).read_text(encoding="utf-8")))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{adapter_dir / METADATA} is unreadable ({exc}); retrain or delete the adapter.") from None


def base_model_identity(source: str) -> dict[str, Any]:
    """Name and weight hash of the base model (from its provisioning manifest when there is one)."""
    from assistant.provision import read_manifest

    manifest = read_manifest(Path(source)) if Path(source).is_dir() else None
    sha = None
    if manifest:
        sha = manifest.get("outputs", {}).get("model.safetensors", {}).get("sha256")
    return {"source": source, "name": Path(source).name if Path(source).is_dir() else source, "sha256": sha}


def check_adapter_compatible(adapter_dir: Path, base_source: str) -> dict[str, Any]:
    """Raise AdapterError unless the adapter was trained on this base model; returns its metadata."""
    metadata = read_metadata(adapter_dir)
    here = base_model_identity(base_source)
    trained = metadata.get("base_model") or {}
    if not trained:
        with (adapter_dir / "adapter_config.json").open(encoding="utf-8") as handle:
            declared = str(json.load(handle).get("base_model_name_or_path") or "")
        trained = {"name": Path(declared).name if declared else "", "sha256": None}
    if trained.get("sha256") and here["sha256"]:
        same = trained["sha256"] == here["sha256"]
    else:
        same = bool(trained.get("name")) and trained.get("name") == here["name"]
    if not same:
        raise AdapterError(f"The adapter {adapter_dir.parent.name!r} was trained for base model "
                           f"{trained.get('name') or 'unknown'!r}, but the assistant runs {here['name']!r}; "
                           "train a new adapter for this model or switch model.name back.")
    return metadata


class AdapterRegistry:
    def __init__(self, runs_dir: Path) -> None:
        self.runs_dir = runs_dir

    def path(self, name: str) -> Path:
        if not is_valid_name(name):
            raise AdapterError(f"Invalid adapter name {name!r}; see `finetune adapters list`.")
        folder = self.runs_dir / name / ADAPTER_DIR
        if not folder.is_dir():
            raise AdapterError(f"No adapter named {name!r}; see `finetune adapters list`.")
        return folder

    def list(self) -> list[AdapterInfo]:
        if not self.runs_dir.is_dir():
            return []
        found = []
        for run in sorted(self.runs_dir.iterdir()):
            adapter = run / ADAPTER_DIR
            if is_valid_name(run.name) and (adapter / "adapter_config.json").is_file():
                try:
                    found.append(AdapterInfo(run.name, adapter, read_metadata(adapter)))
                except AdapterError as exc:
                    logger.warning("%s", exc)
        return found

    def show(self, name: str) -> AdapterInfo:
        folder = self.path(name)
        return AdapterInfo(name, folder, read_metadata(folder))

    def _state(self) -> dict[str, Any]:
        try:
            state = json.loads((self.runs_dir / ACTIVE_FILE).read_text(encoding="utf-8"))
            return {"active": state.get("active"), "history": list(state.get("history", []))}
        except (OSError, ValueError):
            return {"active": None, "history": []}

    def _save_state(self, state: dict[str, Any]) -> None:
        """Write the pointer durably: fsynced temp file, rename, fsynced folder."""
        from assistant.provision import fsync_dir

        self.runs_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.runs_dir / f".{ACTIVE_FILE}.{os.getpid()}"
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(json.dumps(state, indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.runs_dir / ACTIVE_FILE)
        fsync_dir(self.runs_dir)

    def snapshot(self) -> dict[str, Any]:
        """The pointer as it is now, for `restore` when a switch fails half-way."""
        return self._state()

    def restore(self, state: dict[str, Any]) -> None:
        self._save_state(state)

    def active(self) -> str | None:
        name = self._state()["active"]
        return name if name and (self.runs_dir / name / ADAPTER_DIR).is_dir() else None

    def activate(self, name: str | None, *, base_source: str, force: bool = False) -> str | None:
        """Make `name` (None = the base model alone) the active adapter, remembering the previous one.
        An adapter whose evaluation gate failed needs `force` (`check_gate`)."""
        if name is not None:
            check_adapter_compatible(self.path(name), base_source)
            check_gate(self.runs_dir / name, force=force)
        state = self._state()
        if state["active"] != name:
            state["history"].append({"name": state["active"], "until": time.time()})
        state["active"] = name
        self._save_state(state)
        logger.info("Active adapter: %s", name or "(base model)")
        return name

    def rollback(self) -> str | None:
        """Go back to the adapter active before the last activation (skipping deleted ones)."""
        state = self._state()
        while state["history"]:
            previous = state["history"].pop()["name"]
            if previous is None or (self.runs_dir / previous / ADAPTER_DIR).is_dir():
                state["active"] = previous
                self._save_state(state)
                return None if previous is None else str(previous)
        raise AdapterError("There is no earlier adapter to roll back to.")

    def delete(self, name: str) -> None:
        folder = self.path(name)
        if self.active() == name:
            raise AdapterError(f"{name!r} is the active adapter; activate another one (or rollback) first.")
        shutil.rmtree(folder.parent)


def check_gate(run_dir: Path, *, force: bool) -> None:
    """Refuse to activate an adapter whose evaluation gate failed (`finetune.gate` wrote `gate.json`),
    unless the admin overrides it explicitly. Here, not in finetune, because activation is the runtime's."""
    try:
        gate = json.loads((run_dir / GATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # never evaluated (trained elsewhere): nothing says it is worse
    if gate.get("passed", True) or force:
        return
    kept, total = gate.get("scores", {}).get("control", [0, 0])
    raise AdapterError(f"{run_dir.name} kept only {kept}/{total} control answers (finetune.min_control_kept = "
                       f"{gate.get('min_control_kept')}); it would answer things it answered right before wrongly. "
                       f"Activate it anyway with `adapter activate {run_dir.name} force`.")


def active_adapter(config: Config) -> Path | None:
    """The folder of the active adapter, or None when the assistant runs the base model alone."""
    registry = AdapterRegistry(config.storage.runs_dir)
    name = registry.active()
    return registry.runs_dir / name / ADAPTER_DIR if name else None


class AdapterManager:
    """The adapter registry (which adapter is active, on disk) kept in step with the engine.

    Activation loads the adapter into the running engine (no model reload) before the
    pointer file changes, so a broken adapter never becomes "active".
    """

    def __init__(self, runs_dir: Path, backend: ChatBackend, base_source: str) -> None:
        self.registry = AdapterRegistry(runs_dir)
        self.backend = backend
        self.base_source = base_source

    def names(self) -> list[str]:
        return [info.name for info in self.registry.list()]

    @property
    def active(self) -> str | None:
        return self.registry.active()

    async def _prepare(self, name: str | None) -> None:
        """Load the adapter's weights into the engine without using them yet."""
        if name is None:
            return
        path = self.registry.path(name)
        await asyncio.to_thread(check_adapter_compatible, path, self.base_source)
        if name not in self.backend.adapters():
            await self.backend.load_adapter(name, str(path))

    async def load(self, name: str) -> None:
        """Load an adapter into the engine without activating it (the evaluation gate asks it questions)."""
        await self._prepare(name)

    async def _load(self, name: str | None) -> None:
        await self._prepare(name)
        self.backend.set_active_adapter(name)

    async def _switch(self, name: str | None, previous: dict[str, Any]) -> None:
        """Point the engine at `name` after the pointer file says so; put the pointer back if it fails."""
        try:
            await self._load(name)
        except BaseException:
            await asyncio.to_thread(self.registry.restore, previous)
            raise

    async def activate(self, name: str | None, *, force: bool = False) -> str | None:
        """Gate checked first (`check_gate`; `force` overrides a failed one), loaded next (a broken
        adapter never becomes active), saved next (what the engine uses is always what a restart
        will use), switched last."""
        if name is not None:
            await asyncio.to_thread(check_gate, self.registry.path(name).parent, force=force)
        await self._prepare(name)
        previous = await asyncio.to_thread(self.registry.snapshot)
        active = await asyncio.to_thread(self.registry.activate, name, base_source=self.base_source, force=force)
        await self._switch(name, previous)
        return active

    async def rollback(self) -> str | None:
        previous = await asyncio.to_thread(self.registry.snapshot)
        name = await asyncio.to_thread(self.registry.rollback)
        await self._switch(name, previous)
        return name

    async def load_active(self) -> None:
        """At start: make the engine use the adapter the registry says is active."""
        name = self.registry.active()
        if name is not None:
            try:
                await self._load(name)
                logger.info("Using adapter %s", name)
            except AdapterError as exc:
                logger.warning("Not using the active adapter: %s", exc)
