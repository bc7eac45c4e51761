"""The `examples` table and its companions: the schema (the "tuning" namespace's migrations:
examples, example_undo, example_embeddings, curation_settings, example_imports), how an
Example maps to a row, the filters the store searches with, and batched inserts.

The migration list is append-only: existing databases have run these functions, in this
order, under these numbers.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from assistant.db import execute_script, like_escape
from assistant.errors import ValidationError

from .example import Example, dedup_hash


def _m001_examples(conn: sqlite3.Connection) -> None:
    execute_script(
        conn,
        """
        CREATE TABLE examples (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            messages_json TEXT NOT NULL,
            passages_json TEXT,
            label TEXT,
            tags_json TEXT NOT NULL DEFAULT '[]',
            status TEXT NOT NULL DEFAULT 'active',
            split TEXT,
            source TEXT NOT NULL DEFAULT 'manual',
            conversation_id TEXT,
            message_id INTEGER,
            edited INTEGER NOT NULL DEFAULT 0,
            provenance_json TEXT,
            content_hash TEXT NOT NULL,
            prompt_text TEXT NOT NULL DEFAULT '',
            answer_text TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX examples_hash ON examples(content_hash);
        CREATE INDEX examples_split ON examples(split);
        CREATE INDEX examples_message ON examples(message_id);
        CREATE TABLE example_undo (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            batch TEXT NOT NULL,
            description TEXT NOT NULL,
            example_id INTEGER NOT NULL,
            before_json TEXT,            -- the whole row before the change; NULL: it did not exist
            created_at TEXT NOT NULL,
            undone_at TEXT
        );
        CREATE INDEX example_undo_batch ON example_undo(batch);
        CREATE TABLE example_embeddings (
            text_hash TEXT NOT NULL,
            model TEXT NOT NULL,
            vector BLOB NOT NULL,
            PRIMARY KEY (text_hash, model)
        );
        CREATE TABLE curation_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    )


def _m002_import_operations(conn: sqlite3.Connection) -> None:
    """Imports as recorded operations, and the normalised hash imports deduplicate on
    (backfilled here for the rows already stored)."""
    execute_script(
        conn,
        """
        CREATE TABLE example_imports (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            batch TEXT NOT NULL UNIQUE,     -- its id for `undo`, like an example_undo batch
            file_name TEXT NOT NULL,
            file_path TEXT NOT NULL,
            file_hash TEXT,                 -- sha256 of the file; NULL for a datasets folder
            source TEXT NOT NULL,
            status TEXT NOT NULL,           -- running, done, partial (interrupted)
            lock TEXT,                      -- names the lock file the importing process holds
            pid INTEGER,
            host TEXT,
            imported INTEGER NOT NULL DEFAULT 0,
            duplicates INTEGER NOT NULL DEFAULT 0,
            bad INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            note TEXT,
            started_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,       -- the last committed batch
            finished_at TEXT,
            undone_at TEXT
        );
        CREATE INDEX example_imports_status ON example_imports(status);
        ALTER TABLE examples ADD COLUMN import_id INTEGER;   -- the import that added the row
        ALTER TABLE examples ADD COLUMN dedup_hash TEXT;
        CREATE INDEX examples_import ON examples(import_id);
        CREATE INDEX examples_dedup ON examples(dedup_hash);
    """,
    )
    last = 0
    while True:
        rows = conn.execute(
            "SELECT id, messages_json, passages_json FROM examples WHERE id > ? ORDER BY id LIMIT 5000", (last,)
        ).fetchall()
        if not rows:
            break
        conn.executemany(
            "UPDATE examples SET dedup_hash=? WHERE id=?",
            [(dedup_hash(json.loads(r[1]), json.loads(r[2]) if r[2] else None), r[0]) for r in rows],
        )
        last = rows[-1][0]


def _m003_preference_pairs(conn: sqlite3.Connection) -> None:
    """Preference pairs are examples with a rejected reply (NULL for an ordinary example), so
    they share the examples' search, splits, versions, cleaning and undo."""
    conn.execute("ALTER TABLE examples ADD COLUMN rejected_text TEXT")


MIGRATIONS = [_m001_examples, _m002_import_operations, _m003_preference_pairs]

COLUMNS = (
    "id",
    "messages_json",
    "passages_json",
    "label",
    "tags_json",
    "status",
    "split",
    "source",
    "conversation_id",
    "message_id",
    "edited",
    "provenance_json",
    "content_hash",
    "prompt_text",
    "answer_text",
    "created_at",
    "updated_at",
    "dedup_hash",
    "rejected_text",
)


