"""Chat backends. `create_backend` is the one place that turns `[model]` config into a backend."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from assistant.config import ModelConfig
from assistant.llm.base import ChatBackend, GenerationOptions, Message


def default_options(model: ModelConfig, **overrides: Any) -> GenerationOptions:
    """The request options `[model]` configures, with `overrides` (any GenerationOptions field) on top."""
    options = GenerationOptions(max_new_tokens=model.max_new_tokens, temperature=model.temperature, top_p=model.top_p)
    return dataclasses.replace(options, **overrides)


def create_backend(model: ModelConfig, models_dir: Path, *, api_key: str = "") -> ChatBackend:
    """Build the configured backend. Loading a local model takes seconds: call it once at start-up."""
    if model.backend == "openai":
        from assistant.llm.openai_backend import OpenAIBackend

        return OpenAIBackend(model.openai_base_url, model.openai_model, api_key=api_key,
                             timeout_s=model.request_timeout_s, server=model.openai_server,
                             adapter_dir=model.openai_adapter_dir)
    from assistant.llm.engine import TransformersEngine
    from assistant.llm.loader import LoadedModel, load_causal_lm

    def load() -> LoadedModel:
        return load_causal_lm(model.name, models_dir, device=model.device, dtype=model.dtype, threads=model.threads)

    return TransformersEngine(load, max_batch_size=model.max_batch_size, prefix_cache_mb=model.prefix_cache_mb,
                             max_queued=model.max_queued_requests)  # loads on its own worker thread


__all__ = ["ChatBackend", "GenerationOptions", "Message", "create_backend", "default_options"]
