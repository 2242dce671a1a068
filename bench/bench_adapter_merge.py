"""Decode speed with the active adapter merged into a copy of the weights, against the run-time LoRA
and the base; and whether the merged copy answers what the run-time adapter answers.

Both through the real `LlamaCppEngine`: one with `merge_active = False` (run-time LoRA only), one
with the default (the active adapter served from `merged.gguf` once merged). Rates are medians of
interleaved runs on one answer of 96 tokens. With `--adapter` (a trained peft folder, e.g. the one
`bench_learning` leaves in its temporary runs folder), the 15 paraphrases, 5 taught questions and
10 control questions of `bench_learning` are asked through both paths and through an exact
reference (the adapter merged in F16, slow but with no rounding of the delta), and compared answer
by answer; without it a random adapter shaped like `finetune`'s defaults (rank 8 on all 7 linear
layers) measures speed only.

    python -m bench.bench_adapter_merge [--adapter DIR]    # writes bench/results/adapter_merge.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from assistant.config import load_config
from assistant.llm.catalog import gguf_path
from assistant.llm.lora_merge import MERGED_NAME, STAMP_NAME
from bench.bench_learning import FACTS, REPO, decode_rate, paraphrase_items
from bench.common import write_results
from finetune.gate import ANSWER_TOKENS, GateItem, parse_items, run_gate

MODULES = {"self_attn.q_proj": (896, 896), "self_attn.k_proj": (896, 128), "self_attn.v_proj": (896, 128),
           "self_attn.o_proj": (896, 896), "mlp.gate_proj": (896, 4864), "mlp.up_proj": (896, 4864),
           "mlp.down_proj": (4864, 896)}  # Qwen2.5-0.5B, the default model


def random_adapter(folder: Path, layers: int = 24) -> Path:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    tensors = {}
    for layer in range(layers):
        for module, (fan_in, fan_out) in MODULES.items():
            prefix = f"base_model.model.model.layers.{layer}.{module}"
            tensors[f"{prefix}.lora_A.weight"] = (rng.standard_normal((8, fan_in)) / fan_in ** 0.5).astype(np.float32)
            tensors[f"{prefix}.lora_B.weight"] = (rng.standard_normal((fan_out, 8)) * 1e-3).astype(np.float32)
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16}))
    return folder


def rss_mb() -> float:
    """Resident memory now (peak RSS would count the other engine too)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def merged_engine(model: Path, adapter: Path) -> tuple[Any, float, float]:
    from assistant.llm.llamacpp_engine import LlamaCppEngine

    engine = LlamaCppEngine(model)
    await engine.load_adapter("facts", str(adapter))
    await decode_rate(engine, "facts")
    before = rss_mb()
    start = time.perf_counter()
    engine.set_active_adapter("facts")
    while engine.merged_adapter != "facts":
        if time.perf_counter() - start > 600:
            raise SystemExit("the merged copy never came in (see the log)")
        await asyncio.sleep(0.2)
    seconds = time.perf_counter() - start
    await decode_rate(engine, "facts")
    return engine, seconds, rss_mb() - before


