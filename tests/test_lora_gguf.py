"""peft → GGUF LoRA conversion on small hand-made adapters (fast; the real one is in tests/finetune)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from assistant.errors import AdapterError
from assistant.llm.lora_gguf import GGUF_NAME, STAMP_NAME, ensure_gguf_adapter


def write_adapter(folder: Path, tensors: dict[str, np.ndarray], **config: object) -> Path:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4,
                                                            **config}))
    return folder


def lora_pair(rng: np.random.Generator, module: str) -> dict[str, np.ndarray]:
    prefix = f"base_model.model.model.layers.1.{module}"
    return {f"{prefix}.lora_A.weight": rng.standard_normal((2, 8), dtype=np.float32),
            f"{prefix}.lora_B.weight": rng.standard_normal((16, 2), dtype=np.float32)}


def read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    tensors = {t.name: np.array(t.data).reshape([int(d) for d in reversed(t.shape)]) for t in reader.tensors}
    fields = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}
    return tensors, fields


def test_names_shapes_metadata_and_the_folded_scale(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tensors = {**lora_pair(rng, "self_attn.q_proj"), **lora_pair(rng, "mlp.down_proj")}
    folder = write_adapter(tmp_path / "adapter", tensors)
    out = ensure_gguf_adapter(folder, "qwen2")
    converted, fields = read(out)
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    assert fields["general.architecture"] == "qwen2" and fields["adapter.lora.alpha"] == 0.0
    assert sorted(converted) == ["blk.1.attn_q.weight.lora_a", "blk.1.attn_q.weight.lora_b",
                                 "blk.1.ffn_down.weight.lora_a", "blk.1.ffn_down.weight.lora_b"]
    a = tensors["base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"]
    b = tensors["base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"]
    np.testing.assert_allclose(converted["blk.1.attn_q.weight.lora_a"], a)
    np.testing.assert_allclose(converted["blk.1.attn_q.weight.lora_b"], b * 4 / 2)  # alpha / r folded in
    assert json.loads((folder / STAMP_NAME).read_text())["architecture"] == "qwen2"


def test_cached_until_the_adapter_changes_and_rslora_scales(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    folder = write_adapter(tmp_path / "a", lora_pair(rng, "self_attn.v_proj"))
    first = ensure_gguf_adapter(folder, "llama")
    stamp = first.stat().st_mtime_ns
    assert ensure_gguf_adapter(folder, "llama").stat().st_mtime_ns == stamp  # cached
    tensors = lora_pair(rng, "self_attn.v_proj")
    write_adapter(folder, tensors, use_rslora=True)  # retrained: converted again
    converted, _ = read(ensure_gguf_adapter(folder, "llama"))
    b = tensors["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"]
    np.testing.assert_allclose(converted["blk.1.attn_v.weight.lora_b"], b * 4 / np.sqrt(2), rtol=1e-6)
    assert sorted(p.name for p in folder.iterdir()) == ["adapter.gguf", "adapter.gguf.json", "adapter_config.json",
                                                        "adapter_model.safetensors"]


@pytest.mark.parametrize(("config", "tensors", "message"), [
    ({"use_dora": True}, None, "DoRA"),
    ({"modules_to_save": ["lm_head"]}, None, "whole modules"),
    ({}, {"base_model.model.lm_head.lora_A.weight": np.zeros((2, 8), np.float32),
          "base_model.model.lm_head.lora_B.weight": np.zeros((16, 2), np.float32)}, "cannot map"),
    ({}, {"base_model.model.model.layers.0.self_attn.q_proj.weight": np.zeros((2, 2), np.float32)}, "not a LoRA"),
])
def test_what_llama_cpp_cannot_apply_is_refused_and_nothing_is_written(
        tmp_path: Path, config: dict[str, object], tensors: dict[str, np.ndarray] | None, message: str) -> None:
    folder = write_adapter(tmp_path / "bad", tensors or lora_pair(np.random.default_rng(2), "self_attn.q_proj"),
                           **config)
    with pytest.raises(AdapterError, match=message):
        ensure_gguf_adapter(folder, "llama")
    assert not (folder / GGUF_NAME).exists() and not list(folder.glob(f".{GGUF_NAME}.*partial"))


def test_a_truncated_or_missing_adapter_is_refused(tmp_path: Path) -> None:
    folder = write_adapter(tmp_path / "t", lora_pair(np.random.default_rng(3), "self_attn.q_proj"))
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-40])
    with pytest.raises(AdapterError, match="truncated"):
        ensure_gguf_adapter(folder, "llama")
    with pytest.raises(AdapterError, match="no adapter_model.safetensors"):
        ensure_gguf_adapter(tmp_path / "nowhere", "llama")


def test_llama_q_and_k_rows_are_permuted_like_the_base_weights(tmp_path: Path) -> None:
    """convert_hf_to_gguf stores llama's q/k rows interleaved for rotary; B must follow."""
    rng = np.random.default_rng(4)
    tensors = {**lora_pair(rng, "self_attn.q_proj"), **lora_pair(rng, "self_attn.k_proj"),
               **lora_pair(rng, "self_attn.v_proj")}
    folder = write_adapter(tmp_path / "llama", tensors)
    converted, _ = read(ensure_gguf_adapter(folder, "llama", heads=(4, 2)))

    def permute(b: np.ndarray, heads: int) -> np.ndarray:  # convert_hf_to_gguf.LlamaModel.permute
        return b.reshape(heads, 2, b.shape[0] // heads // 2, *b.shape[1:]).swapaxes(1, 2).reshape(b.shape)

    key = "base_model.model.model.layers.1.self_attn.{}.lora_B.weight"
    np.testing.assert_allclose(converted["blk.1.attn_q.weight.lora_b"], permute(tensors[key.format("q_proj")] * 2, 4))
    np.testing.assert_allclose(converted["blk.1.attn_k.weight.lora_b"], permute(tensors[key.format("k_proj")] * 2, 2))
    np.testing.assert_allclose(converted["blk.1.attn_v.weight.lora_b"], tensors[key.format("v_proj")] * 2)
    with pytest.raises(AdapterError, match="supported: llama, qwen2"):
        ensure_gguf_adapter(write_adapter(tmp_path / "g", tensors), "gemma3")


@pytest.mark.slow
def test_llama_cpp_changes_the_logits_as_peft_does(models_dir: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The same LoRA on SmolLM2 (llama: the permuted case): the change it makes to the next-token
    logits in llama.cpp (quantized base) matches the change in transformers (fp32 base), and matches
    it better than the same adapter converted without the q/k permutation.

    The LoRA is made large enough (B scaled by 0.3) to stand well above the quantized base's own
    noise: with B x 0.12 an AVX2-only CPU (no VNNI) measured ratio 0.63 / correlation 0.69 for the
    correct conversion, where an AVX-512 one had measured 1.00 / 0.80; at 0.3 the AVX2 CPU gives
    0.84 / 0.93 permuted against 0.65 / 0.85 unpermuted."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from assistant.llm import lora_gguf
    from assistant.llm.gguf_runtime import GgufModel
    from tests.llamacpp_support import SMALL, require_llama_cpp, small_gguf

    require_llama_cpp()
    folder = models_dir / "llm" / SMALL
    tokenizer = AutoTokenizer.from_pretrained(folder)
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    messages = [{"role": "system", "content": "You are a helpful, concise assistant."},
                {"role": "user", "content": "What is your name?"}]
    ids = tokenizer(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False),
                    add_special_tokens=False, return_tensors="pt")["input_ids"]
    torch.manual_seed(0)
    lora = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False))
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.mul_(0.3)
        adapted = lora(ids).logits[0, -1].numpy()
        with lora.disable_adapter():
            plain = lora(ids).logits[0, -1].numpy()
    lora.save_pretrained(tmp_path / "adapter")
    model = GgufModel(small_gguf(models_dir), n_seq=1, ctx_per_seq=512, threads=2)
    try:
        tokens = model.tokenize(model.render(messages))  # type: ignore[arg-type]
        assert tokens == ids[0].tolist()
        before = np.array(model.logits(model.decode([(0, tokens, 0, True)])[0]))
        changes = []
        permuted = ensure_gguf_adapter(tmp_path / "adapter", model.architecture, model.heads)
        unpermuted = tmp_path / "unpermuted.gguf"
        with monkeypatch.context() as patch:  # the same conversion, as if llama's rows needed no permutation
            patch.setattr(lora_gguf, "_PERMUTED", {})
            lora_gguf.convert_adapter(tmp_path / "adapter", model.architecture, unpermuted, model.heads)
        for path in (permuted, unpermuted):
            model.use_adapter(model.load_adapter(path))
            model.forget(0)
            changes.append(np.array(model.logits(model.decode([(0, tokens, 0, True)])[0])) - before)
    finally:
        model.close()
    theirs = adapted - plain
    (ratio, corr), (_, corr_unpermuted) = [(np.linalg.norm(c) / np.linalg.norm(theirs), np.corrcoef(c, theirs)[0, 1])
                                           for c in changes]
    assert 0.8 < ratio < 1.25, ratio
    assert corr > 0.85, corr
    assert corr > corr_unpermuted + 0.03, (corr, corr_unpermuted)


def test_merged_matrices_are_q8_0_unless_the_base_is_already_that_fine() -> None:
    """Requantizing onto the grid the base weights already sit on would round the LoRA delta away."""
    from gguf import GGMLQuantizationType as Kind

    from assistant.llm.lora_merge import _merged_type

    assert _merged_type(896, Kind.Q5_0) == Kind.Q8_0 and _merged_type(4864, Kind.Q4_K) == Kind.Q8_0
    assert _merged_type(896, Kind.Q8_0) == Kind.F16 and _merged_type(896, Kind.F32) == Kind.F16
    assert _merged_type(100, Kind.Q4_0) == Kind.F16  # Q8_0 blocks rows of 32
