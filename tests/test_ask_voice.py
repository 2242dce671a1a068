"""`assistant ask --audio Q --speak A`: a spoken question in, a spoken answer out, on the real models."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def test_spoken_question_gets_a_spoken_answer(tmp_path: Path) -> None:
    question = tmp_path / "question.ogg"
    said = run_cli("say", "What is the capital of France?", "-o", str(question))
    assert said.returncode == 0, said.stderr
    answer = tmp_path / "answer.wav"
    result = run_cli("ask", "--audio", str(question), "--speak", str(answer), "--max-new-tokens", "30")
    assert result.returncode == 0, result.stderr
    assert "heard: What is the capital of France?" in result.stderr
    assert "Paris" in result.stdout
    heard_back = run_cli("transcribe", str(answer))
    assert heard_back.returncode == 0, heard_back.stderr
    assert "paris" in heard_back.stdout.lower()


def test_ask_without_question_or_audio_is_a_usage_error() -> None:
    result = run_cli("ask")
    assert result.returncode == 2 and "give a question" in result.stderr


def test_ask_with_a_non_audio_file_is_a_friendly_error(tmp_path: Path) -> None:
    fake = tmp_path / "not-audio.ogg"
    fake.write_text("this is text, not sound")
    result = run_cli("ask", "--audio", str(fake))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "error:" in result.stderr
