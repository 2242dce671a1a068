"""Exceptions the core raises; the edges (CLI, Discord) turn each into one friendly message.

Every message is a sentence that says what went wrong and what to do next, because the
edges show `str(error)` to the user as it is.
"""

from __future__ import annotations


class AssistantError(Exception):
    """Base of every error the core raises on purpose (never for programming bugs)."""

    exit_code: int = 1


class ConfigError(AssistantError):
    """A bad config file or value: raised at start-up, before anything is loaded."""

    exit_code = 2


class ModelNotAvailableError(AssistantError):
    """A model (LLM, whisper, voice) is not provisioned or cannot be loaded."""

    exit_code = 3


class IntegrityError(AssistantError):
    """A downloaded or provisioned file does not match its recorded sha256."""

    exit_code = 4


class GenerationError(AssistantError):
    """Generation failed for one request (the engine itself keeps serving others)."""


class BusyError(GenerationError):
    """Too many requests are already waiting for the engine; this one is refused, not queued."""


class BackendError(AssistantError):
    """A remote (OpenAI-compatible) backend refused or could not be reached."""


class AdapterError(AssistantError):
    """A LoRA adapter is missing, corrupt or made for another base model."""


class AudioError(AssistantError):
    """Audio that cannot be decoded, is empty, or is over the configured limits."""


class NoSpeechError(AudioError):
    """The audio decoded fine but nobody said anything in it."""


class VoiceNotAvailableError(ModelNotAvailableError):
    """No installed Piper voice speaks the reply's language: the reply stays text only."""


class StoreError(AssistantError):
    """The SQLite store could not be opened or migrated."""


class ReviewError(AssistantError):
    """A review action or contribution was refused (unknown item, daily pending cap reached)."""


class DatasetError(AssistantError):
    """A training or evaluation dataset is malformed; the message names the line and field."""

    exit_code = 5


class TrainingError(AssistantError):
    """A fine-tuning job could not start, failed, or cannot be resumed."""

    exit_code = 6


class UnsafeNameError(AssistantError):
    """A file or folder name from a user that could escape its data folder (traversal, tricks)."""


class NotAllowedError(AssistantError):
    """The user may not run this command (admin only) or is over the rate limit."""
