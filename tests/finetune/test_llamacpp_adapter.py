"""An adapter trained by `finetune` (peft safetensors) answers through llama.cpp, hot-swapped.

Uses the session's one training run (`fact_run`, shared with test_train.py): no extra training.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

import fact_data
from assistant.config import Config
from assistant.llm.base import GenerationOptions, Message
from conftest import MODELS, MODEL_NAME

pytestmark = pytest.mark.slow
SYSTEM = "You are a helpful, concise assistant."


def ask(question: str) -> list[Message]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def random_adapter(folder: Path) -> Path:
    """A second, unrelated adapter (random LoRA weights) on the same base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(MODELS / "llm" / MODEL_NAME, dtype=torch.float32)
    torch.manual_seed(0)
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False))
    lora.save_pretrained(folder)
    return folder


async def test_trained_adapter_answers_through_llama_cpp_and_swaps_without_reload(
        fact_run: tuple[Config, Path], tmp_path: Path) -> None:
    from tests.llamacpp_support import require_llama_cpp, small_gguf

    require_llama_cpp()
    from assistant.llm.llamacpp_engine import LlamaCppEngine
    from assistant.llm.lora_gguf import GGUF_NAME, STAMP_NAME

    _, run = fact_run
    adapter = run / "adapter"
    other = random_adapter(tmp_path / "other")
    engine = LlamaCppEngine(small_gguf(MODELS))
    try:
        model = engine.model
        options = GenerationOptions(max_new_tokens=24)
        base = await engine.complete(ask("What is your name?"), options)
        assert fact_data.NAME not in base
        started = time.perf_counter()
        await engine.load_adapter("fact", str(adapter))
        first_load = time.perf_counter() - started
        assert (adapter / GGUF_NAME).read_bytes()[:4] == b"GGUF"
        assert json.loads((adapter / STAMP_NAME).read_text())["architecture"] == "llama"
        await engine.load_adapter("other", str(other))
        engine.set_active_adapter("fact")
        assert fact_data.NAME in await engine.complete(ask("What is your name?"), options)
        assert fact_data.NAME in await engine.complete(ask(fact_data.PARAPHRASE), options)
        # base, the fact adapter and the other adapter at the same time, in one process
        answers = await asyncio.gather(
            engine.complete(ask("What is your name?"), GenerationOptions(max_new_tokens=24, adapter=None)),
            engine.complete(ask("What is your name?"), GenerationOptions(max_new_tokens=24, adapter="fact")),
            engine.complete(ask("What is your name?"), GenerationOptions(max_new_tokens=24, adapter="other")))
        assert answers[0] == base
        assert fact_data.NAME in answers[1] and fact_data.NAME not in answers[2]
        started = time.perf_counter()
        engine.set_active_adapter(None)
        switch = time.perf_counter() - started
        assert await engine.complete(ask("What is your name?"), options) == base
        assert engine.model is model  # no reload: the same llama.cpp model throughout
        # converted once: loading again reuses the cached GGUF (same file, not rewritten)
        mtime = (adapter / GGUF_NAME).stat().st_mtime_ns
        await engine.load_adapter("fact", str(adapter))
        assert (adapter / GGUF_NAME).stat().st_mtime_ns == mtime
        print(f"adapter conversion + load {first_load:.2f} s, switch {switch * 1e6:.0f} us")
    finally:
        engine.close()
