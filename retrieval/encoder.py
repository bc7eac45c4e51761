"""The embedding model as the knowledge base uses it: loaded on first use (opening the knowledge
base at app start must not wait for the model), and batch encoding with progress."""

from __future__ import annotations

import numpy as np

from assistant.embeddings import Embedder, get_embedder
from assistant.progress import Progress, no_progress

BATCH_SIZE = 16


class Encoder:
    def __init__(self, model_name: str, embedder: Embedder | None = None):
        self.model_name = model_name
        self.loaded: Embedder | None = embedder  # None until something needs the model

    @property
    def embedder(self) -> Embedder:
        if self.loaded is None:
            self.loaded = get_embedder(self.model_name)
        return self.loaded

    def encode(self, texts: list[str], progress: Progress = no_progress, what: str = "embedding") -> np.ndarray:
        """L2-normalised float32 rows, one per text; progress counts texts ("<what> <done>/<total>")."""

        def cb(done, total):
            progress(done, total, f"{what} {done}/{total}")

        return self.embedder.encode(texts, batch_size=BATCH_SIZE, progress=cb)
