"""Adding and removing documents. Data flow of an add: bytes -> parse (documents.py) -> chunks
(chunking.py) -> vectors (re-using the stored vector of any chunk whose text did not change)
-> one SQLite transaction (documents + chunks) -> the in-memory FAISS and BM25 indexes are
updated in place and the index file is rewritten (live_index.py)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from assistant.progress import Progress, no_progress, scaled

from .chunking import chunk_document, embed_text
from .config import KnowledgeConfig
from .documents import DocumentError, kind_of, max_document_bytes, parse_document
from .encoder import Encoder
from .index_check import IndexChecker
from .live_index import LiveIndex
from .locking import KnowledgeLock
from .store import DocumentInfo


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


def files_under(paths: Iterable[str | Path]) -> tuple[list[tuple[Path, str]], list[IngestResult]]:
    """(path, document name) of every file in `paths`, folders searched recursively (hidden
    files and folders skipped; a file in a folder is named by its path inside it), and an error
    result for each path that does not exist."""
    files: list[tuple[Path, str]] = []
    missing: list[IngestResult] = []
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
            missing.append(IngestResult(str(raw), "error", f"{raw}: no such file or folder"))
    return files, missing


class Ingestor:
    def __init__(self, live: LiveIndex, lock: KnowledgeLock, encoder: Encoder, checker: IndexChecker):
        self.live = live
        self.store = live.store
        self.config: KnowledgeConfig = live.config
        self.lock = lock
        self.encoder = encoder
        self.checker = checker

    def add_paths(self, paths: Iterable[str | Path], progress: Progress = no_progress) -> list[IngestResult]:
        """Add files and folders (recursively). Each file gets its own result; a file that
        fails does not stop the others. Progress is the fraction done (of 1.0), with the name
        of the file being added."""
        files, results = files_under(paths)
        for n, (path, name) in enumerate(files):

            def sub(done: float, total: float | None = None, message: str = "", n=n, name=name) -> None:
                frac = done / total if total else 0.0
                progress((n + frac) / len(files), 1.0, f"{name}: {message}")

            results.append(self.add_file(path, name=name, progress=sub))
        progress(1.0, 1.0, "done")
        return results

    def add_file(self, path: str | Path, name: str | None = None, progress: Progress = no_progress) -> IngestResult:
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
        self, name: str, data: bytes, source_path: str | None = None, progress: Progress = no_progress
    ) -> IngestResult:
        """Add (or replace) the document `name`. Never raises for a bad file: the result says
        what went wrong. Progress is the fraction done (of 1.0): chunking, then embedding."""
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
        model_name = self.config.model_name
        try:
            doc = parse_document(name, data)
            progress(0.05, 1.0, "chunking")
            embedder = self.encoder.embedder
            chunks = chunk_document(doc, embedder.count_tokens, self.config.target_tokens, self.config.overlap_tokens)
            if not chunks:
                raise DocumentError(f"{name}: no text found in the file")
            reuse = self.store.document_vectors(existing.id, model_name) if existing is not None else {}
            vectors = np.zeros((len(chunks), embedder.dim), dtype=np.float32)
            todo = [i for i, c in enumerate(chunks) if (c.heading, c.text) not in reuse]
            for i, c in enumerate(chunks):
                if (c.heading, c.text) in reuse:
                    vectors[i] = reuse[(c.heading, c.text)]
            if todo:
                vectors[todo] = self.encoder.encode(
                    [embed_text(doc.title, chunks[i].heading, chunks[i].text) for i in todo],
                    scaled(progress, 0.1, 0.95),
                    "embedding",
                )
        except DocumentError as exc:
            return IngestResult(name, "error", str(exc))
        with self.lock.exclusive():
            self.checker.sync()
            info, new_ids, removed = self.store.put_document(
                name=name,
                title=doc.title,
                kind=doc.kind,
                size_bytes=len(data),
                sha256=sha,
                text=doc.text,
                chunks=chunks,
                vectors=vectors,
                model=model_name,
                source_path=source_path,
            )
            self.live.apply(new_ids, vectors, removed, doc.title, chunks)
        status = "replaced" if existing is not None else "added"
        reused = len(chunks) - len(todo)
        note = f" ({reused} unchanged chunks kept their vectors)" if existing is not None and reused else ""
        return IngestResult(
            name, status, f"{name}: {status}, {len(chunks)} chunks{note}", len(chunks), time.perf_counter() - started
        )

    def remove(self, name: str) -> DocumentInfo:
        with self.lock.exclusive():
            self.checker.sync()
            info, removed = self.store.delete_document(name)
            self.live.apply([], np.zeros((0, 0), np.float32), removed, "", [])
        return info
