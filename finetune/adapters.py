"""Training-side adapter work: merging an adapter into a full model.

The registry (list, show, activate with rollback history, delete, compatibility with the
base) is a runtime concern and lives in `assistant.adapters`; it is re-exported here so
`finetune` code and users' scripts keep one import.
"""

from __future__ import annotations

from pathlib import Path

from assistant.adapters import (ACTIVE_FILE, ADAPTER_DIR, METADATA, AdapterInfo, AdapterRegistry, active_adapter,
                                base_model_identity, check_adapter_compatible, read_metadata)
from assistant.config import Config


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


__all__ = ["ACTIVE_FILE", "ADAPTER_DIR", "METADATA", "AdapterInfo", "AdapterRegistry", "active_adapter",
           "base_model_identity", "check_adapter_compatible", "merge", "read_metadata"]
