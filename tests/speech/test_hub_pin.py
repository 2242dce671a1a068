"""The whisper hub fallback keeps a download only when its pinned sha256 matches."""

from __future__ import annotations

import http.server
import re
import threading
from pathlib import Path

import pytest

from assistant.errors import IntegrityError
from assistant.speech import provision
from assistant.speech.provision import WHISPER, download_official


def test_every_hub_model_has_a_pinned_sha256() -> None:
    assert all(re.fullmatch(r"[0-9a-f]{64}", s.hub_sha256) for s in WHISPER.values()), WHISPER


def test_a_tampered_hub_file_is_refused_and_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Tampered(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = b"not the model" * 1000
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Tampered)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setattr(provision, "HUB_URL", f"http://127.0.0.1:{server.server_port}/ggml-{{name}}.bin")
        out = tmp_path / "ggml-small.bin"
        with pytest.raises(IntegrityError, match="sha256"):
            download_official(WHISPER["small"], out)
        assert not out.exists()
    finally:
        server.shutdown()
