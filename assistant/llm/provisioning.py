"""The LLM's entry in `assistant models fetch|list`."""

from __future__ import annotations

from typing import Any

from assistant.config import Config
from assistant.llm.catalog import CATALOG, GGUF_FILE, catalog_dir, is_provisioned, provision_llm

SMALLEST = "smollm2-135m-instruct"  # always provisioned too: the test suite and quick experiments use it


def fetch(config: Config, force: bool) -> str:
    """Provision the configured model when it is a catalogue name (hub ids and folders need
    nothing), and the smallest catalogue model."""
    names = [name for name in dict.fromkeys([config.model.name, SMALLEST]) if name in CATALOG]
    done = [f"{name} ready in {provision_llm(config.storage.models_dir, name, force=force)}" for name in names]
    return "; ".join(done)


def rows(config: Config) -> list[dict[str, Any]]:
    result = []
    for name, entry in CATALOG.items():
        folder = catalog_dir(config.storage.models_dir, name)
        ready = is_provisioned(config.storage.models_dir, name) and (folder / GGUF_FILE).is_file()
        result.append({"name": name, "ready": ready,
                       "detail": f"{entry.description}; licence {entry.licence} -> {folder}"})
    return result
