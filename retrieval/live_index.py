"""The in-memory search structures (the FAISS vector index and the BM25 index) and the index
files they are mirrored to: `indexes/knowledge.faiss` and its metadata `knowledge.json`
(embedding model, dimension, kind, HNSW tombstones, the database generation it matches).

The database is the truth; this is a copy that index_check.py verifies and rebuilds."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from assistant.db import utcnow
from assistant.workspace import write_atomic

from .chunking import embed_text
from .config import KnowledgeConfig
from .index import FLAT, BM25Index, VectorIndex
from .store import KnowledgeStore

INDEX_FILE = "knowledge.faiss"
META_FILE = "knowledge.json"


class LiveIndex:
    def __init__(self, folder: Path, store: KnowledgeStore, config: KnowledgeConfig):
        self.store = store
        self.config = config
        self.index_path = folder / INDEX_FILE
        self.meta_path = folder / META_FILE
        self.index: VectorIndex | None = None  # None while there are no chunks (or it is unusable)
        self.bm25 = BM25Index()
        self.generation = -1  # the database generation the in-memory copy matches

    # ---- the files --------------------------------------------------------------------------
    def saved(self) -> bool:
        return self.index_path.exists() and self.meta_path.exists()

    def read(self) -> tuple[VectorIndex | None, dict, str | None]:
        """The saved index and its metadata, or (None, {}, why they cannot be read)."""
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
            index = VectorIndex.read(self.index_path, meta.get("kind", FLAT), meta.get("deleted", ()))
        except Exception as exc:  # noqa: BLE001 - any failure to read means "corrupt"
            return None, {}, f"the index file cannot be read ({exc.__class__.__name__}: {exc})"[:300]
        return index, meta, None

    def save(self, index: VectorIndex | None, generation: int) -> None:
        if index is None:
            for p in (self.index_path, self.meta_path):
                p.unlink(missing_ok=True)
            return
        # The index first, then the metadata: a crash in between leaves a pair that the startup
        # check finds inconsistent (ids or tombstones differ) and rebuilds.
        index.write(self.index_path)
        write_atomic(
            self.meta_path,
            json.dumps(
                {
                    "version": 1,
                    "model": self.config.model_name,
                    "dim": index.dim,
                    "kind": index.kind,
                    "count": index.count,
                    "generation": generation,
                    "deleted": sorted(index.deleted),
                    "saved_at": utcnow(),
                }
            ),
        )

    # ---- the in-memory copy -----------------------------------------------------------------
    def reload_bm25(self) -> None:
        bm25 = BM25Index()
        bm25.add_many((cid, embed_text(title, heading, text)) for cid, title, heading, text in self.store.chunk_texts())
        self.bm25 = bm25

    def apply(
        self, new_ids: Sequence[int], vectors: np.ndarray, removed: Sequence[int], title: str, chunks: Sequence
    ) -> None:
        """Mirror a committed database change in the in-memory indexes and the index file.
        Called under the exclusive lock, right after the transaction."""
        generation = self.store.generation()
        if self.index is None and len(new_ids):
            self.index = VectorIndex(vectors.shape[1], self.config.desired_kind(len(new_ids)))
        if self.index is not None:
            self.index.remove(removed)
            self.index.add(new_ids, vectors, stored=lambda: self.store.vectors(self.config.model_name))
            wanted = self.config.desired_kind(self.index.count, self.index.kind)
            if wanted != self.index.kind:
                self.index = self.index.converted(wanted)
            if self.index.count == 0:
                self.index = None
        self.bm25.remove(removed)
        for cid, chunk in zip(new_ids, chunks):
            self.bm25.add(cid, embed_text(title, chunk.heading, chunk.text))
        self.save(self.index, generation)
        self.generation = generation
