"""Which weights llama.cpp serves on a CPU: a Q8_0 copy of a 4-6 bit GGUF, made once.

Why: the published GGUFs (Q4_K_M: mostly Q5_0 and Q4_K matrices) are small, but on a CPU
llama.cpp spends its time unpacking those 5- and 4-bit blocks, and it has no batched
(repacked) kernel for Q5_0, so several sequences decoded together gain little. Q8_0 blocks are
ggml's cheapest to multiply on x86, one at a time and batched. Measured on a 2-core AVX-512
Xeon (`bench/results/requantize.md`), the default Qwen2.5-Coder-0.5B as a Q8_0 copy: one decode
step 59 against 77 ms, prefill 1.48x faster, a step of 8 sequences 137 against 199 ms (batching
ceiling 3.47x against 3.07x), and the next-token distribution barely moves (mean KL 0.003,
perplexity 7.05 against 7.11): each 4-6 bit value lands on Q8_0's 8x finer grid.
The copy costs ~40 % more memory and disk (644 against 469 MiB) and ~5 s once.

Not on a GPU: there memory, not unpacking, is the limit, and CUDA has fast K-quant kernels.
A file whose matrices are all Q8_0 or finer already (F16, BF16) is served as it is.

The copy is cached beside the published file with a stamp naming it (path, size, modification
time), so it is redone when that file changes; it is written through a partial file
(`stamped_file`, as merged adapters are). Where the
folder is read-only or the disk too full, the published file is served and the log says why.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import time
from pathlib import Path

from assistant.errors import ModelNotAvailableError
from assistant.llm.gguf_file import GgufFile, GgufFormatError, tensor_type
from assistant.llm.stamped_file import is_current, write_stamped

logger = logging.getLogger(__name__)

CPU_WEIGHTS = ("q8_0", "published")  # model.cpu_weights
COPY_VERSION = 1
# Tensor types that need no copy: Q8_0 and the unquantized ones.
_FINE = frozenset({"F32", "F16", "BF16", "F64", "Q8_0", "I8", "I16", "I32", "I64"})


class _CopyNotWritten(ModelNotAvailableError):
    """The folder could not take the copy: the published file is served instead."""


def copy_path(source: Path) -> Path:
    return source.with_name(f"{source.stem}.q8_0.gguf")


def needs_copy(source: Path) -> bool:
    """True when some matrix of `source` is stored in a type coarser than Q8_0."""
    try:
        tensors = GgufFile(source).tensors
    except (OSError, GgufFormatError) as exc:
        raise ModelNotAvailableError(f"Cannot read {source}: the file is truncated, corrupt or not a GGUF model "
                                     f"({exc}); run `assistant models fetch --force`.") from None
    try:
        return any(tensor_type(tensor.type).name not in _FINE for tensor in tensors)
    except GgufFormatError:  # a type newer than the gguf package: served as published, llama.cpp decides
        return False


def _stamp(source: Path) -> dict[str, object]:
    stat = source.stat()
    return {"source": str(source.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "type": "Q8_0", "version": COPY_VERSION}


def _quantize(source: Path, out: Path, threads: int) -> None:
    """llama.cpp's own quantizer: every matrix to Q8_0 (those already Q8_0 are copied as they are)."""
    import llama_cpp

    from assistant.llm.gguf_runtime import route_logs

    route_logs()
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = threads
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    params.allow_requantize = True
    if llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params)) != 0:
        raise ModelNotAvailableError(f"llama.cpp could not convert {source} to Q8_0: the file is truncated, "
                                     "corrupt or of an unsupported architecture; run `assistant models fetch "
                                     "--force`, or set model.cpu_weights = \"published\".")


def weights_to_serve(source: Path, choice: str = "q8_0", *, gpu: bool = False, threads: int = 0) -> Path:
    """The GGUF the llama.cpp engine should load for `source` (see the module docstring)."""
    if choice not in CPU_WEIGHTS:
        raise ValueError(f"unknown model.cpu_weights {choice!r}; choose one of {', '.join(CPU_WEIGHTS)}")
    from assistant.llm.gguf_runtime import check_gguf_file

    check_gguf_file(source)
    if choice == "published" or gpu or not needs_copy(source):
        return source
    out = copy_path(source)
    stamp_path = out.with_name(out.name + ".json")
    stamp = _stamp(source)
    if is_current(out, stamp_path, stamp):
        return out
    need = source.stat().st_size * 2
    free = shutil.disk_usage(source.parent).free
    if free < need:
        logger.warning("Serving %s as published (slower on a CPU): its Q8_0 copy needs ~%d MB free in %s, "
                       "%d MB are (model.cpu_weights)", source, need >> 20, source.parent, free >> 20)
        return source
    started = time.perf_counter()
    logger.info("Making a Q8_0 copy of %s for the CPU (once; model.cpu_weights)", source)
    try:
        write_stamped(out, stamp_path, stamp, lambda partial: _quantize(source, partial, threads or os.cpu_count() or 1),
                      "Q8_0 copy", error=_CopyNotWritten)
    except _CopyNotWritten as exc:
        logger.warning("Serving %s as published (slower on a CPU): %s", source, exc)
        return source
    logger.info("Q8_0 copy ready in %.1f s: %s", time.perf_counter() - started, out)
    return out
