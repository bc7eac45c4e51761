"""The knowledge tables in SQLite: documents, their chunks (text, metadata and a copy of each
chunk's vector) and a generation counter.

The database is the source of truth; the FAISS file is a derived, rebuildable structure. The
vector copy costs 1.5 KB per chunk (384 float32) and lets a missing, corrupt or stale index
be rebuilt in milliseconds instead of re-embedding every chunk (~15 chunks/s per core).
`generation` goes up with every change, so a process can tell cheaply that another process
(the CLI beside a running server) changed the knowledge and reload."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from assistant.db import Database, execute_script, utcnow
from assistant.errors import NotFoundError

from .chunking import Chunk


def _m001_documents(conn: sqlite3.Connection) -> None:
    execute_script(
        conn,
        """
        CREATE TABLE documents (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL UNIQUE,
            title TEXT NOT NULL,
            kind TEXT NOT NULL,
            size_bytes INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            text TEXT NOT NULL,
            chunk_count INTEGER NOT NULL,
            source_path TEXT,
            added_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX documents_sha256 ON documents(sha256);
        -- AUTOINCREMENT: ids are never reused, so a FAISS id can never point at a newer chunk
        -- that took a deleted chunk's row id.
        CREATE TABLE chunks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            heading TEXT NOT NULL DEFAULT '',
            text TEXT NOT NULL,
            token_count INTEGER NOT NULL,
            embedding BLOB,
            embedding_model TEXT
        );
        CREATE INDEX chunks_document ON chunks(document_id, position);
        CREATE TABLE retrieval_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO retrieval_state(key, value) VALUES ('generation', '0');
    """,
    )


MIGRATIONS = [_m001_documents]


@dataclass
class DocumentInfo:
    id: int
    name: str
    title: str
    kind: str
    size_bytes: int
    sha256: str
    chunk_count: int
    added_at: str
    updated_at: str
    source_path: str | None = None
    text: str | None = None  # extracted text, only when asked for (previews)
    chunks: list[ChunkRow] = field(default_factory=list)

    def as_dict(self) -> dict:
        d = {
            k: getattr(self, k)
            for k in (
                "name",
                "title",
                "kind",
                "size_bytes",
                "chunk_count",
                "added_at",
                "updated_at",
                "sha256",
                "source_path",
            )
        }
        return d


@dataclass
class ChunkRow:
    id: int
    document_id: int
    document: str  # document name
    title: str  # document title
    position: int
    heading: str
    text: str
    token_count: int


def _blob(vec: np.ndarray) -> bytes:
    return np.asarray(vec, dtype="<f4").tobytes()


class KnowledgeStore:
    def __init__(self, db: Database):
        self.db = db
        db.migrate("retrieval", MIGRATIONS)

    # ---- reading ----------------------------------------------------------------------------
    def generation(self) -> int:
        with self.db.read() as conn:
            row = conn.execute("SELECT value FROM retrieval_state WHERE key='generation'").fetchone()
        return int(row["value"]) if row else 0

    def documents(self) -> list[DocumentInfo]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM documents ORDER BY name COLLATE NOCASE").fetchall()
        return [_doc(r) for r in rows]

    def document(self, name: str, with_text: bool = False) -> DocumentInfo:
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM documents WHERE name=?", (name,)).fetchone()
            if row is None:
                raise NotFoundError(f"no document named {name!r} in the knowledge base")
            doc = _doc(row, with_text)
            if with_text:
                doc.chunks = [
                    _chunk(r)
                    for r in conn.execute(
                        "SELECT c.*, d.name AS document, d.title FROM chunks c JOIN documents d ON d.id=c.document_id"
                        " WHERE c.document_id=? ORDER BY c.position",
                        (doc.id,),
                    )
                ]
        return doc

    def find(self, name: str) -> DocumentInfo | None:
        try:
            return self.document(name)
        except NotFoundError:
            return None

    def find_sha(self, sha256: str) -> DocumentInfo | None:
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM documents WHERE sha256=? LIMIT 1", (sha256,)).fetchone()
        return _doc(row) if row else None

    def chunk_count(self) -> int:
        with self.db.read() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])

    def chunk_ids(self) -> np.ndarray:
        with self.db.read() as conn:
            return np.array([r[0] for r in conn.execute("SELECT id FROM chunks ORDER BY id")], dtype=np.int64)

    def chunks(self, ids: Sequence[int]) -> dict[int, ChunkRow]:
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        out: dict[int, ChunkRow] = {}
        with self.db.read() as conn:
            for start in range(0, len(ids), 500):
                part = ids[start : start + 500]
                marks = ",".join("?" * len(part))
                for r in conn.execute(
                    "SELECT c.*, d.name AS document, d.title FROM chunks c JOIN documents d ON d.id=c.document_id"
                    f" WHERE c.id IN ({marks})",
                    part,
                ):
                    out[r["id"]] = _chunk(r)
        return out

    def all_chunks(self) -> list[ChunkRow]:
        with self.db.read() as conn:
            return [
                _chunk(r)
                for r in conn.execute(
                    "SELECT c.*, d.name AS document, d.title FROM chunks c JOIN documents d ON d.id=c.document_id"
                    " ORDER BY c.id"
                )
            ]

    def chunk_texts(self, ids: Sequence[int] | np.ndarray | None = None) -> Iterator[tuple[int, str, str, str]]:
        """(id, document title, heading, text) of every chunk (or of the given ids), streamed in
        id order: loading BM25 at a million chunks must not hold every row (and `all_chunks`'
        vector blobs) at once."""
        sql = "SELECT c.id, d.title, c.heading, c.text FROM chunks c JOIN documents d ON d.id=c.document_id"
        if ids is None:
            with self.db.read() as conn:
                yield from conn.execute(sql + " ORDER BY c.id")
            return
        wanted = sorted(int(i) for i in ids)
        for start in range(0, len(wanted), 500):  # SQLite binds at most 999 parameters
            part = wanted[start : start + 500]
            where = f" WHERE c.id IN ({','.join('?' * len(part))}) ORDER BY c.id"
            with self.db.read() as conn:
                rows = conn.execute(sql + where, part).fetchall()
            yield from rows

    def vectors(self, model: str, ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of the chunks whose stored vector came from `model`."""
        sql = "SELECT id, embedding FROM chunks WHERE embedding IS NOT NULL AND embedding_model=?"
        args: list = [model]
        if ids is not None:
            ids = [int(i) for i in ids]
            if not ids:
                return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
            sql += f" AND id IN ({','.join('?' * len(ids))})"
            args += ids
        with self.db.read() as conn:
            rows = conn.execute(sql + " ORDER BY id", args).fetchall()
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        out_ids = np.array([r[0] for r in rows], dtype=np.int64)
        vecs = np.stack([np.frombuffer(r[1], dtype="<f4") for r in rows]).astype(np.float32)
        return out_ids, vecs

    def document_vectors(self, document_id: int, model: str) -> dict[tuple[str, str], np.ndarray]:
        """(heading, text) -> stored vector, for re-using embeddings of unchanged chunks."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT heading, text, embedding FROM chunks WHERE document_id=? AND"
                " embedding_model=? AND embedding IS NOT NULL",
                (document_id, model),
            ).fetchall()
        return {(r["heading"], r["text"]): np.frombuffer(r["embedding"], dtype="<f4").copy() for r in rows}

    # ---- writing ----------------------------------------------------------------------------
    def put_document(
        self,
        *,
        name: str,
        title: str,
        kind: str,
        size_bytes: int,
        sha256: str,
        text: str,
        chunks: Sequence[Chunk],
        vectors: np.ndarray,
        model: str,
        source_path: str | None = None,
    ) -> tuple[DocumentInfo, list[int], list[int]]:
        """Insert a document, or replace the one with the same name, with its chunks, in one
        transaction. Returns the document, the new chunk ids and the removed chunk ids."""
        now = utcnow()
        with self.db.transaction() as conn:
            old = conn.execute("SELECT id, added_at FROM documents WHERE name=?", (name,)).fetchone()
            removed: list[int] = []
            if old is not None:
                removed = [r[0] for r in conn.execute("SELECT id FROM chunks WHERE document_id=?", (old["id"],))]
                conn.execute("DELETE FROM chunks WHERE document_id=?", (old["id"],))
                conn.execute(
                    "UPDATE documents SET title=?, kind=?, size_bytes=?, sha256=?, text=?, chunk_count=?,"
                    " source_path=?, updated_at=? WHERE id=?",
                    (title, kind, size_bytes, sha256, text, len(chunks), source_path, now, old["id"]),
                )
                doc_id = old["id"]
            else:
                doc_id = conn.execute(
                    "INSERT INTO documents(name, title, kind, size_bytes, sha256, text, chunk_count, source_path,"
                    " added_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (name, title, kind, size_bytes, sha256, text, len(chunks), source_path, now, now),
                ).lastrowid
            new_ids = []
            for chunk, vec in zip(chunks, vectors):
                chunk_id = conn.execute(
                    "INSERT INTO chunks(document_id, position, heading, text, token_count, embedding,"
                    " embedding_model) VALUES (?,?,?,?,?,?,?)",
                    (doc_id, chunk.position, chunk.heading, chunk.text, chunk.token_count, _blob(vec), model),
                ).lastrowid
                assert chunk_id is not None  # set by a successful INSERT
                new_ids.append(chunk_id)
            _bump(conn)
            row = conn.execute("SELECT * FROM documents WHERE id=?", (doc_id,)).fetchone()
        return _doc(row), new_ids, removed

    def delete_document(self, name: str) -> tuple[DocumentInfo, list[int]]:
        with self.db.transaction() as conn:
            row = conn.execute("SELECT * FROM documents WHERE name=?", (name,)).fetchone()
            if row is None:
                raise NotFoundError(f"no document named {name!r} in the knowledge base")
            removed = [r[0] for r in conn.execute("SELECT id FROM chunks WHERE document_id=?", (row["id"],))]
            conn.execute("DELETE FROM documents WHERE id=?", (row["id"],))  # chunks cascade
            _bump(conn)
        return _doc(row), removed

    def set_vectors(self, ids: Sequence[int], vectors: np.ndarray, model: str) -> None:
        """Store re-computed vectors (after the embedding model changed). Not a content change,
        so the generation stays."""
        with self.db.transaction() as conn:
            conn.executemany(
                "UPDATE chunks SET embedding=?, embedding_model=? WHERE id=?",
                [(_blob(v), model, int(i)) for i, v in zip(ids, vectors)],
            )


def _bump(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE retrieval_state SET value=CAST(value AS INTEGER) + 1 WHERE key='generation'")


def _doc(row: sqlite3.Row, with_text: bool = False) -> DocumentInfo:
    return DocumentInfo(
        id=row["id"],
        name=row["name"],
        title=row["title"],
        kind=row["kind"],
        size_bytes=row["size_bytes"],
        sha256=row["sha256"],
        chunk_count=row["chunk_count"],
        added_at=row["added_at"],
        updated_at=row["updated_at"],
        source_path=row["source_path"],
        text=row["text"] if with_text else None,
    )


def _chunk(row: sqlite3.Row) -> ChunkRow:
    return ChunkRow(
        id=row["id"],
        document_id=row["document_id"],
        document=row["document"],
        title=row["title"],
        position=row["position"],
        heading=row["heading"],
        text=row["text"],
        token_count=row["token_count"],
    )
