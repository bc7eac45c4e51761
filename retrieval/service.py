"""The knowledge service: add, list, preview and remove documents; hybrid search; and the
`Retriever` the chat uses (`retrieve(query, k) -> Retrieval`).

A facade over one module per job: config.py (settings), locking.py (who may write),
live_index.py (the in-memory FAISS + BM25 indexes and their files), index_check.py (the index
file checked against the database and rebuilt), ingest.py (documents in and out), search.py
(hybrid search) and abstain.py (when the passages do not support an answer). The database is
the truth: on start, and whenever another process changed it, the index file is checked
against it and rebuilt from the stored vectors if they disagree."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from assistant.embeddings import Embedder
from assistant.evidence import choose_evidence
from assistant.progress import Progress, no_progress
from assistant.prompting import Passage, Retrieval
from assistant.workspace import Workspace

from . import abstain
from .chunking import DEFAULT_OVERLAP_TOKENS, DEFAULT_TARGET_TOKENS
from .config import KnowledgeConfig
from .encoder import Encoder
from .index import BM25Index, VectorIndex
from .index_check import IndexCheck, IndexChecker
from .ingest import Ingestor, IngestResult
from .live_index import INDEX_FILE, META_FILE, LiveIndex
from .locking import KnowledgeLock
from .search import SEARCH_MODES, Searcher
from .store import DocumentInfo, KnowledgeStore

log = logging.getLogger(__name__)

DEFAULT_MIN_SCORE = abstain.DEFAULT_MIN_SCORE
__all__ = [
    "DEFAULT_MIN_SCORE",
    "INDEX_FILE",
    "META_FILE",
    "SEARCH_MODES",
    "IndexCheck",
    "IngestResult",
    "KnowledgeService",
    "open_knowledge",
]


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
        self.config = KnowledgeConfig.resolve(
            embedder,
            embedding_model=embedding_model,
            index_kind=index_kind,
            hnsw_threshold=hnsw_threshold,
            min_score=min_score,
            target_tokens=target_tokens,
            overlap_tokens=overlap_tokens,
        )
        self.store = KnowledgeStore(workspace.db)
        self.lock = KnowledgeLock(workspace.indexes_dir / "knowledge.lock")
        self.encoder = Encoder(
            self.config.model_name, embedder, self.config.embed_backend, workspace.models_dir / "onnx"
        )
        self.live = LiveIndex(workspace.indexes_dir, self.store, self.config)
        self.checker = IndexChecker(self.live, self.lock, self.encoder)
        self.ingestor = Ingestor(self.live, self.lock, self.encoder, self.checker)
        self.searcher = Searcher(self.live, self.lock, self.encoder, self.checker)

    # ---- settings and state (read-only views of the parts) ----------------------------------
    @property
    def model_name(self) -> str:
        return self.config.model_name

    @property
    def index_kind(self) -> str:
        return self.config.index_kind

    @property
    def hnsw_threshold(self) -> int:
        return self.config.hnsw_threshold

    @property
    def min_score(self) -> float:
        return self.config.min_score

    @property
    def target_tokens(self) -> int:
        return self.config.target_tokens

    @property
    def overlap_tokens(self) -> int:
        return self.config.overlap_tokens

    @property
    def embedder(self) -> Embedder:
        """Loaded on first use: opening the service (app start) must not wait for the model."""
        return self.encoder.embedder

    @property
    def index_path(self) -> Path:
        return self.live.index_path

    @property
    def meta_path(self) -> Path:
        return self.live.meta_path

    @property
    def index(self) -> VectorIndex | None:
        return self.live.index

    @property
    def bm25(self) -> BM25Index:
        return self.live.bm25

    @property
    def generation(self) -> int:
        return self.live.generation

    @property
    def last_check(self) -> IndexCheck | None:
        return self.checker.last

    # ---- index consistency ------------------------------------------------------------------
    def check_index(self, repair: bool = True, progress: Progress = no_progress) -> IndexCheck:
        """Compare the index file with the database; rebuild it (from the stored vectors, or by
        re-embedding when the embedding model changed) when they disagree."""
        return self.checker.check(repair, progress)

    # ---- documents --------------------------------------------------------------------------
    def documents(self) -> list[DocumentInfo]:
        return self.store.documents()

    def document(self, name: str) -> DocumentInfo:
        """A document with its extracted text and chunks (for previews)."""
        return self.store.document(name, with_text=True)

    def add_paths(self, paths: Iterable[str | Path], progress: Progress = no_progress) -> list[IngestResult]:
        """Add files and folders (recursively); one result per file (see ingest.py)."""
        return self.ingestor.add_paths(paths, progress)

    def add_file(self, path: str | Path, name: str | None = None, progress: Progress = no_progress) -> IngestResult:
        return self.ingestor.add_file(path, name=name, progress=progress)

    def add_bytes(
        self, name: str, data: bytes, source_path: str | None = None, progress: Progress = no_progress
    ) -> IngestResult:
        """Add (or replace) the document `name`. Never raises for a bad file."""
        return self.ingestor.add_bytes(name, data, source_path=source_path, progress=progress)

    def remove(self, name: str) -> DocumentInfo:
        return self.ingestor.remove(name)

    # ---- search -----------------------------------------------------------------------------
    def search(self, query: str, k: int = 5, mode: str = "hybrid", candidates: int | None = None) -> list[Passage]:
        """The top `k` chunks for `query`, each with its dense (cosine), BM25 and fused (RRF)
        scores in `Passage.scores`; `Passage.score` is the score of the chosen `mode`."""
        return self.searcher.search(query, k, mode, candidates)[0]

    def _search(self, query: str, k: int, mode: str, candidates: int | None = None) -> tuple[list[Passage], float]:
        """Passages and the best dense (cosine) score among all candidates (benchmarks/retrieval.py)."""
        return self.searcher.search(query, k, mode, candidates)

    @staticmethod
    def support(question: str, passages: Sequence[Passage], best_dense: float) -> float:
        """How well the passages support answering the question, 0..1 (see abstain.py)."""
        return abstain.support(question, passages, best_dense)

    def retrieve(self, query: str, k: int = 4) -> Retrieval:
        """What the chat calls. Abstains (without asking the model) when the passages do not
        support an answer well enough; the closest passages still come back so the user sees
        what was found."""
        passages, best = self.searcher.search(query, k, "hybrid")
        decision = abstain.decide(query, passages, best, self.min_score)
        if not decision.abstain:
            # The sentences the model will read (assistant/evidence.py); the passages cited
            # are the ones that hold them, each still the whole chunk with its document.
            decision.passages = choose_evidence(query, decision.passages)
        return decision

    def stats(self) -> dict:
        with self.lock.thread:
            index = self.live.index
            return {
                "documents": len(self.store.documents()),
                "chunks": self.store.chunk_count(),
                "index_kind": index.kind if index else None,
                "indexed_vectors": index.count if index else 0,
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
