"""Resolving a file name typed in Discord to a file inside one data folder, or refusing it.

Why so strict: the original bot's `getfile` sent any path on the host to anyone. A name
here is ONE path component of plain printable text, in Unicode normal form NFKC (so a
fullwidth solidus or another look-alike cannot become a slash later), with no control or
format characters (NUL, RTL override), no drive letters or UNC prefixes, and — after
symlinks are followed — the result must still lie inside the folder.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

from assistant.errors import UnsafeNameError

MAX_NAME_BYTES = 255
_FORBIDDEN = set('/\\:*?"<>|')


def check_file_name(name: str) -> str:
    """Return `name` unchanged if it is a safe single file name, else raise UnsafeNameError."""
    if not isinstance(name, str) or not name or not name.strip():
        raise UnsafeNameError("Give a file name, for example `getfile report.json`.")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise UnsafeNameError(f"That file name is longer than {MAX_NAME_BYTES} bytes; use a shorter name.")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") for ch in name):
        raise UnsafeNameError("That file name contains invisible or control characters; type a plain name.")
    if unicodedata.normalize("NFKC", name) != name:
        raise UnsafeNameError("That file name contains look-alike characters; type a plain name.")
    if any(ch in _FORBIDDEN for ch in name):
        raise UnsafeNameError("Give a plain file name without folders, drive letters or wildcards.")
    if name in (".", "..") or name.startswith(".") or name != name.strip() or name.endswith("."):
        raise UnsafeNameError("That file name is not allowed; names cannot start or end with a dot or space.")
    return name


def resolve_inside(root: Path, name: str, *, must_exist: bool = True) -> Path:
    """The path of `name` inside `root`, refusing anything that would end up outside it.

    Symlinks are followed before the check, so a link inside the folder that points out
    of it is refused too. With `must_exist`, a missing file is an UnsafeNameError that
    says so (the caller lists what exists).
    """
    check_file_name(name)
    base = root.resolve()
    candidate = base / name
    try:
        resolved = candidate.resolve(strict=must_exist)
    except FileNotFoundError:
        raise UnsafeNameError(f"There is no file named {name!r}.") from None
    except (OSError, RuntimeError):  # symlink loops and the like
        raise UnsafeNameError(f"The file {name!r} cannot be opened.") from None
    if resolved.parent != base and base not in resolved.parents:
        raise UnsafeNameError(f"The file {name!r} points outside the allowed folder.")
    if must_exist and not resolved.is_file():
        raise UnsafeNameError(f"{name!r} is not a file.")
    return resolved


def list_files(root: Path) -> list[str]:
    """Names that `resolve_inside(root, name)` accepts (what `getfile` can send)."""
    if not root.is_dir():
        return []
    names = []
    for path in sorted(root.iterdir()):
        try:
            resolve_inside(root, path.name)
        except UnsafeNameError:
            continue
        names.append(path.name)
    return names
