"""The embedding model as the knowledge base uses it: loaded on first use (opening the knowledge
base at app start must not wait for the model), and batch encoding with progress.

Backends (KnowledgeConfig.embed_backend): `torch` (sentence-transformers as loaded), `onnx` (the
same model run by ONNX Runtime, onnx_encoder.py: the same vectors, a query embedded ~3x faster)
or `auto` (the default: ONNX when onnxruntime is installed, the device is the CPU and the model
is a mean-pooling transformer; torch otherwise, or when the export fails)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from assistant.embeddings import Embedder, get_embedder
from assistant.errors import ModelError
from assistant.progress import Progress, no_progress

log = logging.getLogger(__name__)

BATCH_SIZE = 16
EMBED_BACKENDS = ("auto", "torch", "onnx")
# one ONNX runner per embedder per process (exported into the first workspace's cache that asks;
# a loaded session no longer needs the file), so tests and the CLI export at most once
_onnx: dict[Embedder, object] = {}
_onnx_lock = threading.Lock()


class _Encodes(Protocol):
    def encode(self, texts: list[str], batch_size: int = ..., progress=...) -> np.ndarray: ...


class Encoder:
    def __init__(
        self, model_name: str, embedder: Embedder | None = None, backend: str = "torch", cache_dir: Path | None = None
    ):
        if backend not in EMBED_BACKENDS:
            raise ValueError(f"embedding backend must be one of {', '.join(EMBED_BACKENDS)}, not {backend!r}")
        self.model_name = model_name
        self.loaded: Embedder | None = embedder  # None until something needs the model
        self.backend = backend
        self.cache_dir = cache_dir
        self._runner: _Encodes | None = None
        self.backend_used = "not loaded"

    @property
    def embedder(self) -> Embedder:
        if self.loaded is None:
            self.loaded = get_embedder(self.model_name)
        return self.loaded

    @property
    def runner(self) -> _Encodes:
        """What embeds: the ONNX runner or the torch embedder, chosen on first use."""
        if self._runner is None:
            self._runner, self.backend_used = self._choose()
        return self._runner

    def _choose(self) -> tuple[_Encodes, str]:
        embedder = self.embedder
        if self.backend == "torch" or self.cache_dir is None or not isinstance(embedder, Embedder):
            return embedder, "torch"
        from .onnx_encoder import OnnxEmbedder, onnx_installed

        if self.backend == "auto" and (not onnx_installed() or str(embedder.model.device) != "cpu"):
            return embedder, "torch"
        key = embedder
        try:
            with _onnx_lock:
                if key not in _onnx:
                    _onnx[key] = OnnxEmbedder(embedder, self.cache_dir)
            return _onnx[key], "onnx"  # type: ignore[return-value]
        except Exception as exc:  # any export or load failure falls back to torch
            if self.backend == "onnx":
                raise ModelError(f"Could not run {self.model_name} with ONNX Runtime: {exc}") from exc
            log.warning("embedding with torch: the ONNX backend failed (%s)", exc)
            return embedder, "torch"

    def encode(self, texts: list[str], progress: Progress = no_progress, what: str = "embedding") -> np.ndarray:
        """L2-normalised float32 rows, one per text; progress counts texts ("<what> <done>/<total>")."""

        def cb(done, total):
            progress(done, total, f"{what} {done}/{total}")

        # longest first, so that each batch holds texts of similar length and pads little:
        # 1.4x the chunks/s of torch over the demo's chunks in their own order (benchmarks/retrieval.py)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        vectors = self.runner.encode([texts[i] for i in order], batch_size=BATCH_SIZE, progress=cb)
        out = np.empty_like(vectors)
        out[order] = vectors
        return out

    def encode_query(self, query: str) -> np.ndarray:
        return self.runner.encode([query])[0]
