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
    assert not (folder / GGUF_NAME).exists() and not (folder / f".{GGUF_NAME}.partial").exists()


def test_a_truncated_or_missing_adapter_is_refused(tmp_path: Path) -> None:
    folder = write_adapter(tmp_path / "t", lora_pair(np.random.default_rng(3), "self_attn.q_proj"))
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-40])
    with pytest.raises(AdapterError, match="truncated"):
        ensure_gguf_adapter(folder, "llama")
    with pytest.raises(AdapterError, match="no adapter_model.safetensors"):
        ensure_gguf_adapter(tmp_path / "nowhere", "llama")
