"""Config: defaults, documentation of every key, and one clear message per kind of bad value."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from assistant.config import SECTIONS, Config, load_config, parse_config
from assistant.errors import ConfigError
from tests.conftest import REPO, run_cli


def test_shipped_file_equals_defaults() -> None:
    shipped = load_config(REPO / "config.toml", environ={})
    defaults = parse_config({}, source=REPO / "config.toml", environ={})
    assert shipped == defaults


def test_every_key_is_documented_with_a_comment() -> None:
    text = (REPO / "config.toml").read_text()
    section = None
    documented: set[str] = set()
    for line in text.splitlines():
        if m := re.match(r"^\[(\w+)\]", line):
            section = m.group(1)
        elif m := re.match(r"^(\w+)\s*=.*#\s*\S", line):
            documented.add(f"{section}.{m.group(1)}")
    expected = {f"{name}.{f.name}" for name, sf in SECTIONS.items()
                for f in dataclasses.fields(sf.default_factory())}  # type: ignore[misc]
    assert expected - documented == set()
    assert documented - expected == set()


@pytest.mark.parametrize("toml, key, words", [
    ("[model]\nbogus = 1\n", "model.bogus", "Unknown config key"),
    ("[nonsense]\nx = 1\n", "[nonsense]", "Unknown config section"),
    ("[model]\nmax_new_tokens = 'many'\n", "model.max_new_tokens", "whole number"),
    ("[model]\nmax_new_tokens = 0\n", "model.max_new_tokens", "between"),
    ("[model]\ntemperature = true\n", "model.temperature", "number"),
    ("[model]\nbackend = 'cloud'\n", "model.backend", "one of"),
    ("[discord]\nallowed_channel_ids = [1, 'two']\n", "discord.allowed_channel_ids[1]", "whole number"),
    ("[speech]\nvoices = { ru = 3 }\n", "speech.voices.ru", "string"),
    ("[security]\nadmin_user_ids = 5\n", "security.admin_user_ids", "list"),
    ("[voice]\nlisten = 'yes'\n", "voice.listen", "true or false"),
    ("[speech]\naudio_ctx_margin = 'fast'\n", "speech.audio_ctx_margin", "'auto' or a number between -1 and 1500"),
    ("[speech]\naudio_ctx_margin = 2000\n", "speech.audio_ctx_margin", "between -1 and 1500"),
    ("[speech]\naudio_ctx_margin = 1.5\n", "speech.audio_ctx_margin", "wrong type"),
    ("model = 3\n", "[model]", "table"),
    ("[discord]\ntoken = 'abc'\n", "discord.token", "Unknown config key"),
])
def test_bad_values_name_the_key_and_file(tmp_path: Path, toml: str, key: str, words: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert key in message and words in message and str(path.resolve()) in message


def test_a_word_or_a_number_where_a_key_takes_both() -> None:
    assert parse_config({}).speech.audio_ctx_margin == "auto"
    assert parse_config({"speech": {"audio_ctx_margin": 32}}).speech.audio_ctx_margin == 32
    assert parse_config({"speech": {"audio_ctx_margin": -1}}).speech.audio_ctx_margin == -1


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[model\nname = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml")


def test_secrets_come_from_the_environment_only(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[discord]\ntoken_env = "MY_BOT_TOKEN"\n')
    config = load_config(path, environ={"MY_BOT_TOKEN": " s3cret \n", "DISCORD_TOKEN": "other"})
    assert config.discord_token == "s3cret"
    assert "s3cret" not in repr(dataclasses.asdict(config.discord))


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "c.toml"
    path.write_text('[storage]\nmodels_dir = "../m"\n')
    config = load_config(path, environ={})
    assert config.storage.models_dir == (tmp_path / "m").resolve()
    assert config.storage.database == (tmp_path / "sub" / "data" / "assistant.sqlite3").resolve()


def test_config_is_immutable() -> None:
    config = parse_config({})
    assert isinstance(config, Config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.model.name = "x"  # type: ignore[misc]


@pytest.mark.parametrize("toml, key", [
    ("[model]\ncontext_tokens = -5\n", "model.context_tokens"),
    ("[finetune]\nprecision = 'fp8'\n", "finetune.precision"),
    ("[storage]\nmodels_dir = 12\n", "storage.models_dir"),
])
def test_cli_exits_non_zero_naming_the_key(tmp_path: Path, toml: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    result = run_cli("--config", str(path), "models", "list")
    assert result.returncode == 2
    assert key in result.stderr and "bad.toml" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_missing_config_file_is_an_error(tmp_path: Path) -> None:
    result = run_cli("--config", str(tmp_path / "nope.toml"), "models", "list")
    assert result.returncode == 2 and "does not exist" in result.stderr
