"""Trained adapters: list, show, activate (with history for rollback), delete, merge.

An adapter is the `adapter/` folder of a run in `storage.runs_dir` and is named after its
run. Which one the assistant uses is a small JSON pointer file, `runs_dir/active.json`
(`{"active": name | null, "history": [...]}`), written atomically: the chat engine reads it
through `active_adapter(config)` at start and when told to switch, so no database is needed
to answer "which adapter?". Activation refuses an adapter made for another base model,
comparing the weight hash recorded at training time (or the name when no hash is known).
"""

from __future__ import annotations

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
from finetune.datasets_store import NAME_RE

logger = logging.getLogger(__name__)

ACTIVE_FILE = "active.json"
ADAPTER_DIR = "adapter"
METADATA = "finetune.json"


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


def check_adapter_compatible(adapter_dir: Path, base_source: str) -> dict[str, Any]:
    """Raise AdapterError unless the adapter was trained on this base model; returns its metadata."""
    from finetune.train import base_model_identity

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
        if not NAME_RE.match(name) or ".." in name:
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
            if NAME_RE.match(run.name) and (adapter / "adapter_config.json").is_file():
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
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.runs_dir / f".{ACTIVE_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.runs_dir / ACTIVE_FILE)

    def active(self) -> str | None:
        name = self._state()["active"]
        return name if name and (self.runs_dir / name / ADAPTER_DIR).is_dir() else None

    def activate(self, name: str | None, *, base_source: str, force: bool = False) -> str | None:
        """Make `name` (None = the base model alone) the active adapter, remembering the previous one.
        An adapter whose evaluation gate failed needs `force` (finetune/gate.py)."""
        if name is not None:
            from finetune.gate import check_gate

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
                return previous  # type: ignore[no-any-return]
        raise AdapterError("There is no earlier adapter to roll back to.")

    def delete(self, name: str) -> None:
        folder = self.path(name)
        if self.active() == name:
            raise AdapterError(f"{name!r} is the active adapter; activate another one (or rollback) first.")
        shutil.rmtree(folder.parent)


def active_adapter(config: Config) -> Path | None:
    """The folder of the active adapter, or None when the assistant runs the base model alone."""
    registry = AdapterRegistry(config.storage.runs_dir)
    name = registry.active()
    return registry.runs_dir / name / ADAPTER_DIR if name else None


def merge(config: Config, name: str, out: Path) -> Path:
    """Write a full model (base + adapter folded in) to `out`, for engines without LoRA support."""
    from assistant.llm.loader import load_causal_lm
    from assistant.provision import staging_dir
    from peft import PeftModel

    registry = AdapterRegistry(config.storage.runs_dir)
    folder = registry.path(name)
    loaded = load_causal_lm(config.model.name, config.storage.models_dir, device="cpu", dtype="auto")
    check_adapter_compatible(folder, loaded.source)
    merged = PeftModel.from_pretrained(loaded.model, str(folder)).merge_and_unload()
    with staging_dir(out) as stage:
        merged.save_pretrained(str(stage))
        loaded.tokenizer.save_pretrained(str(stage))
    return out
