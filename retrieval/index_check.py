"""The consistency check between the index file and the database, and the repair: on start,
and whenever another process moved the database, the saved index is compared with the stored
chunks (ids, count, a sample of the vectors, embedding model and dimension) and rebuilt from
the stored vectors, or by re-embedding when the embedding model changed, if they disagree."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from assistant.progress import Progress, no_progress

from .chunking import embed_text
from .encoder import Encoder
from .index import FLAT, IVF, VectorIndex
from .live_index import LiveIndex
from .locking import KnowledgeLock

log = logging.getLogger(__name__)

SPOT_CHECKS = 16  # stored vectors compared with the index's own


@dataclass
class IndexCheck:
    ok: bool  # the index agreed with the database (nothing had to be repaired)
    problems: list[str] = field(default_factory=list)
    rebuilt: bool = False
    chunks: int = 0
    kind: str = FLAT
    seconds: float = 0.0


class IndexChecker:
    def __init__(self, live: LiveIndex, lock: KnowledgeLock, encoder: Encoder):
        self.live = live
        self.store = live.store
        self.config = live.config
        self.lock = lock
        self.encoder = encoder
        self.last: IndexCheck | None = None

    def check(self, repair: bool = True, progress: Progress = no_progress) -> IndexCheck:
        """Compare the index file with the database; rebuild it when they disagree (and
        `repair`). Loads the result into memory either way."""
        started = time.perf_counter()
        live = self.live
        with self.lock.exclusive():
            generation = self.store.generation()
            db_ids = self.store.chunk_ids()
            problems: list[str] = []
            index: VectorIndex | None = None
            meta: dict = {}
            if not live.saved():
                if len(db_ids):
                    problems.append("the index file is missing")
            else:
                index, meta, unreadable = live.read()
                if unreadable:
                    problems.append(unreadable)
            if index is not None:
                problems += self.compare(index, meta, db_ids)
            rebuilt = False
            if problems and repair:
                log.warning("knowledge index disagrees with the database (%s); rebuilding", "; ".join(problems))
                index = self.rebuild(db_ids, progress)
                live.save(index, generation)
                rebuilt = True
            elif index is not None and not problems:
                wanted = self.config.desired_kind(index.count, index.kind)
                if wanted != index.kind and repair:
                    index = index.converted(wanted)
                    live.save(index, generation)
            live.index = index if (not problems or rebuilt) else None
            live.load_bm25(db_ids)
            live.generation = generation
            check = IndexCheck(
                ok=not problems,
                problems=problems,
                rebuilt=rebuilt,
                chunks=len(db_ids),
                kind=live.index.kind if live.index else self.config.desired_kind(len(db_ids)),
                seconds=time.perf_counter() - started,
            )
            self.last = check
            return check

    def sync(self) -> None:
        """Reload when another process (or a lost update) moved the database past our copy."""
        if self.store.generation() != self.live.generation:
            self.check()

    def compare(self, index: VectorIndex, meta: dict, db_ids: np.ndarray) -> list[str]:
        """What disagrees between a saved index and the database (empty: nothing)."""
        model_name = self.config.model_name
        loaded = self.encoder.loaded  # compared only when loaded: the check must not load the model
        problems = []
        if meta.get("model") != model_name:
            problems.append(
                f"the index was built with embedding model {meta.get('model')!r}, the configured one is {model_name!r}"
            )
            return problems
        if int(meta.get("dim", -1)) != index.dim or (loaded is not None and loaded.dim != index.dim):
            problems.append(
                f"the index has {index.dim}-dimensional vectors, the embedding model makes "
                f"{loaded.dim if loaded else meta.get('dim')}"
            )
            return problems
        ids = np.sort(index.ids())
        if len(ids) != len(db_ids):
            problems.append(f"the index holds {len(ids)} vectors, the database {len(db_ids)} chunks")
        elif not np.array_equal(ids, db_ids):
            problems.append("the index ids differ from the database's chunk ids")
        elif len(db_ids):
            # spot-check that the vectors themselves are the stored ones
            sample = db_ids[np.linspace(0, len(db_ids) - 1, num=min(SPOT_CHECKS, len(db_ids))).astype(int)]
            sids, stored = self.store.vectors(model_name, sample)
            if len(sids) != len(sample):
                problems.append("some chunks have no stored vector for the configured embedding model")
            elif stored.shape[1] != index.dim or not _same_vectors(index.vectors(sids), stored, index.kind):
                problems.append("the index vectors differ from the stored ones")
        return problems

    def rebuild(self, db_ids: np.ndarray, progress: Progress = no_progress) -> VectorIndex | None:
        """A fresh index of the stored vectors; chunks without one for the configured model (a
        new embedding model, or vectors never stored) are embedded again first."""
        if not len(db_ids):
            return None
        model_name = self.config.model_name
        ids, vecs = self.store.vectors(model_name)
        missing = np.setdiff1d(db_ids, ids)
        if len(missing):
            rows = self.store.chunks(missing.tolist())
            order = [int(i) for i in missing if int(i) in rows]
            texts = [embed_text(rows[i].title, rows[i].heading, rows[i].text) for i in order]
            new = self.encoder.encode(texts, progress, "re-embedding chunks")
            self.store.set_vectors(order, new, model_name)
            ids, vecs = self.store.vectors(model_name)
        keep = np.isin(ids, db_ids)
        ids, vecs = ids[keep], vecs[keep]
        index = VectorIndex(vecs.shape[1], self.config.desired_kind(len(ids)))
        index.add(ids, vecs)
        return index


def _same_vectors(indexed: np.ndarray, stored: np.ndarray, kind: str) -> bool:
    """Whether the index holds the stored vectors: exactly (float32 kinds), or for IVF's 8-bit
    codes within their error, as a cosine of at least 0.99 with the stored vector (a decoded
    code is within ~0.002 of it; another text's vector is rarely within 0.05)."""
    if kind != IVF:
        return bool(np.allclose(indexed, stored, atol=1e-5))
    norms = np.linalg.norm(indexed, axis=1) * np.linalg.norm(stored, axis=1)
    cos = (indexed * stored).sum(axis=1) / np.maximum(norms, 1e-12)
    return bool((cos >= 0.99).all())
