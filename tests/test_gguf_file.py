"""The fast GGUF header reader and writer, checked against gguf-py's own reader on the real model file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from assistant.llm.gguf_file import GgufFile, GgufFormatError, write_gguf
from tests.llamacpp_support import small_gguf


@pytest.fixture(scope="module")
def published(models_dir: Path) -> Path:
    return small_gguf(models_dir)


@pytest.fixture(scope="module")
def reference(published: Path):  # type: ignore[no-untyped-def]
    """gguf-py's reader of the same file (slow: ~3 s for this model's tokenizer arrays)."""
    import gguf

    return gguf.GGUFReader(str(published))


def test_the_header_reads_as_gguf_py_reads_it(published: Path, reference) -> None:  # type: ignore[no-untyped-def]
    import gguf

    ours, theirs = GgufFile(published), reference
    assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
    for mine, ref in zip(ours.tensors, theirs.tensors, strict=True):
        assert mine.type == ref.tensor_type and mine.dims == tuple(int(d) for d in ref.shape), ref.name
        assert mine.nbytes == ref.n_bytes and mine.offset == ref.data_offset, ref.name
        data = ours.data(mine)
        assert data.dtype == ref.data.dtype and data.shape == ref.data.shape, ref.name
    for name in ("output_norm.weight", "blk.0.attn_q.weight", "token_embd.weight"):
        index = [t.name for t in ours.tensors].index(name)
        assert np.array_equal(ours.data(ours.tensors[index]), theirs.tensors[index].data), name
    for key, field in theirs.fields.items():
        if key.startswith("GGUF.") or field.types[0] == gguf.GGUFValueType.ARRAY:
            continue
        assert ours.fields[key] == pytest.approx(field.contents()), key
    assert ours.fields["general.architecture"] == "llama" and ours.version == 3


def test_a_written_copy_keeps_the_metadata_and_carries_the_new_tensors(published: Path, reference,  # type: ignore[no-untyped-def]
                                                                       tmp_path: Path) -> None:
    import gguf

    source = GgufFile(published)
    picked = source.tensors[:3]
    replaced = np.arange(int(np.prod(picked[0].dims)), dtype=np.float32).reshape(tuple(reversed(picked[0].dims)))
    plan = [(picked[0].name, picked[0].dims, gguf.GGMLQuantizationType.F32.value, replaced.nbytes)]
    plan += [(t.name, t.dims, t.type, t.nbytes) for t in picked[1:]]
    out = tmp_path / "copy.gguf"
    write_gguf(out, source, plan, iter([replaced, *(source.data(t) for t in picked[1:])]))

    back = gguf.GGUFReader(str(out))
    original = reference
    assert list(back.fields) == list(original.fields)
    tokens = "tokenizer.ggml.tokens"
    assert back.fields[tokens].contents()[:50] == original.fields[tokens].contents()[:50]
    assert len(back.fields[tokens].data) == len(original.fields[tokens].data)
    assert [t.name for t in back.tensors] == [t.name for t in picked]
    assert np.array_equal(back.tensors[0].data, replaced)
    for mine, ref in zip(back.tensors[1:], picked[1:], strict=True):
        assert np.array_equal(mine.data, source.data(ref)), ref.name
    assert GgufFile(out).data_offset % source.alignment == 0


def test_wrong_data_size_is_refused(published: Path, tmp_path: Path) -> None:
    source = GgufFile(published)
    first = source.tensors[0]
    with pytest.raises(GgufFormatError, match="bytes of data"):
        write_gguf(tmp_path / "bad.gguf", source, [(first.name, first.dims, first.type, first.nbytes)],
                   iter([np.zeros(3, dtype=np.uint8)]))


@pytest.mark.parametrize("cut", [3, 24, 4000, 2_000_000])
def test_a_truncated_or_foreign_file_is_a_clear_error(published: Path, tmp_path: Path, cut: int) -> None:
    broken = tmp_path / "broken.gguf"
    with published.open("rb") as handle:
        broken.write_bytes(handle.read(cut))
    with pytest.raises(GgufFormatError):
        header = GgufFile(broken)
        header.data(header.tensors[-1])  # a header that fits in the cut still has its data cut off
    (tmp_path / "text.gguf").write_text("not a model at all, just some text", encoding="utf-8")
    with pytest.raises(GgufFormatError, match="magic"):
        GgufFile(tmp_path / "text.gguf")


def test_a_tensor_type_newer_than_the_gguf_package_is_named(published: Path, tmp_path: Path) -> None:
    """A model made for a newer llama.cpp: served as published (llama.cpp decides), never merged blindly."""
    from assistant.llm.cpu_weights import needs_copy

    source = GgufFile(published)
    norm = next(t for t in source.tensors if t.name == "output_norm.weight")
    out = tmp_path / "newer.gguf"
    write_gguf(out, source, [(norm.name, norm.dims, 250, norm.nbytes)], iter([source.data(norm)]))
    newer = GgufFile(out)
    with pytest.raises(GgufFormatError, match="tensor type 250 is unknown"):
        newer.tensors[0].nbytes
    assert needs_copy(out) is False
