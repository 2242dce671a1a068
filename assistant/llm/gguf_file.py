"""A GGUF file's header read quickly: its scalar metadata, its tensors' names, shapes, types and
where their data lie, and the raw bytes of its metadata, to write a copy with other tensors.

Why not gguf-py's `GGUFReader`: it turns every element of every metadata array into its own numpy
view, and a model's tokenizer is such arrays (151,646 tokens and 151,387 merges for
Qwen2.5): 11.6 s to open the default model's file on a 2-core Xeon, paid at every start-up (to
choose the weights to serve) and twice by every adapter merge. Here arrays are skipped, not built,
and the same file opens in a fraction of a second. gguf-py is still used for what it does well:
the block sizes and (de)quantization of tensor types.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
SMALL_ARRAY = 4096  # numeric metadata arrays up to this length are read; longer ones (token scores) skipped
# GGUF metadata value types -> struct format of one value (8: string, 9: array are read apart)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
# Tensor types whose data gguf-py hands out typed (every other type: bytes, one row per array row)
_TYPED = {0: np.float32, 1: np.float16, 24: np.int8, 25: np.int16, 26: np.int32, 27: np.int64, 28: np.float64}


class GgufFormatError(ValueError):
    """The file is not a GGUF file this reader understands (truncated, corrupt, big-endian)."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a GGUF file. `dims` run as GGUF stores them: the row length first."""

    name: str
    dims: tuple[int, ...]
    type: int  # a gguf.GGMLQuantizationType value
    offset: int  # from the start of the file

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.dims, self.type)


def tensor_nbytes(dims: tuple[int, ...], kind: int) -> int:
    """Bytes of a tensor of these GGUF dims stored as type `kind` (whole blocks of its type)."""
    from gguf import GGML_QUANT_SIZES

    block, size = GGML_QUANT_SIZES[tensor_type(kind)]
    return int(np.prod(dims, dtype=np.int64)) // block * size


def tensor_type(value: int) -> Any:
    """The gguf.GGMLQuantizationType of a tensor type number (a type newer than the gguf package: an error)."""
    from gguf import GGMLQuantizationType

    try:
        return GGMLQuantizationType(value)
    except ValueError:
        raise GgufFormatError(f"tensor type {value} is unknown to the installed gguf package") from None


