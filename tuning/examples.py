"""Training examples: the curated dataset that tuning trains on, stored in SQLite.

An example is a chat: an optional system prompt, the earlier turns of the conversation, the
final user turn and the assistant answer (always the last message). It may carry the
retrieved passages the answer was grounded in; `render_messages` shows them to the trainer
exactly as the chat showed them to the model (through `assistant.prompting.build_messages`).

Every change that a user may regret (edit, delete, bulk tag, a cleaning fix) records the
rows' previous state in `example_undo` under one batch id, and `undo(batch)` puts them back.

An import is one recorded operation (`example_imports`): the row is written first (status
"running"), every batch of rows it inserts carries its id (`examples.import_id`), and it is
marked "done" at the end. The importing process holds a lock file while it runs; an import
found "running" whose lock is free (the process was killed) is shown as "partial". Undoing
an import (done or partial) deletes exactly the rows it added. Imports skip examples that
are already in the store: `dedup_hash` is the hash of the normalised messages and passages
(see `dedup_hash`), so importing the same file twice adds nothing the second time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import socket
import sqlite3
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from assistant.conversations import ConversationLog
from assistant.db import Database, execute_script, utcnow
from assistant.errors import NotFoundError, ValidationError
from assistant.prompting import Passage, build_messages

try:
    import fcntl
except ImportError:  # Windows: interrupted imports are recognised by their silence instead
    fcntl = None  # type: ignore[assignment]

ROLES = ("system", "user", "assistant")
STATUSES = ("active", "excluded")  # excluded: kept in the store but left out of training
SPLITS = ("train", "validation", "test")
SOURCES = ("chat", "import", "manual")


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


MIGRATIONS = [_m001_examples, _m002_import_operations]

_COLUMNS = (
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
)


@dataclass
class Example:
    messages: list[dict]
    passages: list[dict] | None = None
    label: str | None = None
    tags: list[str] = field(default_factory=list)
    status: str = "active"
    split: str | None = None
    source: str = "manual"
    provenance: dict = field(default_factory=dict)  # conversation_id, message_id, message_time, edited, ...
    id: int | None = None
    created_at: str = ""
    updated_at: str = ""
    content_hash: str = ""

    # ---- views --------------------------------------------------------------------------
    @property
    def system(self) -> str:
        return self.messages[0]["content"] if self.messages and self.messages[0]["role"] == "system" else ""

    @property
    def prompt(self) -> str:
        """The final user turn."""
        return self.messages[-2]["content"] if len(self.messages) >= 2 else ""

    @property
    def answer(self) -> str:
        return self.messages[-1]["content"] if self.messages else ""

    @property
    def context(self) -> list[dict]:
        """Turns before the final user turn (without the system prompt)."""
        return [m for m in self.messages[:-2] if m["role"] != "system"]

    @property
    def conversation_id(self) -> str | None:
        return self.provenance.get("conversation_id")

    @property
    def message_id(self) -> int | None:
        return self.provenance.get("message_id")

    @property
    def edited(self) -> bool:
        return bool(self.provenance.get("edited"))

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "messages": self.messages,
            "passages": self.passages,
            "label": self.label,
            "tags": list(self.tags),
            "status": self.status,
            "split": self.split,
            "source": self.source,
            "provenance": self.provenance,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "content_hash": self.content_hash,
        }


def validate_messages(messages) -> list[dict]:
    """Check and normalise a chat: [system?] (user, assistant)* user, assistant."""
    if not isinstance(messages, list) or not messages:
        raise ValidationError("messages must be a non-empty list")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValidationError(f"message {i + 1} is not an object")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ValidationError(f"message {i + 1} has role {role!r}; expected system, user or assistant")
        if not isinstance(content, str):
            raise ValidationError(f"message {i + 1} ({role}) has no text content")
        if role == "system" and i != 0:
            raise ValidationError(f"message {i + 1}: a system prompt may only come first")
        out.append({"role": role, "content": content})
    body = out[1:] if out[0]["role"] == "system" else out
    if len(body) < 2 or body[-1]["role"] != "assistant" or body[-2]["role"] != "user":
        raise ValidationError("an example must end with a user message followed by the assistant answer")
    return out


def _clean_tags(tags) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = tags.split(",")
    out: list[str] = []
    for t in tags:
        t = str(t).strip()
        if t and t not in out:
            out.append(t)
    return out


def _clean_passages(passages) -> list[dict] | None:
    if not passages:
        return None
    if not isinstance(passages, list):
        raise ValidationError("passages must be a list")
    out = []
    for i, p in enumerate(passages):
        if isinstance(p, Passage):
            p = p.as_dict()
        if not isinstance(p, dict) or not isinstance(p.get("text"), str):
            raise ValidationError(f"passage {i + 1} needs a text")
        q = dict(p)
        q.setdefault("id", i + 1)
        q["source"] = str(q.get("source") or "")
        out.append(q)
    return out


def content_hash(messages: Sequence[dict], passages: Sequence[dict] | None) -> str:
    """What makes two examples the same: their messages and their passages' texts."""
    key = json.dumps(
        [[m["role"], m["content"]] for m in messages]
        + [[p.get("source", ""), p.get("text", "")] for p in (passages or [])],
        ensure_ascii=False,
    )
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")
_SPACES = re.compile("[\u00a0\u2007\u202f\u2009\u200a\u3000\t]")
_RUNS = re.compile(r" {2,}")
_BLANKS = re.compile(r"\n{3,}")


