"""The two search structures over the chunks: a FAISS vector index and a BM25 index (bm25.py,
re-exported here), and reciprocal rank fusion to combine them.

FAISS ids are the chunk row ids in SQLite (IndexIDMap2), so a hit maps straight back to its
text and metadata, and single chunks can be added, replaced and removed without a rebuild.
Vectors are L2-normalised, so inner product is cosine similarity.

Exact search (IndexFlatIP) is the default: one query on one core took 0.4 ms at 10k chunks,
7.5 ms at 100k and 74 ms at 1M (benchmarks/retrieval.py). Beyond `hnsw_threshold` chunks (or
by setting) the index is HNSW: 0.4 ms at 100k with recall@10 0.987 against exact search. HNSW
cannot delete in place, so removed ids become
tombstones that searches skip (an IDSelector inside the graph walk) and the graph is rebuilt
from its own stored vectors once tombstones pass a quarter of it. IVF (by setting) is the
other approximate choice: it deletes in place and builds far faster than HNSW (a k-means
on the vectors, then one assignment each), at some recall cost. From IVF_SQ8_FROM vectors on,
its lists hold each vector's residual to its list centre in 8 bits a dimension (scalar
quantisation): a query reads a quarter of the bytes (0.4 GB instead of 1.5 GB at a million 384-d
vectors, and ~1.5x faster), and a cosine comes back within ~0.003 of the exact one
(benchmarks/retrieval.py --sizes 1000000). Smaller IVF indexes, and IVF-Flat files written
before, keep float32 vectors until a retraining or rebuild at that size."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import cast

import faiss
import numpy as np

from assistant.terms import tokenize as tokenize  # re-exported: tests and callers tokenize as BM25 does
from assistant.workspace import replaced_atomically

from .bm25 import BM25Index as BM25Index  # re-exported: the index module names both structures

FLAT, HNSW, IVF = "flat", "hnsw", "ivf"
KINDS = (FLAT, HNSW, IVF)
DEFAULT_HNSW_THRESHOLD = 100_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40  # halves build time against 80; recall@10 stayed >= .98 in benchmarks/retrieval.py
HNSW_EF_SEARCH = 128
IVF_MAX_LISTS = 4096
StoredVectors = Callable[[], tuple[np.ndarray, np.ndarray]]  # the database's exact (ids, vectors)
IVF_RANGE_MARGIN = 0.25
# An IVF index trained for this many vectors or more stores 8-bit codes; a smaller one float32.
# 8-bit ranges learnt from a few hundred vectors clip the vectors added after them, and below
# this size the index is small anyway (30 MB at 384-d). It is a retraining (every ~4x growth)
# that switches an index over.
IVF_SQ8_FROM = 20_000
# fused = sum over lists of 1 / (RRF_K + rank). Cormack et al. (2009) used 60; a smaller constant
# weighs the first ranks more. On the demo's 114 facts (benchmarks/ranking.py) 10 puts the answer
# in the top 4 for 95.6% (60: 92.1%) and in the 3 evidence sentences the model reads for 90.4%
# (86.8%); rank 1 is unchanged (72.8%). The held-out set: top 4 88.5% (86.5%), sentences 70.8% both.
RRF_K = 10


class VectorIndex:
    def __init__(self, dim: int, kind: str = FLAT, *, index: faiss.Index | None = None, deleted: Iterable[int] = ()):
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r} (flat, hnsw or ivf)")
        self.dim = int(dim)
        self.kind = kind
        self.index = index if index is not None else self._empty(dim, kind)
        self.deleted: set[int] = set(int(i) for i in deleted)  # HNSW tombstones
        self._set_ef(HNSW_EF_SEARCH)

    @staticmethod
    def _empty(dim: int, kind: str, n_lists: int = 1, quantized: bool = False) -> faiss.Index:
        if kind == IVF and not quantized:
            return faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, n_lists, faiss.METRIC_INNER_PRODUCT)
        if kind == IVF:
            # IVF stores our ids itself (an IDMap over it would mis-map ids after a removal,
            # because IVF does not renumber); a hash-table direct map allows reconstruct and
            # remove by id. Inverted lists need a trained quantizer: `add` trains on the first
            # batch. (faiss's Python wrapper keeps the quantizer alive with its index.) Residuals
            # quantise better than raw vectors: they are small and centred (recall@10 0.974
            # against 0.966 for raw 8-bit vectors at 1M, at the same speed).
            ivf = faiss.IndexIVFScalarQuantizer(
                faiss.IndexFlatIP(dim), dim, n_lists, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT, True
            )
            # each dimension's 8-bit range is its min..max over the training sample, widened by a
            # quarter on each side: an index grows 4x between retrainings, and vectors outside
            # the range would be clipped (measured on a grown index: worst cosine error 0.011
            # without the margin, 0.0026 with it; mean 0.0003 vs 0.0004)
            ivf.sq.rangestat_arg = IVF_RANGE_MARGIN
            return ivf
        inner: faiss.Index
        if kind == HNSW:
            hnsw = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            inner = hnsw
        else:
            inner = faiss.IndexFlatIP(dim)
        return faiss.IndexIDMap2(inner)

    def _set_ef(self, ef: int) -> None:
        if self.kind == HNSW:
            inner = faiss.downcast_index(cast(faiss.IndexIDMap2, self.index).index)
            cast(faiss.IndexHNSW, inner).hnsw.efSearch = int(ef)

    def _nprobe(self) -> int:
        n_lists = cast(faiss.IndexIVF, self.index).nlist  # probe ~3% of the lists, at least 16
        return int(min(n_lists, max(16, n_lists // 32)))

    # ---- contents ---------------------------------------------------------------------------
    @property
    def count(self) -> int:
        """Live vectors (tombstones excluded)."""
        return int(self.index.ntotal) - len(self.deleted)

    def all_ids(self) -> np.ndarray:
        if self.kind == IVF:
            ivf = cast(faiss.IndexIVF, self.index)
            lists = ivf.invlists
            assert lists is not None  # a trained or empty IVF index always has its lists
            parts = [
                faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                for i in range(ivf.nlist)
                if lists.list_size(i)
            ]
            return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
        return faiss.vector_to_array(cast(faiss.IndexIDMap2, self.index).id_map).astype(np.int64)

    def ids(self) -> np.ndarray:
        ids = self.all_ids()
        if self.deleted:
            ids = ids[~np.isin(ids, np.fromiter(self.deleted, dtype=np.int64))]
        return ids

    def reconstruct(self, chunk_id: int) -> np.ndarray:
        # the stubs' first overload (key, x: Tensor | None) returns a Tensor; without x faiss returns numpy
        return cast(np.ndarray, self.index.reconstruct(int(chunk_id)))

    def vectors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        for row, i in enumerate(ids):
            out[row] = self.index.reconstruct(int(i))
        return out

    # ---- changes ----------------------------------------------------------------------------
    def add(
        self,
        ids: Sequence[int] | np.ndarray,
        vectors: np.ndarray,
        stored: StoredVectors | None = None,
    ) -> None:
        """Add (or replace) vectors by id. `stored`, when given, returns the exact (ids,
        vectors) of every chunk (the database's copy): an IVF index that retrains as it grows
        re-encodes from those rather than from its own 8-bit codes, so the quantisation error
        does not compound with each retraining."""
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        ids_arr = np.asarray(ids, dtype=np.int64)
        if self.kind == IVF and not self.index.is_trained:
            self._train_ivf(vectors)
        elif self.kind == IVF and self._ivf_outgrown(self.count + len(ids_arr)):
            # lists trained for a small index grow long and every search scans a larger share of
            # the vectors: retrain once the index has grown ~4x (amortised, like a growing array)
            old_ids, old_vecs = self._retrain_source(stored)
            keep = ~np.isin(old_ids, ids_arr)
            ids_arr = np.concatenate([old_ids[keep], ids_arr])
            vectors = np.concatenate([old_vecs[keep], vectors])
            self._train_ivf(vectors)
        stale = [int(i) for i in ids_arr if int(i) in self.deleted]
        if stale:  # an id that was tombstoned comes back: drop the tombstone's vector first
            self._compact()
        self.index.add_with_ids(vectors, ids_arr)

    @staticmethod
    def _ivf_lists(n: int) -> int:
        """~2 sqrt(n) lists of ~sqrt(n)/2 vectors (at least 39 vectors per list)."""
        return int(max(1, min(IVF_MAX_LISTS, 2 * np.sqrt(n), n // 39)))

    def _ivf_outgrown(self, n: int) -> bool:
        return cast(faiss.IndexIVF, self.index).nlist * 2 <= self._ivf_lists(n)

    def _train_ivf(self, vectors: np.ndarray, total: int | None = None) -> None:
        """A fresh, trained, empty IVF index for `vectors` (or, given `total`, for that many
        vectors of which `vectors` is a sample): k-means on at most 40 vectors per list (faiss's
        minimum for stable centroids), which keeps training at 1M to seconds."""
        n = total or len(vectors)
        self.index = self._empty(self.dim, IVF, self._ivf_lists(n), quantized=n >= IVF_SQ8_FROM)
        n_lists = cast(faiss.IndexIVF, self.index).nlist
        sample = vectors
        if len(vectors) > 40 * n_lists:
            rows = np.random.default_rng(0).choice(len(vectors), 40 * n_lists, replace=False)
            sample = vectors[np.sort(rows)]
        self.index.train(sample)
        # faiss's stubs omit DirectMap (the SWIG class exists at runtime)
        cast(faiss.IndexIVF, self.index).set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]

    def _retrain_source(self, stored: StoredVectors | None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of what the index holds, to retrain on: the exact stored copies when
        they cover every id, else the index's own decoded codes."""
        if stored is not None:
            ids, vecs = stored()
            held = self.all_ids()
            if vecs.ndim == 2 and vecs.shape[1] == self.dim and np.isin(held, ids).all():
                mine = np.isin(ids, held)
                return ids[mine], vecs[mine]
        return self._ivf_contents()

    def _ivf_contents(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) straight from the inverted lists, decoded a list at a time instead of
        a reconstruct call per vector: 8-bit residuals plus their list's centre, or (an IVF-Flat
        index written before) the raw float32 codes."""
        ivf = cast(faiss.IndexIVF, self.index)
        lists = ivf.invlists
        assert lists is not None
        sq = ivf if isinstance(ivf, faiss.IndexIVFScalarQuantizer) else None
        ids, vecs = [np.zeros(0, np.int64)], [np.zeros((0, self.dim), np.float32)]
        for i in range(ivf.nlist):
            size = lists.list_size(i)
            if size:
                ids.append(faiss.rev_swig_ptr(lists.get_ids(i), size).copy().astype(np.int64))
                codes = faiss.rev_swig_ptr(lists.get_codes(i), size * lists.code_size).copy()
                if sq is None:
                    vecs.append(codes.view(np.float32).reshape(size, self.dim))
                    continue
                x = sq.sq.decode(codes.reshape(size, lists.code_size))
                if sq.by_residual:
                    x += ivf.quantizer.reconstruct(i)
                vecs.append(x)
        return np.concatenate(ids), np.concatenate(vecs)

    def remove(self, ids: Iterable[int]) -> None:
        ids = [int(i) for i in ids]
        if not ids:
            return
        if self.kind in (FLAT, IVF):
            # faiss's wrapper accepts an id array (it builds the IDSelectorBatch); the stubs say IDSelector only
            self.index.remove_ids(np.asarray(ids, dtype=np.int64))  # type: ignore[arg-type]
            return
        present = set(self.all_ids().tolist())
        self.deleted.update(i for i in ids if i in present)
        if len(self.deleted) > max(1000, self.index.ntotal // 4):
            self._compact()

    def _compact(self) -> None:
        """Rebuild without the tombstones (HNSW only), from the vectors the index stores."""
        if not self.deleted:
            return
        live = self.ids()
        vecs = self.vectors(live)
        self.index = self._empty(self.dim, self.kind)
        self._set_ef(HNSW_EF_SEARCH)
        self.deleted = set()
        if len(live):
            self.index.add_with_ids(vecs, live)

    def converted(self, kind: str) -> VectorIndex:
        """The same vectors in an index of another kind."""
        live = self.ids()
        out = VectorIndex(self.dim, kind)
        out.add(live, self.vectors(live))
        return out

    # ---- search -----------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (n_queries, k); missing hits have id -1 and score -inf."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = max(1, min(int(k), max(self.count, 1)))
        if self.index.ntotal == 0:
            return (np.full((len(queries), k), -np.inf, dtype=np.float32), np.full((len(queries), k), -1, np.int64))
        params = batch = selector = None  # the C++ selectors hold raw pointers: keep them alive here
        if self.kind == HNSW:
            params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # present at runtime, missing from faiss's stubs
            params.efSearch = int(max(ef_search or HNSW_EF_SEARCH, k))
            if self.deleted:
                batch = faiss.IDSelectorBatch(np.fromiter(self.deleted, dtype=np.int64))
                selector = faiss.IDSelectorNot(batch)
                params.sel = selector
        elif self.kind == IVF and self.index.is_trained:
            params = faiss.SearchParametersIVF()
            params.nprobe = self._nprobe()
        scores, ids = self.index.search(queries, k, params=params)
        del batch, selector
        scores = np.where(ids < 0, -np.inf, scores)
        return scores, ids

    # ---- persistence ------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        return faiss.serialize_index(self.index).tobytes()

    def write(self, path: Path) -> None:
        """Write the index to `path` atomically (a temporary name, fsync, rename), straight from
        faiss to the file: `to_bytes` first copies the whole index into memory (1.5 GB at a
        million 384-d vectors) and the copy doubled the resident memory of every save."""
        with replaced_atomically(path) as tmp:
            faiss.write_index(self.index, str(tmp))

    @classmethod
    def read(cls, path: Path, kind: str, deleted: Iterable[int] = ()) -> VectorIndex:
        """The index saved at `path` (read by faiss, without a copy in Python bytes)."""
        return cls._wrap(faiss.read_index(str(path)), kind, deleted)

    @classmethod
    def from_bytes(cls, data: bytes, kind: str, deleted: Iterable[int] = ()) -> VectorIndex:
        return cls._wrap(faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8)), kind, deleted)

    @classmethod
    def _wrap(cls, index: faiss.Index, kind: str, deleted: Iterable[int]) -> VectorIndex:
        # deserialize_index / read_index already return the most derived type; wrapping it again
        # with downcast_index would let the first (owning) wrapper free the C++ object.
        if isinstance(index, faiss.IndexIVF):
            if kind != IVF:
                raise ValueError(f"the file holds a {type(index).__name__} index, the metadata says {kind}")
            return cls(index.d, IVF, index=index)
        if not isinstance(index, faiss.IndexIDMap2):
            raise ValueError(f"expected an IndexIDMap2, found {type(index).__name__}")
        inner = faiss.downcast_index(index.index)
        actual = HNSW if isinstance(inner, faiss.IndexHNSW) else FLAT if isinstance(inner, faiss.IndexFlat) else None
        if actual != kind:
            raise ValueError(f"the file holds a {type(inner).__name__} index, the metadata says {kind}")
        return cls(index.d, kind, index=index, deleted=deleted)


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> dict[int, float]:
    """fused(id) = sum over rankings of 1 / (k + rank), rank counted from 1."""
    fused: dict[int, float] = defaultdict(float)
    for ranking in rankings:
        for rank, cid in enumerate(ranking, start=1):
            fused[cid] += 1.0 / (k + rank)
    return fused
