"""Hybrid search: dense (cosine over the FAISS index) and BM25 rankings of the chunks, fused
with reciprocal rank fusion. Every passage carries all its scores, whichever mode ranked it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import cast

import numpy as np

from assistant.errors import ValidationError
from assistant.prompting import Passage

from .chunking import context_line
from .encoder import Encoder
from .index import BM25Index, VectorIndex, reciprocal_rank_fusion
from .index_check import IndexChecker
from .live_index import LiveIndex
from .locking import KnowledgeLock

SEARCH_MODES = ("hybrid", "dense", "bm25")
MIN_CANDIDATES = 50  # each ranking looks at least this deep (and 4 × k) before fusing
# From this many vectors on, the dense half of a search runs on a second thread while BM25 runs
# on the caller's: at a million chunks each half takes 2-4 ms, and faiss releases the GIL while
# it scans, so the two overlap on two cores (hybrid p50 1.27x lower at a million chunks on an
# idle machine, benchmarks/retrieval.py --sizes 1000000; no gain when other work holds the
# second core). Below it a dense search takes well under a millisecond and handing it to
# another thread would cost more than it saves.
PARALLEL_FROM = 50_000
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _dense_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:  # searches are serialised by the knowledge lock: two workers are plenty
            _pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tailor-dense-search")
        return _pool


@dataclass
class Ranked:
    top: list[int]  # chunk ids, best first
    dense: dict[int, float]  # cosine of every dense candidate and of every top chunk
    dense_rank: list[int]
    bm25: dict[int, float]  # BM25 of every BM25 candidate and of every top chunk
    bm25_rank: list[int]
    fused: dict[int, float]
    best_dense: float  # the best cosine among the candidates (what abstention reads)


def rank(index: VectorIndex, bm25: BM25Index, query: str, qv: np.ndarray, k: int, n: int, mode: str) -> Ranked:
    """The ranking part of a search, from the query text and its vector: the top `n` of each
    ranking fused, the top `k` in `mode`. Apart so that benchmarks/retrieval.py times what the
    app runs."""
    pending = _dense_pool().submit(index.search, qv[None, :], n) if index.count >= PARALLEL_FROM else None
    # only the top n of BM25: at a million chunks, scoring and sorting every match in Python
    # took longer than the rest of the search together
    bm25_top = bm25.search(query, n)
    d_scores, d_ids = pending.result() if pending is not None else index.search(qv[None, :], n)
    dense_rank = [int(i) for i in d_ids[0] if i >= 0]
    dense = {int(i): float(s) for i, s in zip(d_ids[0], d_scores[0]) if i >= 0}
    best_dense = max(dense.values(), default=float("-inf"))
    bm25_rank = [cid for cid, _ in bm25_top]
    bm25_all = dict(bm25_top)
    fused = reciprocal_rank_fusion([dense_rank, bm25_rank])
    if mode == "dense":
        top = dense_rank[:k]
    elif mode == "bm25":
        top = bm25_rank[:k]
    else:
        top = sorted(fused, key=lambda cid: (-fused[cid], cid))[:k]
    for cid in top:  # chunks found by BM25 alone still show their dense score
        if cid not in dense:
            dense[cid] = float(np.dot(index.reconstruct(cid), qv))
    # and chunks found by dense search alone their BM25 score
    bm25_all.update(bm25.scores_for(query, [cid for cid in top if cid not in bm25_all]))
    return Ranked(top, dense, dense_rank, bm25_all, bm25_rank, fused, best_dense)


class Searcher:
    def __init__(self, live: LiveIndex, lock: KnowledgeLock, encoder: Encoder, checker: IndexChecker):
        self.live = live
        self.store = live.store
        self.lock = lock
        self.encoder = encoder
        self.checker = checker

    def search(
        self, query: str, k: int, mode: str = "hybrid", candidates: int | None = None
    ) -> tuple[list[Passage], float]:
        """The top `k` passages for `query` and the best dense (cosine) score among all
        candidates (what abstention needs). Each passage has its dense (cosine), BM25 and fused
        (RRF) scores, ranks and query-term coverage in `scores`; `score` is the chosen mode's."""
        query = (query or "").strip()
        if not query:
            raise ValidationError("the search query is empty")
        if mode not in SEARCH_MODES:
            raise ValidationError(f"search mode must be one of {', '.join(SEARCH_MODES)}")
        if not 1 <= int(k) <= 100:
            raise ValidationError("k must be between 1 and 100")
        live = self.live
        with self.lock.thread:
            self.checker.sync()
            index = live.index
            if index is None or index.count == 0:
                return [], float("-inf")
            n = max(int(candidates or 0), MIN_CANDIDATES, 4 * k)
            qv = self.encoder.encode_query(query)
            ranked = rank(index, live.bm25, query, qv, k, n, mode)
            top, dense, bm25_all, fused = ranked.top, ranked.dense, ranked.bm25, ranked.fused
            rows = self.store.chunks(top)
            coverage = live.bm25.coverage_many(query, top)
        d_pos = {cid: r for r, cid in enumerate(ranked.dense_rank, start=1)}
        b_pos = {cid: r for r, cid in enumerate(ranked.bm25_rank, start=1)}
        passages = []
        for cid in top:
            row = rows.get(cid)
            if row is None:  # removed by another process a moment ago
                continue
            scores = {
                "dense": round(dense[cid], 4),
                "bm25": round(bm25_all.get(cid, 0.0), 4),
                "fused": round(fused.get(cid, 0.0), 5),
                "dense_rank": d_pos.get(cid),
                "bm25_rank": b_pos.get(cid),
                "coverage": round(coverage[cid], 4),
            }
            # the three score entries are rounded floats (the ranks are what may be None)
            primary = cast(float, {"dense": scores["dense"], "bm25": scores["bm25"], "hybrid": scores["fused"]}[mode])
            passages.append(
                Passage(
                    id=cid,
                    source=row.document,
                    text=row.text,
                    score=primary,
                    heading=context_line(row.title, row.heading),
                    scores=scores,
                )
            )
        return passages, ranked.best_dense