def normalised_text(text: str) -> str:
    """The text as the cleaning report's "normalise" fix would leave it (NFC, plain newlines,
    no invisible characters, ordinary single spaces, no trailing blanks, at most one empty
    line in a row, stripped). The same steps as `tuning.cleaning.normalise_text` (a test
    holds them together), so a cleaned example still counts as the one that was imported;
    written for speed, as every imported message goes through it."""
    ascii_only = text.isascii()  # NFC and the invisible characters leave ASCII as it is
    if not ascii_only:
        text = unicodedata.normalize("NFC", text)
    if "\r" in text:  # before dropping invisibles: "\r\u200b\n" is two line breaks
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not ascii_only:
        text = _SPACES.sub(" ", _INVISIBLE.sub("", text))
    elif "\t" in text:
        text = text.replace("\t", " ")
    if "\n" in text:
        text = "\n".join(_RUNS.sub(" ", line).rstrip() for line in text.split("\n"))
        if "\n\n\n" in text:
            text = _BLANKS.sub("\n\n", text)
    elif "  " in text:
        text = _RUNS.sub(" ", text)
    return text.strip()


def dedup_hash(messages: Sequence[dict], passages: Sequence[dict] | None) -> str:
    """What makes an imported example one that is already present: its messages (role and
    normalised text) and its passages' sources and normalised texts. Labels and tags do not
    count. Coarser than `content_hash` (which the cleaning report's exact-duplicate check
    uses): text that differs only in whitespace or Unicode form hashes the same. Each part
    is written with its length, so no text can imitate a boundary. SHA-256 cut to 128 bits
    (32 hex digits): a smaller index, still no collision in any real dataset."""
    parts = [f"{m['role']}:{len(t)}:{t}" for m in messages for t in (normalised_text(m["content"]),)]
    for p in passages or []:
        src, text = str(p.get("source", "")).strip(), normalised_text(str(p.get("text", "")))
        parts.append(f"passage:{len(src)}:{src}:{len(text)}:{text}")
    return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:32]


def to_passages(passages: Sequence[dict] | None) -> list[Passage]:
    known = {"id", "source", "text", "score", "heading", "scores"}
    return [
        Passage(**{"id": i + 1, "source": "", **{k: v for k, v in p.items() if k in known}})
        for i, p in enumerate(passages or [])
    ]


def render_messages(example: Example) -> list[dict]:
    """The messages the trainer sees: the chat's own prompt building for the final user turn
    (system prompt, earlier turns, passages shown as in the chat), then the answer."""
    return build_messages(example.context, example.prompt, example.system, to_passages(example.passages)) + [
        {"role": "assistant", "content": example.answer}
    ]


def preview_text(example: Example, tokenizer) -> str:
    """Exactly the text the trainer tokenizes for this example."""
    return tokenizer.apply_chat_template(render_messages(example), tokenize=False)


def make_example(
    messages, *, passages=None, label=None, tags=None, status="active", source="manual", provenance=None, split=None
) -> Example:
    messages = validate_messages(messages)
    if status not in STATUSES:
        raise ValidationError(f"status must be one of {', '.join(STATUSES)}")
    if split is not None and split not in SPLITS:
        raise ValidationError(f"split must be one of {', '.join(SPLITS)}")
    label = None if label is None or str(label).strip() == "" else str(label).strip()
    passages = _clean_passages(passages)
    return Example(
        messages=messages,
        passages=passages,
        label=label,
        tags=_clean_tags(tags),
        status=status,
        split=split,
        source=source or "manual",
        provenance=dict(provenance or {}),
        content_hash=content_hash(messages, passages),
    )


