"""The in-memory search structures (the FAISS vector index and the BM25 index) and the index
files they are mirrored to: `indexes/knowledge.faiss` and its metadata `knowledge.json`
(embedding model, dimension, kind, HNSW tombstones, the database generation it matches), and
`knowledge.bm25.npz`, a snapshot of BM25 written when it is loaded, not after every change
(0.53 GB at a million chunks): a start catches up from it by chunk id.

The database is the truth; this is a copy that index_check.py verifies and rebuilds."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
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
BM25_FILE = "knowledge.bm25.npz"
BM25_SPOT_CHECKS = 16  # chunks of a BM25 snapshot compared with their stored text

log = logging.getLogger(__name__)


class LiveIndex:
    def __init__(self, folder: Path, store: KnowledgeStore, config: KnowledgeConfig):
        self.store = store
        self.config = config
        self.index_path = folder / INDEX_FILE
        self.meta_path = folder / META_FILE
        self.bm25_path = folder / BM25_FILE
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
    def load_bm25(self, db_ids: np.ndarray) -> str:
        """Bring BM25 up to the database's chunks (`db_ids`, sorted) and say where it came from.

        A chunk's BM25 text never changes under its id (a replaced document gets new chunk
        rows, and ids are never reused), so an index of an earlier state of the same database
        catches up by id: the chunks gone are removed, the new ones read and added. It starts
        from the copy in memory (another process changed the knowledge), else from the snapshot
        file (a start), else from every chunk text (no usable snapshot: 2-4 minutes at a
        million chunks, against seconds from the snapshot). A few chunks are spot-checked
        against their stored text first, so a snapshot of another database is not trusted."""
        source = "memory"
        bm25: BM25Index | None = self.bm25 if self.generation >= 0 else None
        if bm25 is None:
            bm25, source = self._read_bm25(), "snapshot"
        if bm25 is not None and not self._bm25_matches(bm25, db_ids):
            bm25 = None
        changed = len(db_ids)
        if bm25 is None:
            source = "chunk texts"
            bm25 = BM25Index()
            bm25.add_many(self._texts(None))
        else:
            held = bm25.chunk_ids()
            gone = held[~np.isin(held, db_ids)]
            new = db_ids[~np.isin(db_ids, held)]
            bm25.remove(gone.tolist())
            if len(new):
                bm25.add_many(self._texts(new))
            changed = len(gone) + len(new)
        self.bm25 = bm25
        if not len(db_ids):
            self.bm25_path.unlink(missing_ok=True)
        elif source != "memory" and (changed or not self.bm25_path.exists()):
            try:
                bm25.save(self.bm25_path)
            except OSError as exc:  # a full disk costs the next start time, never the search
                log.warning("could not save the BM25 snapshot %s: %s", self.bm25_path, exc)
        return source

    def _texts(self, ids: np.ndarray | None) -> Iterator[tuple[int, str]]:
        for cid, title, heading, text in self.store.chunk_texts(ids):
            yield cid, embed_text(title, heading, text)

    def _read_bm25(self) -> BM25Index | None:
        if not self.bm25_path.exists():
            return None
        try:
            return BM25Index.load(self.bm25_path)
        except Exception as exc:  # noqa: BLE001 - any failure to read means "rebuild from the texts"
            log.warning("the BM25 snapshot %s cannot be read (%s); rebuilding it", self.bm25_path, exc)
            return None

    def _bm25_matches(self, bm25: BM25Index, db_ids: np.ndarray) -> bool:
        """A sample of the chunks both hold has the same terms in BM25 as in the database."""
        both = db_ids[np.isin(db_ids, bm25.chunk_ids())]
        if not len(both):
            return True  # nothing shared: every chunk will be added from its text anyway
        sample = both[np.linspace(0, len(both) - 1, num=min(BM25_SPOT_CHECKS, len(both))).astype(int)]
        return all(bm25.same_text(cid, text) for cid, text in self._texts(sample))

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
