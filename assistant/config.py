"""One typed, validated configuration, built once at start-up from config.toml + environment.

Why a hand-rolled loader rather than pydantic: the schema is a handful of flat sections, and
we want every failure (unknown key, wrong type, out of range) to be one sentence naming the
file and the dotted key, which is simplest to guarantee here. Secrets never come from the
file: a section names the environment variable that holds them, and `load_config` reads it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from assistant.errors import ConfigError


def opt(default: Any, *, lo: float | None = None, hi: float | None = None,
        choices: tuple[Any, ...] | None = None) -> Any:
    """A config field with its allowed range or choices, checked at load time."""
    meta = {"lo": lo, "hi": hi, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=functools.partial(copy.copy, default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ModelConfig:
    backend: str = opt("auto", choices=("auto", "llama.cpp", "transformers", "openai"))
    name: str = "qwen2.5-coder-0.5b-instruct"
    device: str = opt("auto", choices=("auto", "cpu", "cuda"))
    dtype: str = opt("auto", choices=("auto", "bfloat16", "float16", "float32"))
    threads: int = opt(0, lo=0, hi=1024)
    system_prompt: str = "You are a helpful, concise assistant."
    max_new_tokens: int = opt(256, lo=1, hi=32768)
    temperature: float = opt(0.0, lo=0.0, hi=5.0)
    top_p: float = opt(1.0, lo=0.0, hi=1.0)
    repetition_guard: str = opt("spoken", choices=("off", "spoken", "always"))
    repetition_penalty: float = opt(1.1, lo=1.0, hi=3.0)
    no_repeat_ngram: int = opt(0, lo=0, hi=256)
    context_tokens: int = opt(2048, lo=64, hi=1_000_000)
    max_batch_size: int = opt(8, lo=1, hi=256)
    thread_wait: str = opt("brief", choices=("brief", "passive", "active"))
    cpu_weights: str = opt("q8_0", choices=("q8_0", "published"))
    prefix_cache_mb: int = opt(256, lo=0, hi=1 << 20)
    max_queued_requests: int = opt(64, lo=0, hi=100000)
    adapter: str = ""
    merge_active_adapter: bool = True
    openai_base_url: str = "http://127.0.0.1:8080/v1"
    openai_model: str = "default"
    openai_api_key_env: str = "OPENAI_API_KEY"
    openai_server: str = opt("generic", choices=("generic", "vllm", "llama-server"))
    openai_adapter_dir: str = ""
    manage_server: bool = False
    llama_server_binary: str = ""
    llama_server_port: int = opt(8091, lo=1024, hi=65535)
    request_timeout_s: float = opt(120.0, lo=1.0, hi=3600.0)


@dataclass(frozen=True)
class DiscordConfig:
    token_env: str = "DISCORD_TOKEN"
    api_base: str = "https://discord.com/api/v10"
    command_prefix: str = "!"
    reply_mode: str = opt("mention", choices=("mention", "channels", "all"))
    allowed_channel_ids: list[int] = opt([])
    answer_dms: bool = True
    history_messages: int = opt(20, lo=0, hi=100)
    edit_interval_s: float = opt(1.0, lo=1.0, hi=30.0)
    voice_message_replies: bool = True
    speak_in_voice_channel: bool = True
    instruction_file: str = "assistant/discord/instruction.md"


@dataclass(frozen=True)
class SpeechConfig:
    language: str = "en"
    whisper_model: str = "auto"
    threads: int = opt(0, lo=0, hi=1024)
    voice: str = "en_US-joe-medium"
    voices: dict[str, str] = opt({})
    max_audio_seconds: float = opt(120.0, lo=1.0, hi=3600.0)
    max_audio_bytes: int = opt(25 * 1024 * 1024, lo=1024, hi=1 << 31)
    first_clause_words: int = opt(2, lo=0, hi=100)
    beam_size: int = opt(1, lo=1, hi=16)
    best_of: int = opt(5, lo=1, hi=16)
    temperature_increment: float = opt(0.2, lo=0.0, hi=1.0)
    entropy_threshold: float = opt(2.4, lo=0.0, hi=10.0)
    logprob_threshold: float = opt(-1.0, lo=-20.0, hi=0.0)
    no_speech_threshold: float = opt(0.6, lo=0.0, hi=1.0)
    compression_ratio_threshold: float = opt(2.4, lo=1.0, hi=10.0)
    audio_ctx_margin: int | str = opt("auto", lo=-1, hi=1500, choices=("auto",))
    vad: str = opt("silero", choices=("silero", "webrtc", "off"))
    min_speech_ms: int = opt(200, lo=0, hi=10_000)


@dataclass(frozen=True)
class VoiceConfig:
    listen: bool = True
    answer_mode: str = opt("follow_up", choices=("everyone", "wake_word", "follow_up"))
    wake_words: list[str] = opt(["assistant"])
    follow_up_s: float = opt(30.0, lo=0.0, hi=3600.0)
    silence_ms: int = opt(600, lo=100, hi=5000)
    speculate_after_ms: int = opt(150, lo=0, hi=5000)
    end_of_turn: str = opt("model", choices=("model", "silence"))
    turn_check_ms: int = opt(200, lo=20, hi=5000)
    max_pause_ms: int = opt(1600, lo=200, hi=10000)
    text_turn_threshold: float = opt(0.005, lo=0.0, hi=1.0)
    text_turn_confident: float = opt(0.2, lo=0.0, hi=1.0)
    vad: str = opt("webrtc", choices=("webrtc", "silero"))
    vad_aggressiveness: int = opt(2, lo=0, hi=3)
    end_of_speech_db: float = opt(40.0, lo=0.0, hi=90.0)
    barge_in: str = opt("speaker", choices=("speaker", "anyone", "off"))
    debug_record_audio: bool = False


@dataclass(frozen=True)
class FinetuneConfig:
    lora_r: int = opt(8, lo=1, hi=1024)
    lora_alpha: int = opt(16, lo=1, hi=4096)
    lora_dropout: float = opt(0.05, lo=0.0, hi=0.9)
    target_modules: list[str] = opt(["all-linear"])
    learning_rate: float = opt(2e-4, lo=1e-8, hi=1.0)
    batch_size: int = opt(4, lo=1, hi=4096)
    grad_accum: int = opt(1, lo=1, hi=4096)
    max_seq_len: int = opt(512, lo=16, hi=1_000_000)
    packing: bool = True
    epochs: float = opt(3.0, lo=0.0, hi=1000.0)
    max_steps: int = opt(0, lo=0, hi=10_000_000)
    save_every: int = opt(10, lo=1, hi=10_000_000)
    warmup_ratio: float = opt(0.0, lo=0.0, hi=1.0)
    seed: int = opt(42, lo=0, hi=2**31 - 1)
    precision: str = opt("auto", choices=("auto", "bf16", "fp16", "fp32"))
    dpo_beta: float = opt(0.1, lo=0.0, hi=10.0)
    feedback_steps: int = opt(40, lo=1, hi=100000)
    feedback_learning_rate: float = opt(5e-4, lo=1e-8, hi=1.0)
    feedback_phrasings: int = opt(8, lo=1, hi=64)
    replay_rows: int = opt(32, lo=0, hi=10000)
    min_control_kept: float = opt(0.9, lo=0.0, hi=1.0)
    threads: int = opt(0, lo=0, hi=1024)


@dataclass(frozen=True)
class StorageConfig:
    models_dir: Path = Path("models")
    voices_dir: Path = Path("voices")
    datasets_dir: Path = Path("datasets")
    runs_dir: Path = Path("runs")
    exports_dir: Path = Path("exports")
    database: Path = Path("data/assistant.sqlite3")
    control_set: Path = Path("datasets/control.jsonl")
    replay_prompts: Path = Path("datasets/replay_prompts.txt")


@dataclass(frozen=True)
class SecurityConfig:
    admin_user_ids: list[int] = opt([])
    admin_role_ids: list[int] = opt([])
    rate_limit_messages: int = opt(10, lo=1, hi=100000)
    rate_limit_window_s: float = opt(60.0, lo=1.0, hi=86400.0)
    max_attachment_bytes: int = opt(25 * 1024 * 1024, lo=1024, hi=1 << 31)
    allowed_guild_ids: list[int] = opt([])
    command_rate_limit: int = opt(20, lo=1, hi=100000)
    reaction_rate_limit: int = opt(30, lo=1, hi=100000)
    voice_rate_limit: int = opt(20, lo=1, hi=100000)
    expensive_rate_limit: int = opt(2, lo=1, hi=100000)
    max_concurrent_generations: int = opt(16, lo=1, hi=4096)
    test_max_items: int = opt(50, lo=1, hi=10000)
    test_max_bytes: int = opt(256 * 1024, lo=1024, hi=1 << 31)
    auto_approve: str = opt("admins", choices=("admins", "none", "all"))
    max_pending_per_user: int = opt(20, lo=0, hi=1_000_000)


@dataclass(frozen=True)
class ServeConfig:
    max_concurrent_requests: int = opt(8, lo=1, hi=4096)
    max_body_bytes: int = opt(1024 * 1024, lo=1024, hi=1 << 31)


@dataclass(frozen=True)
class MemoryConfig:
    enabled: bool = True
    max_facts: int = opt(2, lo=1, hi=20)
    min_score: float = opt(0.6, lo=0.01, hi=1.0)
    embedder: str = opt("all-minilm-l6-v2", choices=("all-minilm-l6-v2", "none"))
    min_similarity: float = opt(0.65, lo=0.01, hi=1.0)
    min_answer_similarity: float = opt(0.55, lo=0.01, hi=1.0)


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    discord: DiscordConfig = field(default_factory=DiscordConfig)
    speech: SpeechConfig = field(default_factory=SpeechConfig)
    voice: VoiceConfig = field(default_factory=VoiceConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    # Not from the file: where it was read from, and secrets from the environment.
    source: Path | None = None
    discord_token: str = ""
    openai_api_key: str = ""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`; ints widen to float, strings to Path."""
    origin = typing.get_origin(tp)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list of {_type_name(item_tp)}, got {value!r}")
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table of {_type_name(val_tp)}, got {value!r}")
        return {_coerce(k, key_tp, where): _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if origin in (types.UnionType, typing.Union):
        for arm in typing.get_args(tp):
            try:
                return _coerce(value, arm, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where} has the wrong type: {value!r}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be a whole number, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str or tp is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return Path(value) if tp is Path else value
    raise ConfigError(f"{where}: unsupported type {tp!r}")  # pragma: no cover - schema bug


def _check_range(value: Any, meta: Mapping[str, Any], where: str) -> None:
    """`choices` bound words and `lo`/`hi` numbers; a field may take both ("auto" or a number)."""
    choices = meta.get("choices")
    lo, hi = meta.get("lo"), meta.get("hi")
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ranged = lo is not None or hi is not None
    if choices is not None and not (number and ranged) and value not in choices:
        also = f" or a number between {lo} and {hi}" if ranged else ""
        raise ConfigError(f"{where} must be one of {', '.join(map(repr, choices))}{also}; got {value!r}")
    if number and (lo is not None and value < lo or hi is not None and value > hi):
        raise ConfigError(f"{where} must be between {lo} and {hi}; got {value!r}")


def _build_section(cls: type, raw: Any, name: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"[{name}] must be a table of settings, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"Unknown config key: {name}.{unknown[0]} (known keys: {', '.join(sorted(known))})")
    values = {}
    for key, value in raw.items():
        where = f"{name}.{key}"
        coerced = _coerce(value, hints[key], where)
        _check_range(coerced, known[key].metadata, where)
        values[key] = coerced
    return cls(**values)


SECTIONS = {f.name: f for f in dataclasses.fields(Config) if f.name in
            ("model", "discord", "speech", "voice", "finetune", "storage", "security", "serve", "memory")}


def _resolve_paths(storage: StorageConfig, base: Path) -> StorageConfig:
    """Relative paths in the file mean 'next to the config file', not 'wherever we were started'."""
    changes = {f.name: (base / getattr(storage, f.name)).resolve() for f in dataclasses.fields(storage)}
    return dataclasses.replace(storage, **changes)


def parse_config(raw: Mapping[str, Any], *, source: Path | None = None,
                 environ: Mapping[str, str] | None = None) -> Config:
    """Build and validate a Config from an already parsed TOML mapping."""
    label = str(source) if source else "<config>"
    try:
        unknown = sorted(set(raw) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"Unknown config section: [{unknown[0]}] (known: {', '.join(SECTIONS)})")
        sections = {name: _build_section(typing.get_type_hints(Config)[name], raw.get(name, {}), name)
                    for name in SECTIONS}
    except ConfigError as exc:
        raise ConfigError(f"{label}: {exc}") from None
    base = source.parent if source else Path.cwd()
    sections["storage"] = _resolve_paths(sections["storage"], base)
    env = os.environ if environ is None else environ
    return Config(**sections, source=source,
                  discord_token=env.get(sections["discord"].token_env, "").strip(),
                  openai_api_key=env.get(sections["model"].openai_api_key_env, "").strip())


def config_mapping(config: Config) -> dict[str, dict[str, Any]]:
    """Every section of `config` as plain TOML values (no secrets: those live in the environment)."""
    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        return value

    return {name: {f.name: plain(getattr(getattr(config, name), f.name))
                   for f in dataclasses.fields(getattr(config, name))} for name in SECTIONS}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)} = {_toml_value(v)}"
                               for k, v in value.items()) + "}"
    raise ConfigError(f"Cannot write {value!r} to TOML")  # pragma: no cover - schema bug


def to_toml(mapping: Mapping[str, Mapping[str, Any]], *, header: str = "") -> str:
    """TOML text for a `config_mapping` (read back by `load_config` to the same Config)."""
    lines = [f"# {line}" for line in header.splitlines()]
    for section, values in mapping.items():
        lines += ["", f"[{section}]"] + [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    return "\n".join(lines).lstrip("\n") + "\n"


def load_config(path: Path, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read `path` (TOML). A missing default file means all defaults; a missing named file is an error."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"Config file {path} does not exist; pass --config with an existing file.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read config file {path}: {exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}).") from None
    return parse_config(raw, source=path.resolve(), environ=environ)