def chat_example(prompt: str, answer: str, system: str = "", **kw) -> Example:
    messages = ([{"role": "system", "content": system}] if system and system.strip() else []) + [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": answer},
    ]
    return make_example(messages, **kw)


def _row_values(ex: Example, now: str, dhash: str | None = None) -> tuple:
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
        dhash or dedup_hash(ex.messages, ex.passages),
    )


def _from_row(row) -> Example:
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
    )


def like_escape(text: str) -> str:
    """`text` for a LIKE pattern with ESCAPE '\\': its % and _ match themselves."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass
class ExampleFilter:
    query: str = ""  # words in the prompt or answer
    tag: str | None = None
    source: str | None = None
    split: str | None = None
    label: str | None = None
    status: str | None = None
    ids: Sequence[int] | None = None

    def where(self) -> tuple[str, list]:
        clauses, args = [], []
        for word in (self.query or "").split():
            clauses.append(
                "(prompt_text LIKE ? ESCAPE '\\' OR answer_text LIKE ? ESCAPE '\\' OR messages_json LIKE ? ESCAPE '\\')"
            )
            args += [f"%{like_escape(word)}%"] * 3
        if self.tag:
            clauses.append("EXISTS (SELECT 1 FROM json_each(examples.tags_json) WHERE value = ?)")
            args.append(self.tag)
        for col in ("source", "split", "label", "status"):
            value = getattr(self, col)
            if value:
                clauses.append(f"{col} = ?")
                args.append(value)
        if self.ids is not None:
            ids = [int(i) for i in self.ids]
            clauses.append(f"id IN ({','.join('?' * len(ids))})" if ids else "0")
            args += ids
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


STALE_IMPORT_S = 15 * 60  # where lock files cannot be checked: a running import silent this long was killed


@dataclass
class ImportOperation:
    """The handle an importing process holds while it runs (see ExampleStore.begin_import)."""

    id: int
    batch: str
    file_name: str
    file_hash: str | None
    lock: _ImportLock


class _ImportLock:
    """An exclusive lock on a file, held for as long as an import runs. The operating system
    drops it when the process dies, however it dies (kill -9 included), which is how a
    reader tells an interrupted import from one that is still running."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fh = open(path, "w")  # held open until release()
        if fcntl is not None:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        if self.fh.closed:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            self.fh.close()


def _lock_held(path: Path) -> bool:
    try:
        fh = open(path)
    except FileNotFoundError:
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def _import_dict(row) -> dict:
    d = {
        k: row[k]
        for k in (
            "id",
            "batch",
            "file_name",
            "file_path",
            "file_hash",
            "source",
            "status",
            "imported",
            "duplicates",
            "bad",
            "error",
            "note",
            "started_at",
            "updated_at",
            "finished_at",
            "undone_at",
        )
    }
    d["examples"] = row["remaining"]
    return d


def import_description(op: dict) -> str:
    """One line for an import in undo lists: "import pairs.jsonl (#3)", or for one that was
    interrupted "import pairs.jsonl (#3, PARTIAL: interrupted after 20000 examples)"."""
    if op["status"] == "partial":
        extra = f", PARTIAL: interrupted after {op['imported']} examples"
        if op.get("note"):
            extra += f", {op['note']}"
        return f"import {op['file_name']} (#{op['id']}{extra})"
    if op["status"] == "running":
        return f"import {op['file_name']} (#{op['id']}, running: {op['imported']} examples so far)"
    return f"import {op['file_name']} (#{op['id']})"


