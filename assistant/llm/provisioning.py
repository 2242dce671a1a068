"""The LLM's entry in `assistant models fetch|list`."""

from __future__ import annotations

from typing import Any

from assistant.config import Config
from assistant.llm.catalog import CATALOG, catalog_dir, is_provisioned, provision_llm


def fetch(config: Config, force: bool) -> str:
    """Provision the configured model when it is a catalogue name; hub ids and folders need nothing."""
    name = config.model.name if config.model.name in CATALOG else "smollm2-135m-instruct"
    folder = provision_llm(config.storage.models_dir, name, force=force)
    return f"{name} ready in {folder}"


def rows(config: Config) -> list[dict[str, Any]]:
    return [{"name": name, "ready": is_provisioned(config.storage.models_dir, name),
             "detail": f"{entry.description} -> {catalog_dir(config.storage.models_dir, name)}"}
            for name, entry in CATALOG.items()]