class _Cursor:
    """Reads little-endian values from a buffered file, failing clearly where the file ends."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle

    def take(self, n: int) -> bytes:
        data = self.handle.read(n)
        if len(data) != n:
            raise GgufFormatError("the file ends inside its header (truncated)")
        return data

    def unpack(self, fmt: str) -> Any:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.take(self.unpack("Q")).decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        for _ in range(count):
            self.handle.seek(self.unpack("Q"), 1)


class GgufFile:
    """The header of one GGUF file (version 2 or 3, little-endian); tensor data are mapped on demand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._map: np.memmap[Any, np.dtype[np.uint8]] | None = None
        self.fields: dict[str, Any] = {}  # scalars, strings and short numeric arrays; the rest is skipped
        try:
            with path.open("rb") as handle:
                self._read(_Cursor(handle))
        except (struct.error, UnicodeDecodeError, OverflowError) as exc:
            raise GgufFormatError(f"its header is malformed ({exc})") from None

    def _read(self, cur: _Cursor) -> None:
        if cur.take(4) != MAGIC:
            raise GgufFormatError("it does not start with the GGUF magic")
        self.version = cur.unpack("I")
        if self.version not in (2, 3):
            raise GgufFormatError(f"GGUF version {self.version} (big-endian, or not supported here)")
        n_tensors, n_kv = cur.unpack("Q"), cur.unpack("Q")
        self.kv_start = cur.handle.tell()
        for _ in range(n_kv):
            key = cur.string()
            kind = cur.unpack("I")
            value = self._value(cur, kind)
            if value is not None:
                self.fields[key] = value
        self.kv_end = cur.handle.tell()
        self.n_kv = n_kv
        raw = []
        for _ in range(n_tensors):
            name = cur.string()
            dims = tuple(cur.unpack("Q") for _ in range(cur.unpack("I")))
            raw.append((name, dims, cur.unpack("I"), cur.unpack("Q")))
        self.alignment = int(self.fields.get("general.alignment", DEFAULT_ALIGNMENT))
        self.data_offset = aligned(cur.handle.tell(), self.alignment)
        self.tensors = [TensorInfo(name, dims, kind, self.data_offset + offset) for name, dims, kind, offset in raw]

    def _value(self, cur: _Cursor, kind: int) -> Any:
        if kind in _SCALARS:
            return cur.unpack(_SCALARS[kind])
        if kind == _STRING:
            return cur.string()
        if kind != _ARRAY:
            raise GgufFormatError(f"unknown metadata type {kind}")
        item, count = cur.unpack("I"), cur.unpack("Q")
        if item == _STRING:
            cur.skip_strings(count)
        elif item in _SCALARS:
            fmt = _SCALARS[item]
            if count <= SMALL_ARRAY:  # per-layer values (head counts ...): kept as a list
                return list(struct.unpack(f"<{count}{fmt}", cur.take(count * struct.calcsize(fmt))))
            cur.handle.seek(count * struct.calcsize(fmt), 1)
        else:  # arrays of arrays: no model we load has them
            raise GgufFormatError(f"a metadata array of type {item} is not supported")
        return None

    def metadata_bytes(self) -> bytes:
        """The metadata section exactly as stored (every key, arrays included), to copy into another file."""
        with self.path.open("rb") as handle:
            handle.seek(self.kv_start)
            return handle.read(self.kv_end - self.kv_start)

    def data(self, tensor: TensorInfo) -> npt.NDArray[Any]:
        """The tensor's data, memory-mapped, shaped as gguf-py's reader shapes it (rows first;
        quantized types as bytes, one array row per tensor row), which `gguf.quants` expects."""
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        raw = self._map[tensor.offset:tensor.offset + tensor.nbytes]
        if raw.size != tensor.nbytes:
            raise GgufFormatError(f"the data of {tensor.name} run past the end of the file (truncated)")
        shape = tuple(reversed(tensor.dims))
        if tensor.type in _TYPED:
            return raw.view(_TYPED[tensor.type]).reshape(shape)
        return raw.reshape(*shape[:-1], -1)


def aligned(offset: int, alignment: int) -> int:
    return offset + (-offset % alignment)


def write_gguf(out: Path, source: GgufFile, tensors: list[tuple[str, tuple[int, ...], int, int]],
               chunks: Any) -> None:
    """Write a GGUF with `source`'s metadata (copied byte for byte) and `tensors` (name, dims, type,
    nbytes), whose data `chunks` yields in the same order, one array per tensor (so one merged matrix
    at a time is in memory). Raises whatever `chunks` raises (a cancelled merge), leaving `out` partial."""
    with out.open("wb") as handle:
        handle.write(MAGIC + struct.pack("<IQQ", source.version, len(tensors), source.n_kv))
        handle.write(source.metadata_bytes())
        offset = 0
        for name, dims, kind, nbytes in tensors:
            encoded = name.encode("utf-8")
            handle.write(struct.pack("<Q", len(encoded)) + encoded + struct.pack("<I", len(dims)))
            handle.write(struct.pack(f"<{len(dims)}QIQ", *dims, kind, offset))
            offset = aligned(offset + nbytes, source.alignment)
        handle.write(b"\0" * (-handle.tell() % source.alignment))
        for (name, _, _, nbytes), data in zip(tensors, chunks, strict=True):
            raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
            if raw.size != nbytes:
                raise GgufFormatError(f"{name}: {raw.size} bytes of data where its type and shape need {nbytes}")
            handle.write(raw.data)
            handle.write(b"\0" * (-nbytes % source.alignment))