def row_values(ex: Example, now: str, dhash: str | None = None) -> tuple:
    """The values of COLUMNS[1:] for `ex` (`dhash`: its dedup hash, when already computed)."""
    prov = ex.provenance or {}
    return (
        json.dumps(ex.messages, ensure_ascii=False),
        json.dumps(ex.passages, ensure_ascii=False) if ex.passages else None,
        ex.label,
        json.dumps(ex.tags, ensure_ascii=False),
        ex.status,
        ex.split,
        ex.source,
        prov.get("conversation_id"),
        prov.get("message_id"),
        int(bool(prov.get("edited"))),
        json.dumps(prov, ensure_ascii=False) if prov else None,
        ex.content_hash,
        ex.prompt,
        ex.answer,
        ex.created_at or now,
        now,
        dhash or dedup_hash(ex.messages, ex.passages, ex.rejected),
        ex.rejected,
    )


def from_row(row) -> Example:
    """A stored row (sqlite3.Row of `examples`) as an Example."""
    return Example(
        id=row["id"],
        messages=json.loads(row["messages_json"]),
        passages=json.loads(row["passages_json"]) if row["passages_json"] else None,
        label=row["label"],
        tags=json.loads(row["tags_json"]),
        status=row["status"],
        split=row["split"],
        source=row["source"],
        provenance=json.loads(row["provenance_json"]) if row["provenance_json"] else {},
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        content_hash=row["content_hash"],
        rejected=row["rejected_text"],
    )


@dataclass
class ExampleFilter:
    query: str = ""  # words in the prompt or answer, and "#id"s
    tag: str | None = None
    source: str | None = None
    split: str | None = None
    label: str | None = None
    status: str | None = None
    ids: Sequence[int] | None = None
    kind: str | None = None  # "example" (SFT), "pair" (preference pair), None: both

    def where(self) -> tuple[str, list]:
        clauses: list[str] = []
        args: list[object] = []
        words = (self.query or "").split()
        # "#12 #15" finds examples 12 and 15 (the chat's "saved as example 12" links here).
        by_id = [int(w[1:]) for w in words if w.startswith("#") and w[1:].isdigit()]
        if by_id:
            clauses.append(f"id IN ({','.join('?' * len(by_id))})")
            args += by_id
        for word in (w for w in words if not (w.startswith("#") and w[1:].isdigit())):
            clauses.append(
                "(prompt_text LIKE ? ESCAPE '\\' OR answer_text LIKE ? ESCAPE '\\' OR messages_json LIKE ? ESCAPE '\\'"
                " OR rejected_text LIKE ? ESCAPE '\\')"
            )
            args += [f"%{like_escape(word)}%"] * 4
        if self.tag:
            clauses.append("EXISTS (SELECT 1 FROM json_each(examples.tags_json) WHERE value = ?)")
            args.append(self.tag)
        for col in ("source", "split", "label", "status"):
            value = getattr(self, col)
            if value:
                clauses.append(f"{col} = ?")
                args.append(value)
        if self.kind == "example":
            clauses.append("rejected_text IS NULL")
        elif self.kind == "pair":
            clauses.append("rejected_text IS NOT NULL")
        elif self.kind:
            raise ValidationError(f"kind must be example or pair, not {self.kind!r}")
        if self.ids is not None:
            ids = [int(i) for i in self.ids]
            clauses.append(f"id IN ({','.join('?' * len(ids))})" if ids else "0")
            args += ids
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def insert_examples(
    c: sqlite3.Connection,
    examples: Sequence[Example],
    now: str,
    import_id: int | None = None,
    hashes: Sequence[str] | None = None,
) -> list[int]:
    """Insert `examples` in the caller's transaction (tagged with `import_id`, with their
    `hashes` when already computed); returns their ids."""
    # Under the write lock AUTOINCREMENT hands out consecutive ids after the sequence
    # value, so one executemany can insert a batch and still report every id.
    cols = [*COLUMNS[1:], "import_id"]
    sql = f"INSERT INTO examples({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    seq = c.execute("SELECT seq FROM sqlite_sequence WHERE name='examples'").fetchone()
    start = (seq[0] if seq else 0) + 1
    c.executemany(
        sql, [(*row_values(ex, now, hashes[i] if hashes else None), import_id) for i, ex in enumerate(examples)]
    )
    ids = list(range(start, start + len(examples)))
    if ids and c.execute("SELECT seq FROM sqlite_sequence WHERE name='examples'").fetchone()[0] != ids[-1]:
        raise RuntimeError("example ids were not consecutive")  # cannot happen under BEGIN IMMEDIATE
    return ids
