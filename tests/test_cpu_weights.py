"""The Q8_0 copy llama.cpp serves on a CPU (`model.cpu_weights`): made once, redone when the
published file changes, never half-written, and skipped where it does not apply.

On the real SmolLM2 GGUF (its matrices are 5-6 bit: it gets a copy; ~1 s to make).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from assistant.errors import ModelNotAvailableError
from assistant.llm.cpu_weights import copy_path, needs_copy, weights_to_serve
from tests.llamacpp_support import require_llama_cpp, small_gguf


@pytest.fixture()
def published(models_dir: Path, tmp_path: Path) -> Path:
    require_llama_cpp()
    path = tmp_path / "model.gguf"
    shutil.copyfile(small_gguf(models_dir), path)
    return path


def test_the_copy_is_made_once_in_q8_0_and_redone_when_the_published_file_changes(published: Path) -> None:
    import gguf

    assert needs_copy(published)
    served = weights_to_serve(published, "q8_0", threads=2)
    assert served == copy_path(published) and served.is_file()
    assert not needs_copy(served)
    kinds = {t.tensor_type.name for t in gguf.GGUFReader(str(served)).tensors}
    assert kinds <= {"Q8_0", "F32"}, kinds
    stamp = json.loads(served.with_name(served.name + ".json").read_text())
    assert stamp["source"] == str(published.resolve()) and stamp["type"] == "Q8_0"
    made = served.stat().st_mtime_ns
    assert weights_to_serve(published, "q8_0") == served and served.stat().st_mtime_ns == made  # reused
    published.touch()  # e.g. `assistant models fetch --force` wrote it again
    assert weights_to_serve(published, "q8_0") == served and served.stat().st_mtime_ns != made
    assert not list(published.parent.glob(".*partial"))


def test_the_published_file_is_served_as_it_is_where_a_copy_does_not_apply(published: Path) -> None:
    assert weights_to_serve(published, "published") == published
    assert weights_to_serve(published, "q8_0", gpu=True) == published  # CUDA has fast K-quant kernels
    served = weights_to_serve(published, "q8_0")
    assert weights_to_serve(served, "q8_0") == served  # already Q8_0: no copy of the copy
    assert not copy_path(served).exists()
    with pytest.raises(ValueError, match="cpu_weights"):
        weights_to_serve(published, "q4_0")


def test_a_disk_too_full_for_the_copy_serves_the_published_file(published: Path, monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    from assistant.llm import cpu_weights

    monkeypatch.setattr(cpu_weights.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10, 10, 1 << 20))
    assert weights_to_serve(published, "q8_0") == published
    assert "needs ~" in caplog.text and not copy_path(published).exists()


def test_a_truncated_published_file_is_refused_and_leaves_nothing_behind(published: Path) -> None:
    data = published.read_bytes()
    published.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelNotAvailableError, match="truncated, corrupt"):
        weights_to_serve(published, "q8_0")
    assert not copy_path(published).exists() and not list(published.parent.glob(".*partial"))


async def test_the_engine_serves_the_copy_and_keeps_the_published_file_as_its_source(published: Path) -> None:
    from assistant.llm.base import GenerationOptions
    from assistant.llm.llamacpp_engine import LlamaCppEngine

    engine = LlamaCppEngine(published, max_batch_size=1)
    try:
        assert engine.source == published and engine.path == copy_path(published)
        answer = await engine.complete([{"role": "system", "content": "You are a helpful, concise assistant."},
                                        {"role": "user", "content": "What is the capital of France?"}],
                                       GenerationOptions(max_new_tokens=12))
        assert "Paris" in answer
    finally:
        engine.close()
