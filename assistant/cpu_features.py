"""What this CPU's instruction set offers, read once from /proc/cpuinfo (elsewhere: nothing known).

Why it matters: kernels choose their precision and speed by it (native bf16 for torch, VNNI for
onnxruntime's int8 products), and a default that is right on one CPU can be slow or wrong on another.
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def has_vnni() -> bool:
    """int8 dot products that sum into 32 bits (AVX512-VNNI or AVX-VNNI): no 16-bit saturation."""
    return bool({"avx512_vnni", "avx_vnni"} & cpu_flags())
