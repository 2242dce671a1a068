"""peft LoRA adapters (safetensors) converted to GGUF LoRA files that llama.cpp loads.

Why our own converter rather than llama.cpp's `convert_lora_to_gguf.py`: that script needs
the base model's full transformers folder, torch and the converter module of the matching
llama.cpp checkout; the mapping an adapter needs is only tensor names, which the `gguf`
package already knows (`TensorNameMap`). peft's scale (alpha / r, alpha / sqrt(r) with
rsLoRA, per-module rank and alpha patterns) is folded into each B matrix and the file's
alpha is 0, which llama.cpp reads as "scale 1": every peft variant of plain LoRA converts
the same way. For the `llama` architecture the GGUF stores q and k rows permuted for
llama.cpp's rotary layout (as `convert_hf_to_gguf.py` does), so B of those projections is
permuted the same way; `qwen2` needs no permutation. Other architectures are refused rather
than converted wrong.

The converted file is cached beside the adapter (`adapter.gguf`, plus `adapter.gguf.json`
with the sha256 of the peft files it came from): converted once, redone when the adapter
is retrained, and written through a partial file so a crash never leaves half a GGUF.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt

from assistant.errors import AdapterError
from assistant.llm.stamped_file import is_current, write_stamped

GGUF_NAME = "adapter.gguf"
STAMP_NAME = "adapter.gguf.json"
_WEIGHTS = "adapter_model.safetensors"
_CONFIG = "adapter_config.json"
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")
_DTYPES = {"F32": np.float32, "F16": np.float16}
CONVERTER_VERSION = 2  # part of the cache stamp: a fixed converter re-converts cached files
_PERMUTED = {"llama": ("self_attn.q_proj", "self_attn.k_proj")}
SUPPORTED = ("llama", "qwen2")


def _read_safetensors(path: Path) -> dict[str, npt.NDArray[np.float32]]:
    """All tensors of a safetensors file as float32 (F32, F16 and BF16; no torch needed)."""
    try:
        with path.open("rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(size))
            data = handle.read()
    except (OSError, ValueError, struct.error) as exc:
        raise AdapterError(f"{path} is not a readable safetensors file ({exc}); retrain the adapter.") from None
    tensors = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        raw = data[start:end]
        if meta["dtype"] == "BF16":
            array = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif meta["dtype"] in _DTYPES:
            array = np.frombuffer(raw, dtype=_DTYPES[meta["dtype"]]).astype(np.float32)
        else:
            raise AdapterError(f"{path}: tensor {name} has dtype {meta['dtype']}, which we cannot convert.")
        if array.size != math.prod(meta["shape"]):
            raise AdapterError(f"{path} is truncated (tensor {name}); retrain the adapter.")
        tensors[name] = array.reshape(meta["shape"])
    return tensors


def _source_hash(adapter_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in (_CONFIG, _WEIGHTS):
        digest.update((adapter_dir / name).read_bytes())
    return digest.hexdigest()


def _config(adapter_dir: Path) -> dict[str, object]:
    try:
        config = dict(json.loads((adapter_dir / _CONFIG).read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{adapter_dir} is not a LoRA adapter folder ({_CONFIG}: {exc}).") from None
    if config.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"{adapter_dir} is a {config.get('peft_type')} adapter; llama.cpp takes LoRA only.")
    if config.get("use_dora"):
        raise AdapterError(f"{adapter_dir} is a DoRA adapter; llama.cpp takes plain LoRA only.")
    if config.get("modules_to_save"):
        raise AdapterError(f"{adapter_dir} also trains whole modules ({config['modules_to_save']}); "
                           "llama.cpp takes LoRA matrices only: merge it (`finetune adapters merge`) instead.")
    return config


def _scale(config: dict[str, object], module: str, rank: int) -> float:
    """peft's scale for one module: alpha / r (or / sqrt(r) with rsLoRA), with per-module patterns."""
    alpha = float(str(config.get("lora_alpha", 8)))
    patterns = config.get("alpha_pattern")
    if not isinstance(patterns, dict):
        patterns = {}
    for pattern, value in patterns.items():
        if re.search(rf"(^|\.){re.escape(pattern)}$", module) or re.fullmatch(pattern, module):
            alpha = float(value)
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def _permute(b: npt.NDArray[np.float32], heads: int) -> npt.NDArray[np.float32]:
    """convert_hf_to_gguf's q/k row permutation (half-split rotary -> interleaved), on B's rows."""
    return b.reshape(heads, 2, b.shape[0] // heads // 2, b.shape[1]).swapaxes(1, 2).reshape(b.shape)


def convert_adapter(adapter_dir: Path, architecture: str, out: Path, heads: tuple[int, int] = (0, 0)) -> None:
    """Write the GGUF LoRA for a peft adapter folder (see module docstring); `heads` is the
    base model's (attention heads, key/value heads), needed where q and k rows are permuted."""
    import gguf

    config = _config(adapter_dir)
    arch = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}.get(architecture)
    if arch is None or architecture not in SUPPORTED:
        raise AdapterError(f"Cannot convert adapters for the {architecture!r} architecture "
                           f"(supported: {', '.join(SUPPORTED)}); merge it with `finetune adapters merge` instead.")
    pairs: dict[str, dict[str, npt.NDArray[np.float32]]] = {}
    for key, tensor in _read_safetensors(adapter_dir / _WEIGHTS).items():
        match = _KEY.match(key)
        if match is None:
            raise AdapterError(f"{adapter_dir}: tensor {key} is not a LoRA matrix llama.cpp can apply.")
        pairs.setdefault(match["module"], {})[match["ab"]] = tensor
    blocks = 1 + max((int(m.group(1)) for m in (re.search(r"layers\.(\d+)\.", k) for k in pairs) if m), default=0)
    names = gguf.get_tensor_name_map(arch, blocks)
    writer = gguf.GGUFWriter(str(out), architecture)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 0.0)  # 0 = scale 1: peft's scale is in B already
    for module, ab in sorted(pairs.items()):
        target = names.get_name(module)
        if target is None or set(ab) != {"A", "B"} or target in ("token_embd", "output"):
            raise AdapterError(f"{adapter_dir}: cannot map the LoRA on {module!r} to a llama.cpp tensor.")
        rank = ab["A"].shape[0]
        b = ab["B"] * _scale(config, module, rank)
        for suffix, n_heads in zip(_PERMUTED.get(architecture, ()), heads, strict=False):
            if module.endswith(suffix):
                b = _permute(b, n_heads)
        writer.add_tensor(f"{target}.weight.lora_a", np.ascontiguousarray(ab["A"]))
        writer.add_tensor(f"{target}.weight.lora_b", np.ascontiguousarray(b))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def ensure_gguf_adapter(adapter_dir: Path, architecture: str, heads: tuple[int, int] = (0, 0)) -> Path:
    """The GGUF file for this adapter, converted now unless a cached one matches its sources."""
    if not (adapter_dir / _WEIGHTS).is_file():
        raise AdapterError(f"Could not load the adapter {adapter_dir}: no {_WEIGHTS} there; "
                           "train one with `finetune train`.")
    _config(adapter_dir)
    out, stamp_path = adapter_dir / GGUF_NAME, adapter_dir / STAMP_NAME
    stamp: dict[str, object] = {"source_sha256": _source_hash(adapter_dir), "architecture": architecture,
                                "converter": CONVERTER_VERSION}
    if is_current(out, stamp_path, stamp):
        return out
    return write_stamped(out, stamp_path, stamp, lambda partial: convert_adapter(adapter_dir, architecture,
                                                                                 partial, heads),
                         "converted adapter")
