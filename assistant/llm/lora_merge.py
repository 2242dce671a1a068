"""A LoRA adapter merged into a copy of the base GGUF, so the active adapter decodes at the base's speed.

Why: llama.cpp applies an adapter at run time as two extra small matrix products (and a scale and
an add) for every adapted matrix: 168 matrices and ~670 extra graph nodes a token for the default
model's all-linear adapters. On 2 cores every node ends in a thread synchronisation, and decode
with an adapter measured 0.57x the base. Merged weights cost nothing extra at decode
(bench/results/adapter_merge.md).

Why the merged matrices are Q8_0 and not the base's own types: the base's Q5_0/Q4_K/Q6_K weights
sit exactly on their quantization grid, so requantizing base + delta to the same type rounds a
small LoRA delta back to the base weight. Q8_0's grid is 8x finer than Q5_0's, its AVX2 dot product
is ggml's cheapest, and the merged model measured the base's speed. Tensors without a LoRA are
copied byte for byte from the file the engine serves (on a CPU the Q8_0 copy of `cpu_weights`).
A matrix the base already stores as Q8_0 or finer (the default model keeps half its attn_v in
Q8_0), and a row length Q8_0 cannot block (not a multiple of 32), are stored as F16: requantizing
Q8_0 + delta to Q8_0 would lose the delta the same way.

The merged file is cached beside the adapter's GGUF with a stamp naming the adapter file's sha256
and the base file (path, size, modification time), so it is redone when either changes, and it
is written through a partial file so a crash never leaves half a model.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from assistant.errors import AdapterError
from assistant.llm.gguf_file import GgufFile, GgufFormatError, tensor_nbytes, tensor_type, write_gguf
from assistant.llm.stamped_file import is_current, write_stamped

MERGED_NAME = "merged.gguf"
STAMP_NAME = "merged.gguf.json"
MERGER_VERSION = 3  # 2: Q8_0 base matrices merge to F16; 3: untouched tensors may come from the served copy
_Q8_BLOCK = 32


class MergeCancelled(AdapterError):
    """The engine closed while it merged; the partial file is removed."""


def _never() -> bool:
    return False


def _merged_type(row_length: int, base_type: Any) -> Any:
    from gguf import GGMLQuantizationType as Kind

    fine = base_type in (Kind.Q8_0, Kind.F16, Kind.BF16, Kind.F32)
    return Kind.Q8_0 if row_length % _Q8_BLOCK == 0 and not fine else Kind.F16


def _merged_tensor(base: npt.NDArray[Any], base_type: Any, lora_a: npt.NDArray[Any],
                   lora_b: npt.NDArray[Any], name: str, kind: Any) -> npt.NDArray[Any]:
    """base + B @ A (peft's scale is already folded into B by the converter), stored as `kind`
    (what `_merged_type` chose for it when the file's layout was planned)."""
    from gguf import GGMLQuantizationType, quants

    try:
        weights = quants.dequantize(np.asarray(base), base_type)
    except NotImplementedError:
        raise AdapterError(f"Cannot merge into {name}: its type {base_type.name} cannot be "
                           "dequantized here.") from None
    delta = np.asarray(lora_b, dtype=np.float32) @ np.asarray(lora_a, dtype=np.float32)
    merged = (weights + delta).astype(np.float32)
    if kind == GGMLQuantizationType.F16:
        return merged.astype(np.float16)
    return np.asarray(quants.quantize(merged, kind))


def _open(path: Path) -> GgufFile:
    try:
        return GgufFile(path)
    except GgufFormatError as exc:
        raise AdapterError(f"Cannot merge with {path}: {exc}.") from None


def merge_adapter(base_path: Path, lora_path: Path, out: Path, cancelled: Callable[[], bool] = _never,
                  served: Path | None = None) -> None:
    """Write `base_path` with the LoRA of `lora_path` (a GGUF adapter) merged in, to `out`;
    `cancelled` is asked between tensors (an engine that closes stops the merge within ~0.1 s).
    `served`: the copy of the base the engine serves (`cpu_weights`'s Q8_0 copy), whose tensors
    stand for those the adapter leaves alone, so the merged model is never slower than the base."""
    try:
        _merge(base_path, lora_path, out, cancelled, served)
    except GgufFormatError as exc:
        raise AdapterError(f"Cannot merge the adapter into {base_path.name}: {exc}.") from None


def _merge(base_path: Path, lora_path: Path, out: Path, cancelled: Callable[[], bool], served: Path | None) -> None:
    base = _open(base_path)
    other = _open(served) if served is not None else base
    rest = {t.name: t for t in other.tensors}
    lora_file = _open(lora_path)
    lora = {t.name: t for t in lora_file.tensors}
    pairs = {t.name: (lora[f"{t.name}.lora_a"], lora[f"{t.name}.lora_b"])
             for t in base.tensors if f"{t.name}.lora_a" in lora and f"{t.name}.lora_b" in lora}
    if 2 * len(pairs) != len(lora):
        raise AdapterError(f"{lora_path} has LoRA tensors for matrices the model {base_path.name} lacks.")
    plan: list[tuple[str, tuple[int, ...], int, int]] = []
    for tensor in base.tensors:  # checked before anything is written
        if tensor.name in pairs:  # a matrix; GGUF dims run (row length, rows)
            lora_a, lora_b = pairs[tensor.name]
            if (lora_a.dims[0], lora_b.dims[1]) != tensor.dims[:2] or len(tensor.dims) != 2:
                raise AdapterError(f"The adapter's {tensor.name} does not fit the model's: the adapter was "
                                   "trained for another base model.")
            kind = _merged_type(tensor.dims[0], tensor_type(tensor.type))
            plan.append((tensor.name, tensor.dims, kind.value, tensor_nbytes(tensor.dims, kind.value)))
        elif tensor.name not in rest or rest[tensor.name].dims != tensor.dims:
            raise AdapterError(f"{served} is not a copy of {base_path.name}: its {tensor.name} differs.")
        else:
            kept = rest[tensor.name]
            plan.append((kept.name, kept.dims, kept.type, kept.nbytes))

    def chunks() -> Iterator[npt.NDArray[Any]]:  # one merged matrix in memory at a time
        for tensor, (_, _, kind, _) in zip(base.tensors, plan, strict=True):
            if cancelled():
                raise MergeCancelled("The merge was cancelled.")
            if tensor.name in pairs:
                lora_a, lora_b = pairs[tensor.name]
                yield _merged_tensor(base.data(tensor), tensor_type(tensor.type), lora_file.data(lora_a),
                                     lora_file.data(lora_b), tensor.name, tensor_type(kind))
            else:
                yield other.data(rest[tensor.name])

    write_gguf(out, base, plan, chunks())


def _stamp(base_path: Path, lora_path: Path, served: Path | None) -> dict[str, object]:
    digest = hashlib.sha256(lora_path.read_bytes()).hexdigest()
    stamp: dict[str, object] = {"adapter_sha256": digest, "merger": MERGER_VERSION}
    for key, path in (("base", base_path), ("served", served)):
        if path is not None:
            stat = path.stat()
            stamp |= {key: str(path.resolve()), f"{key}_size": stat.st_size, f"{key}_mtime_ns": stat.st_mtime_ns}
    return stamp


def ensure_merged(base_path: Path, lora_path: Path, cancelled: Callable[[], bool] = _never,
                  served: Path | None = None) -> Path:
    """The merged model for this adapter GGUF, written beside it now unless a cached one matches
    (`served`: see `merge_adapter`)."""
    served = None if served == base_path else served
    folder = lora_path.parent
    out, stamp_path = folder / MERGED_NAME, folder / STAMP_NAME
    try:
        stamp = _stamp(base_path, lora_path, served)
    except OSError as exc:
        raise AdapterError(f"Cannot read {exc.filename} to merge the adapter: {exc.strerror}.") from None
    if is_current(out, stamp_path, stamp):
        return out
    need = base_path.stat().st_size * 3 // 2  # Q8_0 is at most ~1.5x the base's usual 4-6 bit types
    free = shutil.disk_usage(folder).free
    if free < need:
        raise AdapterError(f"Not enough disk space to merge the adapter in {folder}: {free >> 20} MiB free, "
                           f"about {need >> 20} MiB needed.")
    return write_stamped(out, stamp_path, stamp, lambda partial: merge_adapter(base_path, lora_path, partial,
                                                                               cancelled, served), "merged model")


def remove_merged(folder: Path) -> None:
    """Delete a cached merged model (hundreds of MB) that no longer serves the active adapter."""
    for name in (MERGED_NAME, STAMP_NAME):
        (folder / name).unlink(missing_ok=True)
