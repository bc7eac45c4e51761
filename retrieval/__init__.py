"""Knowledge: documents -> structural chunks -> embeddings in FAISS plus BM25 -> hybrid search,
and the `Retriever` the chat uses to answer from the user's documents with citations."""

from .service import IndexCheck, IngestResult, KnowledgeService, open_knowledge

__all__ = ["IndexCheck", "IngestResult", "KnowledgeService", "open_knowledge"]