class ExampleStore:
    def __init__(self, db: Database):
        self.db = db
        db.migrate("tuning", MIGRATIONS)
        self.recover_imports()  # an import killed last time is shown as partial from now on

    # ---- reading ------------------------------------------------------------------------
    def get(self, example_id: int) -> Example:
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM examples WHERE id=?", (int(example_id),)).fetchone()
        if row is None:
            raise NotFoundError(f"example {example_id} does not exist")
        return _from_row(row)

    def list(self, flt: ExampleFilter | None = None, limit: int | None = None, offset: int = 0) -> list[Example]:
        where, args = (flt or ExampleFilter()).where()
        sql = f"SELECT * FROM examples{where} ORDER BY id"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args += [int(limit), int(offset)]
        with self.db.read() as conn:
            return [_from_row(r) for r in conn.execute(sql, args)]

    def iter_all(self, flt: ExampleFilter | None = None, batch: int = 2000) -> Iterable[Example]:
        last = 0
        where, args = (flt or ExampleFilter()).where()
        where = where + (" AND" if where else " WHERE") + " id > ?"
        while True:
            with self.db.read() as conn:
                rows = conn.execute(
                    f"SELECT * FROM examples{where} ORDER BY id LIMIT ?", [*args, last, batch]
                ).fetchall()
            if not rows:
                return
            for r in rows:
                yield _from_row(r)
            last = rows[-1]["id"]

    def count(self, flt: ExampleFilter | None = None) -> int:
        where, args = (flt or ExampleFilter()).where()
        with self.db.read() as conn:
            return conn.execute(f"SELECT COUNT(*) FROM examples{where}", args).fetchone()[0]

    def counts_by_split(self, status: str | None = "active") -> dict[str, int]:
        sql = "SELECT COALESCE(split, 'unassigned') AS s, COUNT(*) AS n FROM examples"
        args = []
        if status:
            sql += " WHERE status=?"
            args.append(status)
        with self.db.read() as conn:
            found = {r["s"]: r["n"] for r in conn.execute(sql + " GROUP BY s", args)}
        out = {s: found.pop(s, 0) for s in SPLITS}
        out.update(found)
        return out

    def facets(self) -> dict[str, list[str]]:
        """Distinct tags, sources, labels and statuses, for filter pickers."""
        with self.db.read() as conn:
            tags = [
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT j.value FROM examples, json_each(examples.tags_json) j ORDER BY 1"
                )
            ]
            out = {"tag": tags}
            for col in ("source", "label", "status", "split"):
                out[col] = [
                    r[0]
                    for r in conn.execute(f"SELECT DISTINCT {col} FROM examples WHERE {col} IS NOT NULL ORDER BY 1")
                ]
        return out

    def find_by_message(self, message_id: int) -> list[Example]:
        with self.db.read() as conn:
            return [
                _from_row(r)
                for r in conn.execute("SELECT * FROM examples WHERE message_id=? ORDER BY id", (int(message_id),))
            ]

    # ---- writing ------------------------------------------------------------------------
    def add(self, example: Example) -> Example:
        [ex_id] = self.add_many([example])
        return self.get(ex_id)

    def add_many(
        self,
        examples: Sequence[Example],
        conn: sqlite3.Connection | None = None,
        assign_splits: bool = True,
        validated: bool = False,
    ) -> list[int]:
        """Insert examples in one transaction (or in `conn`'s); returns their ids.
        `validated`: the examples come from make_example (the importer), skip re-checking."""
        now = utcnow()
        if not validated:
            for ex in examples:
                ex.messages = validate_messages(ex.messages)  # examples built by hand are checked too
                ex.content_hash = content_hash(ex.messages, ex.passages)
        if conn is not None:
            return self._insert(conn, examples, now)
        with self.db.transaction() as c:
            ids = self._insert(c, examples, now)
        if assign_splits:
            self.assign_splits()
        return ids

    @staticmethod
    def _insert(
        c: sqlite3.Connection,
        examples: Sequence[Example],
        now: str,
        import_id: int | None = None,
        hashes: Sequence[str] | None = None,
    ) -> list[int]:
        # Under the write lock AUTOINCREMENT hands out consecutive ids after the sequence
        # value, so one executemany can insert a batch and still report every id.
        cols = [*_COLUMNS[1:], "import_id"]
        sql = f"INSERT INTO examples({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        seq = c.execute("SELECT seq FROM sqlite_sequence WHERE name='examples'").fetchone()
        start = (seq[0] if seq else 0) + 1
        c.executemany(
            sql, [(*_row_values(ex, now, hashes[i] if hashes else None), import_id) for i, ex in enumerate(examples)]
        )
        ids = list(range(start, start + len(examples)))
        if ids and c.execute("SELECT seq FROM sqlite_sequence WHERE name='examples'").fetchone()[0] != ids[-1]:
            raise RuntimeError("example ids were not consecutive")  # cannot happen under BEGIN IMMEDIATE
        return ids

    # ---- imports: one recorded operation each -------------------------------------------
    @property
    def _lock_dir(self) -> Path:
        return self.db.path.parent / ".import-locks"

    def begin_import(self, path: Path | str, *, file_hash: str | None, source: str = "import") -> ImportOperation:
        """Record an import as running (and hold its lock file) before any row is written."""
        path = Path(path)
        token = secrets.token_hex(8)
        lock = _ImportLock(self._lock_dir / f"{token}.lock")
        try:
            now = utcnow()
            with self.db.transaction() as conn:
                cur = conn.execute(
                    "INSERT INTO example_imports(batch, file_name, file_path, file_hash, source, status, lock, pid,"
                    " host, started_at, updated_at) VALUES (?,?,?,?,?,'running',?,?,?,?,?)",
                    (
                        token,
                        path.name,
                        str(path),
                        file_hash,
                        source,
                        token,
                        os.getpid(),
                        socket.gethostname(),
                        now,
                        now,
                    ),
                )
                op_id = cur.lastrowid
                conn.execute("UPDATE example_imports SET batch=? WHERE id=?", (f"import-{op_id}", op_id))
        except BaseException:
            lock.release()
            raise
        return ImportOperation(id=op_id, batch=f"import-{op_id}", file_name=path.name, file_hash=file_hash, lock=lock)

    def add_import_batch(self, op: ImportOperation, examples: Sequence[Example]) -> tuple[list[int], int]:
        """Insert, in one transaction tagged with `op`, the examples that are not already in
        the store (by `dedup_hash`, also within the batch). Returns (new ids, how many were
        already present)."""
        hashes = [dedup_hash(ex.messages, ex.passages) for ex in examples]
        now = utcnow()
        with self.db.transaction() as conn:
            row = conn.execute("SELECT status, undone_at FROM example_imports WHERE id=?", (op.id,)).fetchone()
            if row is None or row["undone_at"] is not None:
                raise ValidationError(f"import #{op.id} of {op.file_name} was undone while it ran; it stopped")
            present = {
                r[0]
                for r in conn.execute(
                    "SELECT e.dedup_hash FROM json_each(?) j JOIN examples e ON e.dedup_hash = j.value",
                    (json.dumps(sorted(set(hashes))),),
                )
            }
            keep, keep_hashes = [], []
            for ex, h in zip(examples, hashes):
                if h not in present:
                    present.add(h)
                    keep.append(ex)
                    keep_hashes.append(h)
            ids = self._insert(conn, keep, now, import_id=op.id, hashes=keep_hashes)
            conn.execute(
                "UPDATE example_imports SET imported=imported+?, duplicates=duplicates+?, updated_at=?,"
                " status='running' WHERE id=?",
                (len(keep), len(examples) - len(keep), now, op.id),
            )
        return ids, len(examples) - len(keep)

    def finish_import(self, op: ImportOperation, *, bad: int = 0, error: str | None = None) -> str | None:
        """Mark the import done (`error` None) or partial (it stopped with `error` after some
        rows landed; one that landed nothing is forgotten). Releases its lock. Returns the
        status it ends with (None: forgotten)."""
        now = utcnow()
        try:
            with self.db.transaction() as conn:
                row = conn.execute("SELECT imported FROM example_imports WHERE id=?", (op.id,)).fetchone()
                if row is None:
                    return None
                if error is None:
                    status = "done"
                    if op.file_hash:  # an earlier interrupted import of the same file is now complete
                        conn.execute(
                            "UPDATE example_imports SET note=? WHERE file_hash=? AND status='partial'"
                            " AND undone_at IS NULL AND id<>?",
                            (f"completed by import #{op.id}", op.file_hash, op.id),
                        )
                elif row["imported"] == 0:
                    conn.execute("DELETE FROM example_imports WHERE id=?", (op.id,))
                    return None
                else:
                    status = "partial"
                conn.execute(
                    "UPDATE example_imports SET status=?, bad=?, error=?, finished_at=?, updated_at=? WHERE id=?",
                    (status, int(bad), error, now, now, op.id),
                )
            return status
        finally:
            op.lock.release()

    def _interrupted(self, row) -> bool:
        """A running import whose process is gone: its lock file is free (or, where locks
        cannot be checked, it wrote nothing for STALE_IMPORT_S)."""
        if row["status"] != "running":
            return False
        if fcntl is not None and row["host"] in (None, socket.gethostname()) and row["lock"]:
            return not _lock_held(self._lock_dir / f"{row['lock']}.lock")
        age = datetime.now(timezone.utc) - datetime.fromisoformat(row["updated_at"])
        return age.total_seconds() > STALE_IMPORT_S

    def recover_imports(self) -> list[int]:
        """Mark imports that were killed mid-way (status still "running", process gone) as
        partial, so that they are shown with an undo. Returns their ids."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT id, status, lock, host, updated_at FROM example_imports WHERE status='running'"
            ).fetchall()
        dead = [r for r in rows if self._interrupted(r)]
        if not dead:
            return []
        now = utcnow()
        with self.db.transaction() as conn:
            for r in dead:
                conn.execute(
                    "UPDATE example_imports SET status='partial', error=COALESCE(error, ?), finished_at=?"
                    " WHERE id=? AND status='running'",
                    ("interrupted (the importing process stopped)", now, r["id"]),
                )
        for r in dead:
            (self._lock_dir / f"{r['lock']}.lock").unlink(missing_ok=True)
        return [r["id"] for r in dead]

    def imports(
        self, limit: int | None = 20, *, status: str | None = None, file_hash: str | None = None, undoable: bool = False
    ) -> list[dict]:
        """Recorded imports, newest first, with `examples`: how many of their rows are still
        in the store (what undoing the import removes)."""
        self.recover_imports()
        clauses, args = [], []
        if status:
            clauses.append("i.status=?")
            args.append(status)
        if file_hash:
            clauses.append("i.file_hash=?")
            args.append(file_hash)
        if undoable:
            clauses.append("i.status<>'running' AND i.undone_at IS NULL")
        sql = (
            "SELECT i.*, (SELECT COUNT(*) FROM examples e WHERE e.import_id=i.id) AS remaining"
            " FROM example_imports i" + (" WHERE " + " AND ".join(clauses) if clauses else "") + " ORDER BY i.id DESC"
        )
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        with self.db.read() as conn:
            rows = conn.execute(sql, args).fetchall()
        out = [_import_dict(r) for r in rows]
        return [o for o in out if o["examples"]] if undoable else out

    def get_import(self, import_id_or_batch) -> dict:
        self.recover_imports()
        key = str(import_id_or_batch)
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT i.*, (SELECT COUNT(*) FROM examples e WHERE e.import_id=i.id) AS remaining"
                " FROM example_imports i WHERE i.batch=? OR CAST(i.id AS TEXT)=?",
                (key, key),
            ).fetchone()
        if row is None:
            raise NotFoundError(f"no import {import_id_or_batch!r}")
        return _import_dict(row)

    def undo_import(self, import_id_or_batch) -> int:
        """Delete exactly the rows an import added (it may be done or partial, not running).
        Returns how many were removed."""
        op = self.get_import(import_id_or_batch)  # (an interrupted one is marked partial first)
        with self.db.transaction() as conn:
            row = conn.execute("SELECT status, undone_at FROM example_imports WHERE id=?", (op["id"],)).fetchone()
            if row["status"] == "running":
                raise ValidationError(f"import #{op['id']} of {op['file_name']} is still running; wait for it to end")
            if row["undone_at"]:
                raise ValidationError(f"import #{op['id']} of {op['file_name']} was already undone")
            n = conn.execute("DELETE FROM examples WHERE import_id=?", (op["id"],)).rowcount
            conn.execute("UPDATE example_imports SET undone_at=? WHERE id=?", (utcnow(), op["id"]))
        return n

    def assign_splits(self) -> dict:
        """Give new examples their split (the policy lives in tuning/splits.py)."""
        from .splits import assign_splits

        return assign_splits(self)

    def update(
        self,
        example_id: int,
        *,
        messages=None,
        passages=...,
        label=...,
        tags=None,
        status=None,
        split=...,
        description: str = "edit",
    ) -> Example:
        """Change fields of one example (undoable). `...` means leave as is."""
        old = self.get(example_id)
        new = make_example(
            messages if messages is not None else old.messages,
            passages=old.passages if passages is ... else passages,
            label=old.label if label is ... else label,
            tags=old.tags if tags is None else tags,
            status=status or old.status,
            split=old.split if split is ... else split,
            source=old.source,
            provenance=old.provenance,
        )
        if messages is not None and [m["content"] for m in new.messages] != [m["content"] for m in old.messages]:
            new.provenance = {**new.provenance, "edited": True} if new.provenance else new.provenance
        new.id, new.created_at = old.id, old.created_at
        self.replace_many([new], description=description)
        return self.get(example_id)

    def replace_many(self, examples: Sequence[Example], description: str, batch: str | None = None) -> str:
        """Overwrite whole rows (same ids) in one undoable batch; returns the batch id."""
        batch = batch or new_batch_id()
        now = utcnow()
        sets = ", ".join(f"{c}=?" for c in _COLUMNS[1:])
        with self.db.transaction() as conn:
            for ex in examples:
                self._remember(conn, batch, description, ex.id)
                ex.content_hash = content_hash(ex.messages, ex.passages)
                conn.execute(f"UPDATE examples SET {sets} WHERE id=?", (*_row_values(ex, now), ex.id))
        return batch

    def delete(self, example_ids: Sequence[int], description: str = "delete", batch: str | None = None) -> str:
        """Delete examples (undoable); returns the undo batch id."""
        return self._each(example_ids, description, batch, "DELETE FROM examples WHERE id=?", lambda i: [i])

    def set_status(
        self, example_ids: Sequence[int], status: str, description: str = "", batch: str | None = None
    ) -> str:
        if status not in STATUSES:
            raise ValidationError(f"status must be one of {', '.join(STATUSES)}")
        return self._bulk(example_ids, "status=?", [status], description or f"mark {status}", batch)

    def bulk_tag(self, example_ids: Sequence[int], add: Sequence[str] = (), remove: Sequence[str] = ()) -> str:
        add, remove = _clean_tags(add), _clean_tags(remove)
        if not add and not remove:
            raise ValidationError("give a tag to add or remove")
        exs = [self.get(i) for i in example_ids]
        for ex in exs:
            ex.tags = [t for t in ex.tags if t not in remove] + [t for t in add if t not in ex.tags]
        return self.replace_many(exs, description=f"tag +{','.join(add)} -{','.join(remove)}")

    def _bulk(self, example_ids, set_sql: str, args: list, description: str, batch: str | None = None) -> str:
        return self._each(
            example_ids,
            description,
            batch,
            f"UPDATE examples SET {set_sql}, updated_at=? WHERE id=?",
            lambda i: [*args, utcnow(), i],
        )

    def _each(self, example_ids, description: str, batch: str | None, statement: str, args_for) -> str:
        """Run `statement` for each example in one transaction, remembering every row first so
        the whole change can be undone; returns the undo batch id."""
        ids = [int(i) for i in example_ids]
        if not ids:
            raise ValidationError("no examples selected")
        batch = batch or new_batch_id()
        with self.db.transaction() as conn:
            for i in ids:
                if not self._remember(conn, batch, description, i):
                    raise NotFoundError(f"example {i} does not exist")
                conn.execute(statement, args_for(i))
        return batch

    def _remember(self, conn: sqlite3.Connection, batch: str, description: str, example_id: int | None) -> bool:
        row = conn.execute("SELECT * FROM examples WHERE id=?", (example_id,)).fetchone()
        if row is None:
            return False
        conn.execute(
            "INSERT INTO example_undo(batch, description, example_id, before_json, created_at) VALUES (?,?,?,?,?)",
            (batch, description, example_id, json.dumps({k: row[k] for k in row.keys()}), utcnow()),
        )
        return True

    def undo_batches(self, limit: int = 20) -> list[dict]:
        """Recent changes that can be undone, newest first: edits (`kind` "edit") and imports
        (`kind` "import", with their `status`: done, or partial when it was interrupted)."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT batch, description, MIN(created_at) AS at, MAX(created_at) AS last, COUNT(*) AS n"
                " FROM example_undo WHERE undone_at IS NULL GROUP BY batch ORDER BY MAX(seq) DESC LIMIT ?",
                (limit,),
            ).fetchall()
        out = [
            {
                "batch": r["batch"],
                "description": r["description"],
                "at": r["at"],
                "examples": r["n"],
                "kind": "edit",
                "status": "done",
                "_last": r["last"],
            }
            for r in rows
        ]
        for op in self.imports(limit, undoable=True):
            out.append(
                {
                    "batch": op["batch"],
                    "description": import_description(op),
                    "at": op["started_at"],
                    "examples": op["examples"],
                    "kind": "import",
                    "status": op["status"],
                    "_last": op["updated_at"],
                }
            )
        out.sort(key=lambda b: b["_last"], reverse=True)
        for b in out:
            del b["_last"]
        return out[:limit]

    def undo(self, batch: str | None = None) -> int:
        """Put back the rows a change touched (the latest change if `batch` is None); for an
        import, delete the rows it added. Returns how many examples were restored (removed)."""
        if batch is None:
            recent = self.undo_batches(1)
            if not recent:
                raise ValidationError("there is nothing to undo")
            batch = recent[0]["batch"]
        with self.db.read() as conn:
            is_import = conn.execute("SELECT 1 FROM example_imports WHERE batch=?", (batch,)).fetchone()
        if is_import:
            return self.undo_import(batch)
        with self.db.transaction() as conn:
            rows = conn.execute(
                "SELECT * FROM example_undo WHERE batch=? AND undone_at IS NULL ORDER BY seq DESC", (batch,)
            ).fetchall()
            if not rows:
                raise NotFoundError(f"no change {batch!r} to undo")
            for r in rows:
                conn.execute("DELETE FROM examples WHERE id=?", (r["example_id"],))
                if r["before_json"] is None:  # the change created the row
                    continue
                before = json.loads(r["before_json"])
                if "dedup_hash" not in before:  # remembered before migration 2
                    before["dedup_hash"] = dedup_hash(
                        json.loads(before["messages_json"]),
                        json.loads(before["passages_json"]) if before.get("passages_json") else None,
                    )
                cols = list(before)
                conn.execute(
                    f"INSERT INTO examples({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    [before[c] for c in cols],
                )
            conn.execute("UPDATE example_undo SET undone_at=? WHERE batch=?", (utcnow(), batch))
        return len(rows)

    # ---- settings -----------------------------------------------------------------------
    def get_setting(self, key: str, default=None):
        with self.db.read() as conn:
            row = conn.execute("SELECT value FROM curation_settings WHERE key=?", (key,)).fetchone()
        return json.loads(row["value"]) if row else default

    def set_setting(self, key: str, value) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO curation_settings(key, value) VALUES (?,?) ON CONFLICT(key) DO UPDATE"
                " SET value=excluded.value",
                (key, json.dumps(value)),
            )

    # ---- from the chat ------------------------------------------------------------------
    def from_message(
        self,
        conversation_log: ConversationLog,
        message_id: int,
        edited_text: str | None = None,
        *,
        label: str | None = None,
        tags=None,
        save: bool = True,
    ) -> Example:
        """An example from an assistant message: the conversation up to that reply (system
        prompt, earlier turns, the user turn it answered), the reply or `edited_text` as the
        answer, the passages it was grounded in, and where it came from."""
        msg = conversation_log.message(int(message_id))
        if msg.role != "assistant":
            raise ValidationError(f"message {message_id} is a {msg.role} message; pick an assistant reply")
        conv = conversation_log.get(msg.conversation_id)
        before = [m for m in conv.messages if m.id < msg.id and m.role in ("user", "assistant")]
        if not before or before[-1].role != "user":
            raise ValidationError(f"message {message_id} does not answer a user message")
        answer = msg.content
        edited = False
        if edited_text is not None:
            edited_text = unicodedata.normalize("NFC", edited_text).strip()
            if not edited_text:
                raise ValidationError("the edited reply is empty")
            edited = edited_text != msg.content.strip()
            answer = edited_text
        if not answer.strip():
            raise ValidationError("the reply is empty; edit it into the answer you want before saving")
        messages = [{"role": "system", "content": conv.system_prompt}] if conv.system_prompt.strip() else []
        messages += [m.as_chat() for m in before] + [{"role": "assistant", "content": answer}]
        passages = None
        if msg.retrieval and not msg.retrieval.get("abstained"):
            passages = msg.retrieval.get("passages") or None
        provenance = {
            "conversation_id": conv.id,
            "message_id": msg.id,
            "message_time": msg.created_at,
            "edited": edited,
            "model": msg.model,
            "adapter": msg.adapter,
            "rating": msg.rating,
        }
        if edited:
            provenance["original_text"] = msg.content
        ex = make_example(messages, passages=passages, label=label, tags=tags, source="chat", provenance=provenance)
        return self.add(ex) if save else ex


def new_batch_id() -> str:
    """Names one undoable change; several calls may share it (a cleaning run's fixes)."""
    return f"{utcnow()}-{secrets.token_hex(3)}"


def with_messages(example: Example, messages: list[dict]) -> Example:
    return replace(example, messages=validate_messages(messages))