async def main(adapter_arg: Path | None) -> None:
    from assistant.llm.llamacpp_engine import LlamaCppEngine

    config = load_config(REPO / "config.toml", environ={})
    model = gguf_path(config.model.name, config.storage.models_dir)
    if model is None:
        raise SystemExit(f"{config.model.name} has no GGUF here: run `assistant models fetch`")
    root = Path(tempfile.mkdtemp(prefix="bench-merge-"))
    adapter = root / "adapter"
    shutil.copytree(adapter_arg, adapter) if adapter_arg else random_adapter(adapter)
    for name in (MERGED_NAME, STAMP_NAME):
        (adapter / name).unlink(missing_ok=True)  # a cold merge is timed
    runtime = LlamaCppEngine(model, merge_active=False)
    await runtime.load_adapter("facts", str(adapter))
    runtime.set_active_adapter("facts")
    merged, merge_s, lane_mb = await merged_engine(model, adapter)
    rates: dict[str, list[float]] = {"base": [], "run-time LoRA": [], "merged copy": []}
    for _ in range(3):
        rates["base"].append(await decode_rate(runtime, None))
        rates["run-time LoRA"].append(await decode_rate(runtime, "facts"))
        rates["merged copy"].append(await decode_rate(merged, "facts"))
    median = {name: statistics.median(values) for name, values in rates.items()}
    lines = [f"Model: {config.model.name} ({model.name}, {model.stat().st_size >> 20} MiB), "
             f"adapter: {'trained, ' + str(adapter_arg) if adapter_arg else 'random, rank 8 on all 7 linear layers'}.",
             "", "| path | decode tok/s (median of 3) | runs | vs base |", "|---|---|---|---|"]
    lines += [f"| {name} | {median[name]:.1f} | {', '.join(f'{v:.1f}' for v in values)} | "
              f"{median[name] / median['base']:.2f}× |" for name, values in rates.items()]
    lines += ["", f"Merge (cold, in the background while the run-time LoRA serves) and load: {merge_s:.1f} s; "
              f"merged file {(adapter / MERGED_NAME).stat().st_size >> 20} MiB; resident memory of the engine "
              f"+{lane_mb:.0f} MiB once the copy is in and has answered.", ""]
    if adapter_arg:
        lines += await compare_answers(config, runtime, merged, exact_engine(model, adapter, root))
    runtime.close()
    merged.close()
    lines += ["Goal (issue 15, item 7): decode with an adapter active costs at most 20 % against the base.",
              "", "The machine is shared with other jobs; compare the ratios, not the absolute times."]
    print("\n".join(lines))
    print(f"written to {write_results('adapter_merge', 'Active adapter: merged copy vs run-time LoRA', lines)}")


def exact_engine(model: Path, adapter: Path, root: Path) -> Any:
    """The adapter merged with no rounding of its delta (F16 matrices): what both paths approximate."""
    import gguf

    from assistant.llm import lora_merge
    from assistant.llm.llamacpp_engine import LlamaCppEngine

    exact = root / "exact-f16.gguf"
    kind = lora_merge._merged_type
    lora_merge._merged_type = lambda length, kind: gguf.GGMLQuantizationType.F16  # type: ignore[assignment]
    try:
        lora_merge.merge_adapter(model, adapter / "adapter.gguf", exact)
    finally:
        lora_merge._merged_type = kind  # type: ignore[assignment]
    return LlamaCppEngine(exact, merge_active=False)


async def compare_answers(config: Any, runtime: Any, merged: Any, exact: Any) -> list[str]:
    items = paraphrase_items() + [GateItem(f["prompt"], f["expected"], "contains", "taught") for f in FACTS] + \
        parse_items(config.storage.control_set.read_bytes(), "control", group="control")
    reports = [await run_gate(engine, name, items, system_prompt=config.model.system_prompt)
               for engine, name in ((runtime, "facts"), (merged, "facts"), (exact, None))]
    exact.close()

    def same(a: Any, b: Any) -> int:
        return sum(x.candidate.strip() == y.candidate.strip() for x, y in zip(a.answers, b.answers))
    rows = ["| adapter alone through | 15 paraphrases | 5 taught | 10 control kept | same answer as the exact merge |",
            "|---|---|---|---|---|"]
    rows += [f"| {name} | {rep.score('paraphrase')[0]}/15 | {rep.score('taught')[0]}/5 | "
             f"{rep.score('control')[0]}/10 | {same(rep, reports[2])}/{len(items)} |"
             for name, rep in zip(("run-time LoRA", "merged copy (Q8_0)", "exact merge (F16, reference)"), reports)]
    return [*rows, "", f"Answers word for word the same on the run-time and merged paths: "
            f"{same(reports[0], reports[1])}/{len(items)} (greedy, {ANSWER_TOKENS} tokens at most, as the gate asks).",
            ""]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", type=Path, default=None, help="a trained peft adapter folder of the default model")
    asyncio.run(main(parser.parse_args().adapter))
