"""The one rule for names users give to datasets, runs and adapters.

Names become folder names under `datasets/` and `runs/`, so they must be safe on every file
system: a letter or digit first, then letters, digits, `.`, `_`, `-`, at most 64 characters,
never `..`. `fullmatch` matters: `re.match(...$)` would accept a trailing newline.
"""

from __future__ import annotations

import re

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def is_valid_name(name: object) -> bool:
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None and ".." not in name
