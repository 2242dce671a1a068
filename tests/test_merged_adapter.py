"""The active adapter merged into a copy of the weights: same answers as the run-time LoRA, the
base untouched beside it, the copy freed when the adapter stops being active.

On the real SmolLM2 GGUF with a hand-made random adapter (no training needed, seconds).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest

from assistant.errors import AdapterError
from assistant.llm.base import GenerationOptions, Message
from assistant.llm.lora_merge import MERGED_NAME, STAMP_NAME, ensure_merged
from tests.llamacpp_support import require_llama_cpp, small_gguf

pytestmark = pytest.mark.slow

HIDDEN, KV, FFN, LAYERS = 576, 192, 1536, 30  # SmolLM2-135M
SHAPES = {"self_attn.q_proj": (HIDDEN, HIDDEN), "self_attn.v_proj": (HIDDEN, KV), "mlp.down_proj": (FFN, HIDDEN)}
QUESTION: list[Message] = [{"role": "system", "content": "You are a helpful, concise assistant."},
                           {"role": "user", "content": "Tell me about the moon."}]


def random_adapter(folder: Path, seed: int = 0, scale: float = 0.08) -> Path:
    """A peft-format LoRA (rank 4) on three kinds of matrix in every block, strong enough to change answers."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(LAYERS):
        for module, (fan_in, fan_out) in SHAPES.items():
            prefix = f"base_model.model.model.layers.{layer}.{module}"
            a = rng.standard_normal((4, fan_in)) / np.sqrt(fan_in)
            tensors[f"{prefix}.lora_A.weight"] = a.astype(np.float32)
            tensors[f"{prefix}.lora_B.weight"] = (rng.standard_normal((fan_out, 4)) * scale).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 4}))
    return folder


