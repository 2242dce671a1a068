"""A file derived from others (a converted adapter, a merged model), cached beside them with a stamp.

Why one helper: both derived files are large and slow to make, so they are reused while their
stamp (what they were made from, and by which version of the code) still matches, and written
through a partial file then renamed, so a crash or a cancelled merge never leaves half a file
that a later start would trust.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from assistant.errors import AdapterError, AssistantError


def is_current(out: Path, stamp_path: Path, stamp: dict[str, object]) -> bool:
    """True when `out` exists and was made from what `stamp` describes."""
    try:
        return bool(json.loads(stamp_path.read_text(encoding="utf-8")) == stamp and out.is_file())
    except (OSError, ValueError):
        return False


def write_stamped(out: Path, stamp_path: Path, stamp: dict[str, object], write: Callable[[Path], None],
                  what: str, error: type[AssistantError] = AdapterError) -> Path:
    """Make `out` with `write(partial_path)`, then rename it into place and record its stamp; a
    failure to write raises `error`. The partial files are named per process, so two processes
    making the same file at once never write into each other's."""
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        write(partial)
        partial.replace(out)
        tmp = stamp_path.with_name(f".{stamp_path.name}.{os.getpid()}.partial")
        tmp.write_text(json.dumps(stamp) + "\n", encoding="utf-8")
        tmp.replace(stamp_path)
    except OSError as exc:
        raise error(f"Could not write the {what} into {out.parent}: {exc.strerror or exc}.") from None
    finally:
        partial.unlink(missing_ok=True)
    return out
