"""The knowledge service: add, list, preview and remove documents; hybrid search; and the
`Retriever` the chat uses (`retrieve(query, k) -> Retrieval`).

Data flow of an add: bytes -> parse (documents.py) -> chunks (chunking.py) -> vectors
(re-using the stored vector of any chunk whose text did not change) -> one SQLite
transaction (documents + chunks) -> the in-memory FAISS and BM25 indexes are updated in place
-> the FAISS file is written under a temporary name and renamed. The database is the truth:
on start, and whenever another process changed it, the index file is checked against it and
rebuilt from the stored vectors if they disagree."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from assistant.db import utcnow
from assistant.embeddings import DEFAULT_EMBEDDING_MODEL, Embedder, get_embedder
from assistant.errors import ValidationError
from assistant.prompting import Passage, Retrieval
from assistant.workspace import Workspace, write_atomic

from .chunking import DEFAULT_OVERLAP_TOKENS, DEFAULT_TARGET_TOKENS, chunk_document, context_line, embed_text
from .documents import DocumentError, kind_of, max_document_bytes, parse_document
from .index import DEFAULT_HNSW_THRESHOLD, FLAT, HNSW, IVF, BM25Index, VectorIndex, reciprocal_rank_fusion
from .store import DocumentInfo, KnowledgeStore

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]  # (fraction done 0..1, what is happening)

# Abstention: the chat answers only when the retrieved passages support the question well
# enough. support = (cosine similarity of the best dense hit + the best idf-weighted share of
# the question's terms found in one of the k passages) / 2. Cosine alone separates poorly:
# "How much is the Tidewalker 10?" (not in the documents) scores as high as real catalogue
# questions, but its distinctive term "10" is absent. Calibrated with benchmarks/retrieval.py
# on examples/lantern_bay (114 answerable facts, 32 unanswerable questions, all-MiniLM-L6-v2,
# 160-token chunks, k=4): at 0.40 it answered 100/114 answerable (87.7%) and declined 26/32
# unanswerable (81.3%); cosine alone at its best threshold managed 68% / 78%.
DEFAULT_MIN_SCORE = 0.40
INDEX_FILE = "knowledge.faiss"
META_FILE = "knowledge.json"
SEARCH_MODES = ("hybrid", "dense", "bm25")


@dataclass
class IngestResult:
    name: str
    status: str  # "added", "replaced", "unchanged", "duplicate", "error"
    message: str
    chunks: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status != "error"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class IndexCheck:
    ok: bool  # the index agreed with the database (nothing had to be repaired)
    problems: list[str] = field(default_factory=list)
    rebuilt: bool = False
    chunks: int = 0
    kind: str = FLAT
    seconds: float = 0.0


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValidationError(f"{name} must be a number, got {raw!r}") from None


class KnowledgeService:
    """Implements `assistant.prompting.Retriever`. Thread-safe; several processes may share a
    workspace (writes are serialised with a lock file, readers reload when the generation in
    the database moves)."""

    def __init__(
        self,
        workspace: Workspace,
        embedder: Embedder | None = None,
        *,
        embedding_model: str | None = None,
        index_kind: str | None = None,
        hnsw_threshold: int | None = None,
        min_score: float | None = None,
        target_tokens: int = DEFAULT_TARGET_TOKENS,
        overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
    ):
        self.workspace = workspace
        self.store = KnowledgeStore(workspace.db)
        self._embedder = embedder
        self.model_name = (
            embedder.name
            if embedder is not None
            else embedding_model or os.environ.get("TAILOR_EMBEDDING_MODEL") or DEFAULT_EMBEDDING_MODEL
        )
        self.index_kind = (index_kind or os.environ.get("TAILOR_INDEX_KIND") or "auto").lower()
        if self.index_kind not in ("auto", FLAT, HNSW, IVF):
            raise ValidationError(f"index kind must be auto, flat, hnsw or ivf, not {self.index_kind!r}")
        self.hnsw_threshold = int(hnsw_threshold or _env_float("TAILOR_HNSW_THRESHOLD", DEFAULT_HNSW_THRESHOLD))
        self.min_score = float(
            min_score if min_score is not None else _env_float("TAILOR_RAG_MIN_SCORE", DEFAULT_MIN_SCORE)
        )
        self.target_tokens = target_tokens
        self.overlap_tokens = overlap_tokens
        self.index_path = workspace.indexes_dir / INDEX_FILE
        self.meta_path = workspace.indexes_dir / META_FILE
        self._lock_path = workspace.indexes_dir / "knowledge.lock"
        self._lock = threading.RLock()
        self._flock_depth = 0
        self.index: VectorIndex | None = None
        self.bm25 = BM25Index()
        self.generation = -1
        self.last_check: IndexCheck | None = None

    # ---- setup ------------------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        """Loaded on first use: opening the service (app start) must not wait for the model."""
        if self._embedder is None:
            self._embedder = get_embedder(self.model_name)
        return self._embedder

    @contextlib.contextmanager
    def _exclusive(self):
        """This thread and this process alone may change the knowledge or its index files."""
        with self._lock:
            try:
                import fcntl
            except ImportError:  # Windows: threads are still serialised
                fcntl = None
            if fcntl is None or self._flock_depth:  # re-entered (a write that re-checks the index)
                self._flock_depth += 1
                try:
                    yield
                finally:
                    self._flock_depth -= 1
                return
            with open(self._lock_path, "a+") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                self._flock_depth = 1
                try:
                    yield
                finally:
                    self._flock_depth = 0
                    fcntl.flock(fh, fcntl.LOCK_UN)

    def _desired_kind(self, count: int, current: str | None = None) -> str:
        if self.index_kind != "auto":
            return self.index_kind
        if current == HNSW:  # hysteresis: do not flip back and forth around the threshold
            return HNSW if count > self.hnsw_threshold // 2 else FLAT
        return HNSW if count > self.hnsw_threshold else FLAT

    # ---- index consistency ------------------------------------------------------------------
    def check_index(self, repair: bool = True, progress: Progress | None = None) -> IndexCheck:
        """Compare the index file with the database; rebuild it (from the stored vectors, or by
        re-embedding when the embedding model changed) when they disagree."""
        started = time.perf_counter()
        with self._exclusive():
            generation = self.store.generation()
            db_ids = self.store.chunk_ids()
            problems: list[str] = []
            index, meta = None, {}
            if not self.index_path.exists() or not self.meta_path.exists():
                if len(db_ids):
                    problems.append("the index file is missing")
            else:
                try:
                    meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
                    index = VectorIndex.from_bytes(
                        self.index_path.read_bytes(), meta.get("kind", FLAT), meta.get("deleted", ())
                    )
                except Exception as exc:  # noqa: BLE001 - any failure to read means "corrupt"
                    problems.append(f"the index file cannot be read ({exc.__class__.__name__}: {exc})"[:300])
                    index = None
            if index is not None:
                problems += self._compare(index, meta, db_ids)
            rebuilt = False
            if problems and repair:
                log.warning("knowledge index disagrees with the database (%s); rebuilding", "; ".join(problems))
                index = self._rebuild(db_ids, progress)
                self._save(index, generation)
                rebuilt = True
            elif index is not None and not problems:
                wanted = self._desired_kind(index.count, index.kind)
                if wanted != index.kind and repair:
                    index = index.converted(wanted)
                    self._save(index, generation)
            self.index = index if (not problems or rebuilt) else None
            self._load_bm25()
            self.generation = generation
            check = IndexCheck(
                ok=not problems,
                problems=problems,
                rebuilt=rebuilt,
                chunks=len(db_ids),
                kind=self.index.kind if self.index else self._desired_kind(len(db_ids)),
                seconds=time.perf_counter() - started,
            )
            self.last_check = check
            return check

    def _compare(self, index: VectorIndex, meta: dict, db_ids: np.ndarray) -> list[str]:
        problems = []
        if meta.get("model") != self.model_name:
            problems.append(
                f"the index was built with embedding model {meta.get('model')!r}, "
                f"the configured one is {self.model_name!r}"
            )
            return problems
        if int(meta.get("dim", -1)) != index.dim or (self._embedder is not None and self._embedder.dim != index.dim):
            problems.append(
                f"the index has {index.dim}-dimensional vectors, the embedding model makes "
                f"{self._embedder.dim if self._embedder else meta.get('dim')}"
            )
            return problems
        ids = np.sort(index.ids())
        if len(ids) != len(db_ids):
            problems.append(f"the index holds {len(ids)} vectors, the database {len(db_ids)} chunks")
        elif not np.array_equal(ids, db_ids):
            problems.append("the index ids differ from the database's chunk ids")
        elif len(db_ids):
            # spot-check that the vectors themselves are the stored ones
            sample = db_ids[np.linspace(0, len(db_ids) - 1, num=min(16, len(db_ids))).astype(int)]
            sids, stored = self.store.vectors(self.model_name, sample)
            if len(sids) != len(sample):
                problems.append("some chunks have no stored vector for the configured embedding model")
            elif stored.shape[1] != index.dim or not np.allclose(index.vectors(sids), stored, atol=1e-5):
                problems.append("the index vectors differ from the stored ones")
        return problems

    def _rebuild(self, db_ids: np.ndarray, progress: Progress | None = None) -> VectorIndex | None:
        if not len(db_ids):
            return None
        ids, vecs = self.store.vectors(self.model_name)
        missing = np.setdiff1d(db_ids, ids)
        if len(missing):  # new embedding model (or vectors never stored): embed the chunk texts
            rows = self.store.chunks(missing.tolist())
            order = [int(i) for i in missing if int(i) in rows]
            texts = [embed_text(rows[i].title, rows[i].heading, rows[i].text) for i in order]
            new = self._encode(texts, progress, "re-embedding chunks")
            self.store.set_vectors(order, new, self.model_name)
            ids, vecs = self.store.vectors(self.model_name)
        keep = np.isin(ids, db_ids)
        ids, vecs = ids[keep], vecs[keep]
        index = VectorIndex(vecs.shape[1], self._desired_kind(len(ids)))
        index.add(ids, vecs)
        return index

    def _save(self, index: VectorIndex | None, generation: int) -> None:
        if index is None:
            for p in (self.index_path, self.meta_path):
                p.unlink(missing_ok=True)
            return
        # The index first, then the metadata: a crash in between leaves a pair that the startup
        # check finds inconsistent (ids or tombstones differ) and rebuilds.
        write_atomic(self.index_path, index.to_bytes())
        write_atomic(
            self.meta_path,
            json.dumps(
                {
                    "version": 1,
                    "model": self.model_name,
                    "dim": index.dim,
                    "kind": index.kind,
                    "count": index.count,
                    "generation": generation,
                    "deleted": sorted(index.deleted),
                    "saved_at": utcnow(),
                }
            ),
        )

    def _load_bm25(self) -> None:
        bm25 = BM25Index()
        for row in self.store.all_chunks():
            bm25.add(row.id, embed_text(row.title, row.heading, row.text))
        self.bm25 = bm25

    def _sync(self) -> None:
        """Reload when another process (or a lost update) moved the database past our copy."""
        if self.store.generation() != self.generation:
            self.check_index()

    # ---- documents --------------------------------------------------------------------------
    def documents(self) -> list[DocumentInfo]:
        return self.store.documents()

    def document(self, name: str) -> DocumentInfo:
        """A document with its extracted text and chunks (for previews)."""
        return self.store.document(name, with_text=True)

    def add_paths(self, paths: Iterable[str | Path], progress: Progress | None = None) -> list[IngestResult]:
        """Add files and folders (recursively). Each file gets its own result; a file that
        fails does not stop the others."""
        files: list[tuple[Path, str]] = []
        results: list[IngestResult] = []
        for raw in paths:
            path = Path(raw).expanduser()
            if path.is_dir():
                for f in sorted(path.rglob("*")):
                    rel = f.relative_to(path)
                    if f.is_file() and not any(part.startswith(".") for part in rel.parts):
                        files.append((f, rel.as_posix()))
            elif path.is_file():
                files.append((path, path.name))
            else:
                results.append(IngestResult(str(raw), "error", f"{raw}: no such file or folder"))
        for n, (path, name) in enumerate(files):

            def sub(frac: float, msg: str, n=n, name=name):
                if progress is not None:
                    progress((n + frac) / len(files), f"{name}: {msg}")

            results.append(self.add_file(path, name=name, progress=sub))
        if progress is not None:
            progress(1.0, "done")
        return results

    def add_file(self, path: str | Path, name: str | None = None, progress: Progress | None = None) -> IngestResult:
        path = Path(path)
        name = name or path.name
        try:
            kind_of(name)
            size = path.stat().st_size
            limit = max_document_bytes()
            if size > limit:  # refuse before reading a huge file into memory
                raise DocumentError(
                    f"{name}: {size / 1e6:.1f} MB is over the {limit / 1e6:.0f} MB limit per "
                    "document (TAILOR_MAX_DOCUMENT_MB); split it or raise the limit"
                )
            data = path.read_bytes()
        except DocumentError as exc:
            return IngestResult(name, "error", str(exc))
        except OSError as exc:
            return IngestResult(name, "error", f"{name}: cannot read the file ({exc.strerror or exc})")
        return self.add_bytes(name, data, source_path=str(path.resolve()), progress=progress)

    def add_bytes(
        self, name: str, data: bytes, source_path: str | None = None, progress: Progress | None = None
    ) -> IngestResult:
        """Add (or replace) the document `name`. Never raises for a bad file: the result says
        what went wrong."""
        started = time.perf_counter()
        name = (name or "").strip().replace("\\", "/")
        if not name:
            return IngestResult("(unnamed)", "error", "a document needs a name")
        sha = hashlib.sha256(data).hexdigest()
        existing = self.store.find(name)
        if existing is not None and existing.sha256 == sha:
            return IngestResult(
                name, "unchanged", f"{name}: already in the knowledge base with the same content", existing.chunk_count
            )
        twin = self.store.find_sha(sha)
        if twin is not None and twin.name != name:
            return IngestResult(
                name,
                "duplicate",
                f"{name}: same content as {twin.name!r}, already in the knowledge base; not added again",
                twin.chunk_count,
            )
        try:
            doc = parse_document(name, data)
            if progress:
                progress(0.05, "chunking")
            chunks = chunk_document(doc, self.embedder.count_tokens, self.target_tokens, self.overlap_tokens)
            if not chunks:
                raise DocumentError(f"{name}: no text found in the file")
            reuse = self.store.document_vectors(existing.id, self.model_name) if existing is not None else {}
            vectors = np.zeros((len(chunks), self.embedder.dim), dtype=np.float32)
            todo = [i for i, c in enumerate(chunks) if (c.heading, c.text) not in reuse]
            for i, c in enumerate(chunks):
                if (c.heading, c.text) in reuse:
                    vectors[i] = reuse[(c.heading, c.text)]
            if todo:

                def emb_progress(frac, msg):
                    if progress:
                        progress(0.1 + 0.85 * frac, msg)

                vectors[todo] = self._encode(
                    [embed_text(doc.title, chunks[i].heading, chunks[i].text) for i in todo], emb_progress, "embedding"
                )
        except DocumentError as exc:
            return IngestResult(name, "error", str(exc))
        with self._exclusive():
            self._sync()
            info, new_ids, removed = self.store.put_document(
                name=name,
                title=doc.title,
                kind=doc.kind,
                size_bytes=len(data),
                sha256=sha,
                text=doc.text,
                chunks=chunks,
                vectors=vectors,
                model=self.model_name,
                source_path=source_path,
            )
            self._apply(new_ids, vectors, removed, doc.title, chunks)
        status = "replaced" if existing is not None else "added"
        reused = len(chunks) - len(todo)
        note = f" ({reused} unchanged chunks kept their vectors)" if existing is not None and reused else ""
        return IngestResult(
            name, status, f"{name}: {status}, {len(chunks)} chunks{note}", len(chunks), time.perf_counter() - started
        )

    def remove(self, name: str) -> DocumentInfo:
        with self._exclusive():
            self._sync()
            info, removed = self.store.delete_document(name)
            self._apply([], np.zeros((0, 0), np.float32), removed, "", [])
        return info

    def _apply(
        self, new_ids: Sequence[int], vectors: np.ndarray, removed: Sequence[int], title: str, chunks: Sequence
    ) -> None:
        """Mirror a committed database change in the in-memory indexes and the index file.
        Called under _exclusive(), right after the transaction."""
        generation = self.store.generation()
        if self.index is None and len(new_ids):
            self.index = VectorIndex(vectors.shape[1], self._desired_kind(len(new_ids)))
        if self.index is not None:
            self.index.remove(removed)
            self.index.add(new_ids, vectors)
            wanted = self._desired_kind(self.index.count, self.index.kind)
            if wanted != self.index.kind:
                self.index = self.index.converted(wanted)
            if self.index.count == 0:
                self.index = None
        self.bm25.remove(removed)
        for cid, chunk in zip(new_ids, chunks):
            self.bm25.add(cid, embed_text(title, chunk.heading, chunk.text))
        self._save(self.index, generation)
        self.generation = generation

    def _encode(self, texts: list[str], progress: Progress | None, what: str) -> np.ndarray:
        def cb(done, total):
            if progress:
                progress(done / total, f"{what} {done}/{total}")

        return self.embedder.encode(texts, batch_size=16, progress=cb)

    # ---- search -----------------------------------------------------------------------------
    def search(self, query: str, k: int = 5, mode: str = "hybrid", candidates: int | None = None) -> list[Passage]:
        """The top `k` chunks for `query`, each with its dense (cosine), BM25 and fused (RRF)
        scores in `Passage.scores`; `Passage.score` is the score of the chosen `mode`."""
        return self._search(query, k, mode, candidates)[0]

    def _search(self, query: str, k: int, mode: str, candidates: int | None = None) -> tuple[list[Passage], float]:
        """Passages and the best dense (cosine) score among all candidates."""
        query = (query or "").strip()
        if not query:
            raise ValidationError("the search query is empty")
        if mode not in SEARCH_MODES:
            raise ValidationError(f"search mode must be one of {', '.join(SEARCH_MODES)}")
        if not 1 <= int(k) <= 100:
            raise ValidationError("k must be between 1 and 100")
        with self._lock:
            self._sync()
            if self.index is None or self.index.count == 0:
                return [], float("-inf")
            n = max(int(candidates or 0), 50, 4 * k)
            qv = self.embedder.encode([query])[0]
            d_scores, d_ids = self.index.search(qv[None, :], n)
            dense_rank = [int(i) for i in d_ids[0] if i >= 0]
            dense = {int(i): float(s) for i, s in zip(d_ids[0], d_scores[0]) if i >= 0}
            best_dense = max(dense.values(), default=float("-inf"))
            bm25_all = self.bm25.scores(query)
            bm25_rank = [cid for cid, _ in sorted(bm25_all.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]
            fused = reciprocal_rank_fusion([dense_rank, bm25_rank])
            if mode == "dense":
                top = dense_rank[:k]
            elif mode == "bm25":
                top = bm25_rank[:k]
            else:
                top = sorted(fused, key=lambda cid: (-fused[cid], cid))[:k]
            for cid in top:  # chunks found by BM25 alone still show their dense score
                if cid not in dense:
                    dense[cid] = float(np.dot(self.index.reconstruct(cid), qv))
            rows = self.store.chunks(top)
        d_pos = {cid: r for r, cid in enumerate(dense_rank, start=1)}
        b_pos = {cid: r for r, cid in enumerate(bm25_rank, start=1)}
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
                "coverage": round(self.bm25.coverage(query, cid), 4),
            }
            primary = {"dense": scores["dense"], "bm25": scores["bm25"], "hybrid": scores["fused"]}[mode]
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
        return passages, best_dense

    @staticmethod
    def support(passages: Sequence[Passage], best_dense: float) -> float:
        """How well the passages support answering (see DEFAULT_MIN_SCORE)."""
        if not passages:
            return 0.0
        return (best_dense + max(p.scores.get("coverage", 0.0) for p in passages)) / 2

    def retrieve(self, query: str, k: int = 4) -> Retrieval:
        """What the chat calls. Abstains (without asking the model) when the passages do not
        support an answer well enough; the closest passages still come back so the user sees
        what was found."""
        passages, best = self._search(query, k, "hybrid")
        if not passages:
            return Retrieval([], abstain=True, reason="the knowledge base is empty: add documents first")
        support = self.support(passages, best)
        if support < self.min_score:
            return Retrieval(
                passages,
                abstain=True,
                reason=f"no passage supports an answer well enough (support {support:.2f}, "
                f"needed {self.min_score:.2f})",
            )
        return Retrieval(passages, abstain=False, reason=f"support {support:.2f}")

    def stats(self) -> dict:
        with self._lock:
            return {
                "documents": len(self.store.documents()),
                "chunks": self.store.chunk_count(),
                "index_kind": self.index.kind if self.index else None,
                "indexed_vectors": self.index.count if self.index else 0,
                "embedding_model": self.model_name,
                "min_score": self.min_score,
            }


def open_knowledge(workspace: Workspace, embedder: Embedder | None = None, **options) -> KnowledgeService:
    """Open the knowledge base of `workspace`: migrate its tables, load the index file and
    check it against the database (rebuilding it if they disagree). Does not load the
    embedding model unless a rebuild needs it, so the app starts fast."""
    service = KnowledgeService(workspace, embedder, **options)
    check = service.check_index()
    if check.rebuilt:
        log.warning("knowledge index rebuilt: %s", "; ".join(check.problems))
    return service