@pytest.fixture(scope="module")
def adapter_gguf(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from assistant.llm.lora_gguf import ensure_gguf_adapter

    require_llama_cpp()
    return ensure_gguf_adapter(random_adapter(tmp_path_factory.mktemp("lora") / "a"), "llama", (9, 3))


def first_logits(model: object, adapter: object = None) -> np.ndarray:
    model.use_adapter(adapter)  # type: ignore[attr-defined]
    model.forget(0)  # type: ignore[attr-defined]
    tokens = model.tokenize(model.render(QUESTION))  # type: ignore[attr-defined]
    index = model.decode([(0, tokens, 0, True)])[0]  # type: ignore[attr-defined]
    return np.array(model.logits(index))  # type: ignore[attr-defined]


def test_the_merged_model_computes_what_the_run_time_adapter_does(models_dir: Path, adapter_gguf: Path,
                                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gguf

    from assistant.llm import lora_merge
    from assistant.llm.gguf_runtime import GgufModel

    base_path = small_gguf(models_dir)
    merged_path = ensure_merged(base_path, adapter_gguf)  # cached for the engine test below
    assert merged_path == adapter_gguf.parent / MERGED_NAME
    assert json.loads((adapter_gguf.parent / STAMP_NAME).read_text())["merger"] == 3
    mtime = merged_path.stat().st_mtime_ns
    assert ensure_merged(base_path, adapter_gguf).stat().st_mtime_ns == mtime  # merged once
    base_tensors = {t.name: t for t in gguf.GGUFReader(str(base_path)).tensors}
    for tensor in gguf.GGUFReader(str(merged_path)).tensors:
        if tensor.name.endswith(("attn_q.weight", "attn_v.weight", "ffn_down.weight")):
            assert tensor.tensor_type == gguf.GGMLQuantizationType.Q8_0, tensor.name
        else:  # untouched tensors are copied byte for byte
            assert np.array_equal(np.asarray(tensor.data), np.asarray(base_tensors[tensor.name].data)), tensor.name
    # The reference: the same merge done exactly, every merged matrix in F16.
    monkeypatch.setattr(lora_merge, "_merged_type", lambda row_length, base_type: gguf.GGMLQuantizationType.F16)
    exact_path = tmp_path / "exact.gguf"
    lora_merge.merge_adapter(base_path, adapter_gguf, exact_path)
    base = GgufModel(base_path, n_seq=1, ctx_per_seq=256, threads=2)
    merged = GgufModel(merged_path, n_seq=1, ctx_per_seq=256, threads=2)
    exact = GgufModel(exact_path, n_seq=1, ctx_per_seq=256, threads=2)
    try:
        plain = first_logits(base)
        runtime = first_logits(base, base.load_adapter(adapter_gguf))
        copy = first_logits(merged)
        reference = first_logits(exact)
    finally:
        base.close()
        merged.close()
        exact.close()
    change, merged_change = reference - plain, copy - plain
    cosine = change @ merged_change / np.linalg.norm(change) / np.linalg.norm(merged_change)
    assert np.linalg.norm(change) > 0.1 * np.linalg.norm(plain - plain.mean())  # the adapter matters
    # Against the exact merge, not the run-time adapter: llama.cpp's run-time LoRA path is the
    # noisier one on some CPUs. On a 2-core AVX-512 Xeon its change agreed with the exact merge's
    # at cos 0.92 / 0.60 / 0.98 for three adapter strengths, the Q8_0 copy's at 0.93 / 0.96 / 0.99
    # (an AVX2 EPYC: copy and run-time adapter cos 0.96 to each other).
    assert cosine > 0.9, cosine
    # The merge itself checked against llama.cpp's own, independent LoRA path (a wrong delta, a
    # wrong scale or a transposed matrix would fail here), with room for that path's noise.
    runtime_change = runtime - plain
    agreement = change @ runtime_change / np.linalg.norm(change) / np.linalg.norm(runtime_change)
    assert agreement > 0.5, agreement
    assert 0.5 < np.linalg.norm(change) / np.linalg.norm(runtime_change) < 2.0
    assert int(np.argmax(copy)) == int(np.argmax(reference)) == int(np.argmax(runtime))


def test_tensors_the_adapter_leaves_alone_come_from_the_copy_the_engine_serves(models_dir: Path, adapter_gguf: Path,
                                                                               tmp_path: Path) -> None:
    """On a CPU the engine serves a Q8_0 copy (`cpu_weights`); a merge that copied the published
    file's Q5_0 matrices would make the adapter's lane slower than the base it stands in for."""
    import gguf

    from assistant.llm.cpu_weights import weights_to_serve
    from assistant.llm.lora_gguf import ensure_gguf_adapter

    published = small_gguf(models_dir)
    served = weights_to_serve(published, "q8_0")
    assert served != published
    folder = tmp_path / "b"
    random_adapter(folder, seed=3, scale=0.01)
    merged = ensure_merged(published, ensure_gguf_adapter(folder, "llama", (9, 3)), served=served)
    assert json.loads((folder / STAMP_NAME).read_text())["served"] == str(served.resolve())
    copy = {t.name: t for t in gguf.GGUFReader(str(served)).tensors}
    for tensor in gguf.GGUFReader(str(merged)).tensors:
        if not tensor.name.endswith(("attn_q.weight", "attn_v.weight", "ffn_down.weight")):
            assert tensor.tensor_type == copy[tensor.name].tensor_type, tensor.name
            assert np.array_equal(np.asarray(tensor.data), np.asarray(copy[tensor.name].data)), tensor.name


def test_merged_again_when_the_adapter_is_retrained(models_dir: Path, tmp_path: Path) -> None:
    from assistant.llm.lora_gguf import ensure_gguf_adapter

    folder = tmp_path / "a"
    (folder / MERGED_NAME).parent.mkdir()
    (folder / MERGED_NAME).write_bytes(b"GGUF from an older training")
    (folder / STAMP_NAME).write_text(json.dumps({"adapter_sha256": "0" * 64, "merger": 2}))
    random_adapter(folder, seed=1, scale=0.01)
    out = ensure_merged(small_gguf(models_dir), ensure_gguf_adapter(folder, "llama", (9, 3)))
    assert out.stat().st_size > 50_000_000 and json.loads((folder / STAMP_NAME).read_text())["adapter_sha256"] != "0" * 64
    assert not list(folder.glob(".*partial"))


def test_an_adapter_for_another_model_is_refused_before_anything_is_written(models_dir: Path,
                                                                            tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    from assistant.llm.lora_gguf import ensure_gguf_adapter

    folder = tmp_path / "wide"
    folder.mkdir()
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file({f"{prefix}.lora_A.weight": np.ones((2, 896), np.float32),
               f"{prefix}.lora_B.weight": np.ones((896, 2), np.float32)}, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 2}))
    with pytest.raises(AdapterError, match="trained for another base model"):
        ensure_merged(small_gguf(models_dir), ensure_gguf_adapter(folder, "llama", (14, 2)))
    assert not (folder / MERGED_NAME).exists() and not list(folder.glob(".*partial"))


async def wait_for(predicate: object, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the merged copy never came in"
        await asyncio.sleep(0.1)


async def test_the_engine_serves_the_active_adapter_from_the_merged_copy(models_dir: Path, tmp_path: Path) -> None:
    from assistant.llm.llamacpp_engine import LlamaCppEngine

    require_llama_cpp()
    source = random_adapter(tmp_path / "moon", scale=0.15)  # changes the first 12 tokens on the Q8_0 copy too
    reference = LlamaCppEngine(small_gguf(models_dir), max_batch_size=2, merge_active=False)
    engine = LlamaCppEngine(small_gguf(models_dir), max_batch_size=2)
    options = GenerationOptions(max_new_tokens=12)
    try:
        await reference.load_adapter("moon", str(source))
        expected_base = await reference.complete(QUESTION, GenerationOptions(max_new_tokens=12, adapter=None))
        expected = await reference.complete(QUESTION, GenerationOptions(max_new_tokens=12, adapter="moon"))
        assert expected != expected_base
        await engine.load_adapter("moon", str(source))
        assert engine.merged_adapter is None  # loading alone merges nothing
        engine.set_active_adapter("moon")
        await wait_for(lambda: engine.merged_adapter == "moon")
        assert (source / MERGED_NAME).is_file()
        # the active adapter (from the copy) and the base (run on the base model) in the same steps
        adapted, plain = await asyncio.gather(engine.complete(QUESTION, options),
                                              engine.complete(QUESTION, GenerationOptions(max_new_tokens=12,
                                                                                          adapter=None)))
        assert adapted == expected and plain == expected_base
        await engine.load_adapter("moon", str(source))  # reloaded (retrained) while active: merged again
        assert engine.merged_adapter is None
        await wait_for(lambda: engine.merged_adapter == "moon")
        assert await engine.complete(QUESTION, options) == expected
        engine.set_active_adapter(None)
        assert await engine.complete(QUESTION, options) == expected_base
        assert engine.merged_adapter is None and not (source / MERGED_NAME).exists()  # freed, file removed
        assert await engine.complete(QUESTION, GenerationOptions(max_new_tokens=12, adapter="moon")) == expected
    finally:
        engine.close()
        reference.close()


async def test_closing_the_engine_mid_merge_leaves_no_partial_file(models_dir: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from assistant.llm import lora_merge
    from assistant.llm.llamacpp_engine import LlamaCppEngine

    merge_one = lora_merge._merged_tensor

    def slowly(*args: object) -> object:  # this model merges in ~1 s: widen the window to ~5 s
        time.sleep(0.05)
        return merge_one(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(lora_merge, "_merged_tensor", slowly)
    folder = random_adapter(tmp_path / "fresh", seed=2)
    engine = LlamaCppEngine(small_gguf(models_dir), max_batch_size=1)
    try:
        await engine.load_adapter("fresh", str(folder))
        engine.set_active_adapter("fresh")
        await asyncio.sleep(1.0)  # the merge is under way
    finally:
        started = time.perf_counter()
        engine.close()
    assert time.perf_counter() - started < 10
    assert not (folder / MERGED_NAME).exists() and not list(folder.glob(".*partial"))
