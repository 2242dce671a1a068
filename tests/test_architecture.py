"""Dependencies point one way, and no module reaches for the environment on its own.

    assistant.discord ──> assistant.app, core, finetune      (the Discord transport)
    assistant.cli     ──> assistant.app, core                (the terminal edge; `run` starts the bot)
    finetune          ──> core (assistant.app included)      (the training library and its commands)
    core              ──> engines and libraries only         (never the bot, the CLI or finetune)

"Core" is every module of `assistant` outside `assistant/discord/` and `assistant/cli/`.
Imports inside functions count too: a lazy import still ties two modules together.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ("assistant", "finetune")


def modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def all_modules() -> frozenset[str]:
    return frozenset(module_name(p) for package in PACKAGES for p in modules(package))


@cache
def imports_of(path: Path) -> frozenset[str]:
    """Every module `path` imports, anywhere in the file; `from pkg import mod` counts as `pkg.mod`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{a.name}" for a in node.names} & all_modules()
            found.update(submodules)
            if len(submodules) < len(node.names):  # names defined in the module itself
                found.add(node.module)
    return frozenset(found)


def layer(name: str) -> str:
    if name.startswith("assistant.discord"):
        return "discord"
    if name.startswith("assistant.cli") or name == "assistant.__main__":  # `python -m assistant` is the CLI
        return "cli"
    if name.startswith("finetune"):
        return "finetune"
    return "core"


def external_root(name: str) -> str:
    return name.split(".")[0]


# What each layer must never import (by layer of our own modules, or by top-level library name).
FORBIDDEN = {
    "core": {"discord", "cli", "finetune", "nextcord"},
    "finetune": {"discord", "cli", "nextcord"},
    "cli": {"discord", "finetune", "nextcord"},
    "discord": {"cli"},
}
# The one edge that starts the bot: `assistant run` with a token.
ALLOWED = {("assistant.cli.run_cmd", "assistant.discord.bot")}


def violations(here: str, imported: frozenset[str] | set[str]) -> set[str]:
    bad = set()
    for target in imported:
        ours = external_root(target) in PACKAGES
        kind = layer(target) if ours else external_root(target)
        if kind in FORBIDDEN[layer(here)] and (here, target) not in ALLOWED:
            bad.add(target)
    return bad


@pytest.mark.parametrize("path", [p for package in PACKAGES for p in modules(package)],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_imports_point_one_way(path: Path) -> None:
    bad = violations(module_name(path), imports_of(path))
    assert not bad, f"{path.relative_to(REPO)} ({layer(module_name(path))}) imports {sorted(bad)}"


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    known = all_modules()
    for package in PACKAGES:
        for path in modules(package):
            here = module_name(path)
            graph[here] = {t for t in imports_of(path) if t in known and t != here}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), i.e. import circles.

    A package's `__init__` importing its own submodules is not a circle unless a submodule
    imports the package back *and* the package imports that submodule: both edges are real.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles() -> None:
    assert circles(import_graph()) == []


def test_the_circle_finder_finds_circles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_layer_rules_can_fail() -> None:
    """Each arrow the docstring forbids is reported; the allowed ones are not."""
    assert violations("assistant.voice.dialog", {"assistant.discord.playback", "finetune.jobs", "nextcord",
                                                 "assistant.cli.chat", "numpy", "assistant.store"}) == {
        "assistant.discord.playback", "finetune.jobs", "nextcord", "assistant.cli.chat"}
    assert violations("finetune.train", {"assistant.cli", "assistant.app", "assistant.discord.bot"}) == {
        "assistant.cli", "assistant.discord.bot"}
    assert violations("assistant.cli.chat", {"assistant.discord.services", "assistant.app"}) == {
        "assistant.discord.services"}
    assert violations("assistant.cli.run_cmd", {"assistant.discord.bot"}) == set()
    assert violations("assistant.discord.services", {"finetune.jobs", "assistant.app"}) == set()


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
