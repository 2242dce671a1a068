"""Loading a causal LM and its tokenizer on the right device and dtype.

Shared by the chat engine and by fine-tuning, so both make the same choice of device and
precision, and both give the same instructions when a model cannot be found offline.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.errors import ModelNotAvailableError
from assistant.llm.catalog import resolve_model_source

logger = logging.getLogger(__name__)


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 (AVX512-BF16 or AMX): bf16 is then ~1.6x faster to decode."""
    from assistant.cpu_features import cpu_flags

    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def choose_device(requested: str, *, cuda_available: bool) -> str:
    if requested == "cuda" and not cuda_available:
        raise ModelNotAvailableError("model.device is 'cuda' but no CUDA GPU is available; use 'auto' or 'cpu'.")
    if requested == "auto":
        return "cuda" if cuda_available else "cpu"
    return requested


def choose_dtype(requested: str, device: str, *, cpu_bf16: bool, cuda_bf16: bool) -> str:
    """bf16 where the hardware does it natively, fp32 otherwise; an explicit choice wins."""
    if requested != "auto":
        return requested
    if device == "cuda":
        return "bfloat16" if cuda_bf16 else "float16"
    return "bfloat16" if cpu_bf16 else "float32"


def _how_to_provision(name: str, reason: str) -> str:
    return (f"Could not load model {name!r} ({reason}). Offline, set model.name to a provisioned model "
            "(see `assistant models list`; the default is 'qwen2.5-coder-0.5b-instruct') and run "
            "`assistant models fetch`; online, check the hub id.")


def _cached(hub_id: str) -> bool:
    """True when the hub model's config is already in the local Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(hub_id, "config.json"), str)
    except (ImportError, ValueError):
        return False


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """A quick TCP probe of the hub endpoint, so offline users get an answer in seconds, not minutes of retries."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname or "", url.port or 443), timeout=timeout_s):
            return True
    except OSError:
        return False


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    device: str
    dtype: str
    source: str
    load_seconds: float


def load_causal_lm(name: str, models_dir: Path, *, device: str = "auto", dtype: str = "auto",
                   threads: int = 0) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own callers show progress where it matters
    if threads:
        torch.set_num_threads(threads)
    cuda = torch.cuda.is_available()
    dev = choose_device(device, cuda_available=cuda)
    dt = choose_dtype(dtype, dev, cpu_bf16=cpu_supports_bf16(),
                      cuda_bf16=cuda and torch.cuda.is_bf16_supported())
    source = resolve_model_source(name, models_dir)
    start = time.perf_counter()
    local_only = Path(source).exists() or _cached(source)
    if not local_only and not hub_reachable():
        raise ModelNotAvailableError(_how_to_provision(name, "the model hub cannot be reached"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, dt), local_files_only=local_only)
    except OSError as exc:
        raise ModelNotAvailableError(_how_to_provision(name, str(exc).splitlines()[0])) from None
    model.to(dev).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    elapsed = time.perf_counter() - start
    logger.info("Loaded %s on %s (%s) in %.1f s", source, dev, dt, elapsed)
    return LoadedModel(model=model, tokenizer=tokenizer, device=dev, dtype=dt, source=source,
                       load_seconds=elapsed)
