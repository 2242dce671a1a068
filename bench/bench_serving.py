"""Serving through llama-server against our in-process llama.cpp engine, on the same GGUF, in one run.

    .venv/bin/python bench/bench_serving.py [--tokens 64] [--name smollm2-135m-instruct]

Writes bench/results/serving.md: batch-1 decode tok/s and 8-concurrent aggregate tok/s for both,
and the adapter switch time through a managed llama-server (a restart with one more adapter).
The adapter is a LoRA made here with peft (random, untrained): only its loading is timed.
Tokens are counted with the model's own tokenizer on the returned text, the same way for both.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["Write a short story about a robot who learns to paint.", "Explain how a rainbow forms.",
           "Describe the city of Paris in detail.", "Write a poem about autumn leaves.",
           "Explain what a computer does, step by step.", "Tell me about the history of the bicycle.",
           "Describe a day in the life of a farmer.", "Explain why the sky is blue."]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def measure(backend: Any, count_tokens: Any, tokens: int) -> dict[str, float]:
    from assistant.llm.base import GenerationOptions

    opts = GenerationOptions(max_new_tokens=tokens)
    await backend.complete([{"role": "user", "content": "warm up"}], GenerationOptions(max_new_tokens=4))
    started = time.perf_counter()
    first: float | None = None
    text = ""
    async for delta in backend.stream([{"role": "user", "content": PROMPTS[0]}], opts):
        first = first or time.perf_counter()
        text += delta
    end = time.perf_counter()
    decode = (count_tokens(text) - 1) / (end - (first or started))
    started = time.perf_counter()
    answers = await asyncio.gather(*(backend.complete([{"role": "user", "content": p}], opts) for p in PROMPTS))
    aggregate = sum(count_tokens(a) for a in answers) / (time.perf_counter() - started)
    return {"decode": decode, "aggregate": aggregate}


def make_adapter(source: str, out: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    folder = out / "bench-adapter" / "adapter"
    peft.save_pretrained(str(folder))
    (folder / "finetune.json").write_text('{"base_model": {"name": "%s"}}' % Path(source).name, encoding="utf-8")
    return folder


async def main(args: argparse.Namespace) -> None:
    from transformers import AutoTokenizer

    from assistant.adapters import AdapterManager
    from assistant.config import parse_config
    from assistant.llm import create_backend
    from assistant.llm.catalog import resolve_model_source

    binary = subprocess.run(["bash", "scripts/build_llama_server.sh"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.strip().splitlines()[-1]
    config = parse_config({"model": {"name": args.name, "device": "cpu"}})
    source = resolve_model_source(args.name, config.storage.models_dir)
    tokenizer = AutoTokenizer.from_pretrained(source)

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    ours = create_backend(dataclasses.replace(config.model, backend="llama.cpp", max_batch_size=8),
                          config.storage.models_dir)
    in_process = await measure(ours, count, args.tokens)
    await ours.aclose()
    served_model = dataclasses.replace(config.model, backend="openai", openai_server="llama-server",
                                       manage_server=True, llama_server_binary=binary,
                                       llama_server_port=free_port(), max_batch_size=8)
    served = create_backend(served_model, config.storage.models_dir)
    try:
        server = await measure(served, count, args.tokens)
        with tempfile.TemporaryDirectory() as tmp:
            make_adapter(source, Path(tmp))
            started = time.perf_counter()
            await AdapterManager(Path(tmp), served, source).activate("bench-adapter")
            switch = time.perf_counter() - started
    finally:
        await served.aclose()
    lines = [f"Model: {args.name} (its GGUF), {args.tokens} new tokens a request, greedy.",
             "", "| engine | batch-1 decode tok/s | 8 concurrent, aggregate tok/s |", "|---|---|---|",
             f"| ours, in process (llama.cpp) | {in_process['decode']:.1f} | {in_process['aggregate']:.1f} |",
             f"| llama-server (managed, HTTP) | {server['decode']:.1f} | {server['aggregate']:.1f} |",
             f"| ratio server / ours | {server['decode'] / in_process['decode']:.2f} | "
             f"{server['aggregate'] / in_process['aggregate']:.2f} |", "",
             f"Adapter switch on the managed llama-server (convert to GGUF + restart with the adapter): "
             f"**{switch:.1f} s**; on the in-process engines a switch costs no reload."]
    print("\n".join(lines))
    write_results("serving", "Serving through llama-server vs in process", lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--name", default="smollm2-135m-instruct")
    asyncio.run(main(parser.parse_args()))
