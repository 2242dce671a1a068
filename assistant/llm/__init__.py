"""Chat backends. `create_backend` is the one place that turns `[model]` config into a backend."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable

from assistant.config import ModelConfig
from assistant.llm.base import ChatBackend, GenerationOptions, Message

logger = logging.getLogger(__name__)

def default_options(model: ModelConfig, *, spoken: bool = False, **overrides: Any) -> GenerationOptions:
    """The request options `[model]` configures, with `overrides` (any GenerationOptions field) on top;
    `spoken` answers get the repetition guard by default (a repeated sentence is merely odd on
    screen but painful to listen to)."""
    options = GenerationOptions(max_new_tokens=model.max_new_tokens, temperature=model.temperature, top_p=model.top_p)
    if model.repetition_guard == "always" or model.repetition_guard == "spoken" and spoken:
        options = dataclasses.replace(options, repetition_penalty=model.repetition_penalty,
                                      no_repeat_ngram=model.no_repeat_ngram)
    return dataclasses.replace(options, **overrides)


def choose_engine(model: ModelConfig, models_dir: Path) -> tuple[str, str]:
    """Which local engine `model.backend` means here, and why (logged at start-up).

    "auto": llama.cpp for a model that has a GGUF here on a CPU (4-6x faster than
    transformers there); transformers on a CUDA GPU (continuous batching with mixed adapters
    pays there), for hub ids and folders without a GGUF, or when llama-cpp-python is missing.
    """
    from assistant.llm.catalog import gguf_path
    from assistant.llm.gguf_runtime import llama_cpp_available, set_thread_wait

    if model.backend != "auto":
        return model.backend, "configured"
    if model.device == "cuda" or model.device == "auto" and _cuda_present():
        return "transformers", "a CUDA GPU is present"
    if gguf_path(model.name, models_dir) is None:
        return "transformers", f"{model.name!r} has no GGUF file here"
    set_thread_wait(model.thread_wait)  # before llama.cpp's OpenMP runtime first loads
    missing = llama_cpp_available()
    if missing:
        return "transformers", missing
    return "llama.cpp", "a GGUF model on the CPU"


def _cuda_present() -> bool:
    """Ask torch only where an NVIDIA driver exists: importing torch costs seconds."""
    if not Path("/proc/driver/nvidia/version").exists():
        return False
    import torch

    return bool(torch.cuda.is_available())


def create_backend(model: ModelConfig, models_dir: Path, *, api_key: str = "") -> ChatBackend:
    """Build the configured backend. Loading a local model takes seconds: call it once at start-up."""
    if model.backend == "openai":
        return _openai(model, models_dir, api_key)
    engine, reason = choose_engine(model, models_dir)
    logger.info("Chat engine: %s (%s)", engine, reason)
    if engine == "llama.cpp":
        return _llama_cpp(model, models_dir)
    from assistant.llm.engine import TransformersEngine
    from assistant.llm.loader import LoadedModel, load_causal_lm

    def load() -> LoadedModel:
        return load_causal_lm(model.name, models_dir, device=model.device, dtype=model.dtype, threads=model.threads)

    return TransformersEngine(load, max_batch_size=model.max_batch_size, prefix_cache_mb=model.prefix_cache_mb,
                             max_queued=model.max_queued_requests)  # loads on its own worker thread


def _openai(model: ModelConfig, models_dir: Path, api_key: str) -> ChatBackend:
    """An OpenAI-compatible server; for llama-server also the adapter converter and, with
    `manage_server`, the llama-server process we run ourselves on the model's GGUF."""
    from assistant.llm.openai_backend import OpenAIBackend

    convert: Callable[[Path], Path] | None = None
    managed = None
    if model.openai_server == "llama-server":
        from assistant.errors import ModelNotAvailableError
        from assistant.llm.catalog import gguf_path
        from assistant.llm.llama_server import ManagedLlamaServer, find_llama_server, gguf_architecture
        from assistant.llm.lora_gguf import ensure_gguf_adapter

        gguf = gguf_path(model.name, models_dir)
        if gguf is not None:
            architecture, heads = gguf_architecture(gguf)

            def convert(folder: Path) -> Path:
                return ensure_gguf_adapter(folder, architecture, heads)
        if model.manage_server:
            if gguf is None:
                raise ModelNotAvailableError(f"model.manage_server needs {model.name!r} as a GGUF file here; run "
                                             "`assistant models fetch` or set model.name to a .gguf file.")
            managed = ManagedLlamaServer(find_llama_server(model.llama_server_binary), gguf,
                                         port=model.llama_server_port, context=model.context_tokens,
                                         parallel=model.max_batch_size, threads=model.threads)
    return OpenAIBackend(model.openai_base_url, model.openai_model, api_key=api_key,
                         timeout_s=model.request_timeout_s, server=model.openai_server,
                         adapter_dir=model.openai_adapter_dir, convert=convert, managed=managed)


def _llama_cpp(model: ModelConfig, models_dir: Path) -> ChatBackend:
    from assistant.errors import ModelNotAvailableError
    from assistant.llm.catalog import CATALOG, gguf_path
    from assistant.llm.gguf_runtime import llama_cpp_available, set_thread_wait

    set_thread_wait(model.thread_wait)
    missing = llama_cpp_available()
    if missing:
        raise ModelNotAvailableError(f"model.backend is 'llama.cpp' but {missing}.")
    path = gguf_path(model.name, models_dir)
    if path is None:
        hint = ("run `assistant models fetch`" if model.name in CATALOG
                else "set model.name to a .gguf file or a provisioned model")
        raise ModelNotAvailableError(f"model.backend is 'llama.cpp' but {model.name!r} has no GGUF file here; {hint}.")
    from assistant.llm.llamacpp_engine import LlamaCppEngine

    return LlamaCppEngine(path, max_batch_size=model.max_batch_size, context_tokens=model.context_tokens,
                          threads=model.threads, gpu=model.device == "cuda", prefix_reuse=model.prefix_cache_mb > 0,
                          thread_wait=model.thread_wait, max_queued=model.max_queued_requests,
                          merge_active=model.merge_active_adapter, cpu_weights=model.cpu_weights)


__all__ = ["ChatBackend", "GenerationOptions", "Message", "choose_engine", "create_backend", "default_options"]
