"""`resolve_inside`: file names from Discord never leave their folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assistant.discord.attachments import check_attachment
from assistant.discord.paths import check_file_name, list_files, resolve_inside
from assistant.errors import AudioError, DatasetError, UnsafeNameError


@pytest.fixture
def root(tmp_path: Path) -> Path:
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "report.json").write_text("{}")
    (exports / "sub").mkdir()
    (exports / "sub" / "inner.txt").write_text("x")
    (tmp_path / "secret.txt").write_text("secret")
    (exports / "out-link").symlink_to(tmp_path / "secret.txt")
    (exports / "in-link").symlink_to(exports / "report.json")
    (exports / "loop").symlink_to(exports / "loop")
    return exports


def test_plain_names_resolve_inside(root: Path):
    assert resolve_inside(root, "report.json") == (root / "report.json").resolve()
    assert resolve_inside(root, "in-link") == (root / "report.json").resolve()
    assert list_files(root) == ["in-link", "report.json"]


@pytest.mark.parametrize("name", [
    "", " ", "..", ".", "../secret.txt", "sub/inner.txt", "sub\\inner.txt", "/etc/passwd", "\\\\server\\share",
    "C:secret.txt", "C:\\Windows\\win.ini", "report.json\x00.png", "report\u202ejson", "\u2024\u2024/secret.txt",
    "..\uff0fsecret.txt", "\uff0e\uff0e", "report.json\u200b", "ｒｅｐｏｒｔ.json", "a" * 256, "é" * 200,
    ".hidden", "report.json.", " report.json", "report.json ", "out-link", "loop", "sub", "missing.txt",
    "*.json", "report?.json", "\ud800",
])
def test_unsafe_or_missing_names_are_refused(root: Path, name: str):
    with pytest.raises(UnsafeNameError):
        resolve_inside(root, name)


def test_refusal_messages_say_what_to_do(root: Path):
    with pytest.raises(UnsafeNameError, match="plain file name"):
        check_file_name("../x")
    with pytest.raises(UnsafeNameError, match="no file"):
        resolve_inside(root, "nothere.txt")


@given(st.text(max_size=300))
@settings(max_examples=500, deadline=None)
def test_fuzz_never_escapes(tmp_path_factory, name: str):
    root = tmp_path_factory.getbasetemp() / "fuzz-root"
    root.mkdir(exist_ok=True)
    try:
        path = resolve_inside(root, name, must_exist=False)
    except UnsafeNameError:
        return
    assert path.parent == root.resolve()
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert os.path.basename(path) == name


def test_attachment_checks_before_download():
    check_attachment("voice.ogg", "audio/ogg", 1000, max_bytes=2000, kind="audio")
    check_attachment("data.jsonl", None, 10, max_bytes=2000, kind="data")
    with pytest.raises(AudioError, match="limit"):
        check_attachment("voice.ogg", "audio/ogg", 3000, max_bytes=2000, kind="audio")
    with pytest.raises(AudioError, match="not an audio"):
        check_attachment("evil.exe", "application/octet-stream", 10, max_bytes=2000, kind="audio")
    with pytest.raises(DatasetError, match="JSON"):
        check_attachment("image.png", "image/png", 10, max_bytes=2000, kind="data")
    with pytest.raises(DatasetError, match="empty"):
        check_attachment("data.json", "application/json", 0, max_bytes=2000, kind="data")
