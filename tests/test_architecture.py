"""Dependencies point one way: Discord transport -> core -> engines; finetune never imports the bot.

Also: no module outside the config/CLI edge reads environment variables on its own.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import REPO


def modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def is_transport(path: Path) -> bool:
    return "discord" in path.relative_to(REPO / "assistant").parts[:1]


@pytest.mark.parametrize("path", [p for p in modules("assistant") if not is_transport(p)],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_core_never_imports_nextcord_or_the_bot(path: Path) -> None:
    bad = {m for m in imports_of(path) if m.split(".")[0] == "nextcord" or m.startswith("assistant.discord")}
    if path.relative_to(REPO).as_posix() == "assistant/cli/run_cmd.py":
        bad -= {"assistant.discord.bot"}  # the edge that starts the bot
    assert not bad, f"{path} imports {bad}"


@pytest.mark.parametrize("path", modules("finetune"), ids=lambda p: str(p.relative_to(REPO)))
def test_finetune_never_imports_the_bot(path: Path) -> None:
    bad = {m for m in imports_of(path) if m.split(".")[0] == "nextcord" or m.startswith("assistant.discord")}
    assert not bad, f"{path} imports {bad}"


EDGES = {"assistant/config.py", "assistant/cli/__init__.py"}
# Set by `accelerate launch`/torchrun for each process, or handed to a library: not configuration.
LAUNCHER_VARIABLES = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                      "TENSORBOARD_LOGGING_DIR"}


@pytest.mark.parametrize("path", modules("assistant") + modules("finetune"), ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_reads_the_environment_on_its_own(path: Path) -> None:
    rel = path.relative_to(REPO).as_posix()
    if rel in EDGES:
        return
    text = path.read_text(encoding="utf-8")
    keys = set(re.findall(r"os\.(?:environ\.get\(|environ\[|getenv\()\s*[\"']([A-Z0-9_]+)", text))
    assert keys <= LAUNCHER_VARIABLES, f"{rel} reads {keys - LAUNCHER_VARIABLES} from the environment"
