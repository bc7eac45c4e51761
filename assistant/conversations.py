"""The conversation log: every user and assistant message, with the settings and figures
that produced it, in SQLite. Conversations survive restarts and can be continued."""

from __future__ import annotations

import builtins
import json
import secrets
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from .db import Database, execute_script, like_escape, utcnow
from .errors import NotFoundError, ValidationError


def _m001_conversations(conn: sqlite3.Connection) -> None:
    execute_script(
        conn,
        """
        CREATE TABLE conversations (
            id TEXT PRIMARY KEY,
            title TEXT NOT NULL DEFAULT '',
            system_prompt TEXT NOT NULL DEFAULT '',
            model TEXT,
            adapter TEXT,
            rag INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
            content TEXT NOT NULL,
            created_at TEXT NOT NULL,
            model TEXT,
            adapter TEXT,
            settings_json TEXT,
            latency_ms REAL,
            ttft_ms REAL,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            finish_reason TEXT,
            retrieval_json TEXT,
            source TEXT NOT NULL DEFAULT 'chat'
        );
        CREATE INDEX messages_conversation ON messages(conversation_id, id);
        CREATE INDEX conversations_updated ON conversations(updated_at);
        CREATE TABLE feedback (
            message_id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
            rating INTEGER NOT NULL CHECK (rating IN (-1, 1)),
            reason TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL
        );
        """,
    )


MIGRATIONS = [_m001_conversations]


@dataclass
class StoredMessage:
    id: int
    conversation_id: str
    role: str
    content: str
    created_at: str
    model: str | None = None
    adapter: str | None = None
    settings: dict | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    retrieval: dict | None = None
    source: str = "chat"
    rating: int | None = None

    def as_chat(self) -> dict:
        return {"role": self.role, "content": self.content}


@dataclass
class Conversation:
    id: str
    title: str
    system_prompt: str
    model: str | None
    adapter: str | None
    rag: bool
    created_at: str
    updated_at: str
    message_count: int = 0
    messages: list[StoredMessage] = field(default_factory=list)


def new_conversation_id() -> str:
    """Time-ordered, unguessable: 12 hex digits of milliseconds then 8 random hex digits."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(4)}"


def _title_from(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 60 else line[:57].rstrip() + "..."


class ConversationLog:
    def __init__(self, db: Database):
        self.db = db
        db.migrate("assistant", MIGRATIONS)

    def create(
        self,
        *,
        system_prompt: str = "",
        model: str | None = None,
        adapter: str | None = None,
        rag: bool = False,
        title: str = "",
    ) -> Conversation:
        now = utcnow()
        cid = new_conversation_id()
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO conversations(id, title, system_prompt, model, adapter, rag, created_at, updated_at)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (cid, title, system_prompt, model, adapter, int(rag), now, now),
            )
        return self.get(cid, with_messages=False)

    def get(self, conversation_id: str, with_messages: bool = True) -> Conversation:
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT c.*, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id=c.id) AS n"
                " FROM conversations c WHERE id=?",
                (conversation_id,),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"conversation {conversation_id!r} does not exist")
            conv = _conversation(row)
            if with_messages:
                conv.messages = [
                    _message(r)
                    for r in conn.execute(
                        "SELECT m.*, f.rating FROM messages m LEFT JOIN feedback f ON f.message_id=m.id"
                        " WHERE conversation_id=? ORDER BY m.id",
                        (conversation_id,),
                    )
                ]
        return conv

    def list(self, limit: int = 100, offset: int = 0, query: str = "") -> list[Conversation]:
        sql = "SELECT c.*, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id=c.id) AS n FROM conversations c"
        args: list = []
        if query:
            # % and _ in the query are searched for, not wildcards.
            sql += (
                " WHERE c.title LIKE ? ESCAPE '\\' OR EXISTS (SELECT 1 FROM messages m"
                " WHERE m.conversation_id=c.id AND m.content LIKE ? ESCAPE '\\')"
            )
            pattern = "%" + like_escape(query) + "%"
            args += [pattern, pattern]
        sql += " ORDER BY c.updated_at DESC, c.id DESC LIMIT ? OFFSET ?"
        args += [limit, offset]
        with self.db.read() as conn:
            return [_conversation(r) for r in conn.execute(sql, args)]

    def update(self, conversation_id: str, **fields) -> None:
        allowed = {"title", "system_prompt", "model", "adapter", "rag"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValidationError(f"cannot update {sorted(unknown)}")
        if not fields:
            return
        sets = ", ".join(f"{k}=?" for k in fields)
        with self.db.transaction() as conn:
            cur = conn.execute(
                f"UPDATE conversations SET {sets}, updated_at=? WHERE id=?",
                [*fields.values(), utcnow(), conversation_id],
            )
            if cur.rowcount == 0:
                raise NotFoundError(f"conversation {conversation_id!r} does not exist")

    def delete(self, conversation_id: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM conversations WHERE id=?", (conversation_id,))

    def add_history(self, conversation_id: str, messages: Sequence[dict], *, source: str = "chat") -> int:
        """Log earlier turns that came with a request (`{"role", "content"}` each) in one
        transaction: a /v1 client re-sends its whole history, and one transaction per message
        made a 999-turn request hold the engine's queue slot for seconds. Returns how many."""
        if not messages:
            return 0
        now = utcnow()
        with self.db.transaction() as conn:
            conv = conn.execute("SELECT title FROM conversations WHERE id=?", (conversation_id,)).fetchone()
            if conv is None:
                raise NotFoundError(f"conversation {conversation_id!r} does not exist")
            conn.executemany(
                "INSERT INTO messages(conversation_id, role, content, created_at, source) VALUES (?,?,?,?,?)",
                [(conversation_id, m["role"], m["content"], now, source) for m in messages],
            )
            first_user = next((m["content"] for m in messages if m["role"] == "user"), "")
            title = conv["title"] or _title_from(first_user)
            conn.execute("UPDATE conversations SET updated_at=?, title=? WHERE id=?", (now, title, conversation_id))
        return len(messages)

    def add_message(
        self,
        conversation_id: str,
        role: str,
        content: str,
        *,
        model: str | None = None,
        adapter: str | None = None,
        settings: dict | None = None,
        latency_ms: float | None = None,
        ttft_ms: float | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        finish_reason: str | None = None,
        retrieval: dict | None = None,
        source: str = "chat",
    ) -> StoredMessage:
        now = utcnow()
        with self.db.transaction() as conn:
            conv = conn.execute("SELECT title FROM conversations WHERE id=?", (conversation_id,)).fetchone()
            if conv is None:
                raise NotFoundError(f"conversation {conversation_id!r} does not exist")
            cur = conn.execute(
                "INSERT INTO messages(conversation_id, role, content, created_at, model, adapter, settings_json,"
                " latency_ms, ttft_ms, prompt_tokens, completion_tokens, finish_reason, retrieval_json, source)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    conversation_id,
                    role,
                    content,
                    now,
                    model,
                    adapter,
                    json.dumps(settings) if settings is not None else None,
                    latency_ms,
                    ttft_ms,
                    prompt_tokens,
                    completion_tokens,
                    finish_reason,
                    json.dumps(retrieval) if retrieval is not None else None,
                    source,
                ),
            )
            title = conv["title"] or (_title_from(content) if role == "user" else "")
            conn.execute("UPDATE conversations SET updated_at=?, title=? WHERE id=?", (now, title, conversation_id))
            message_id = cur.lastrowid
        assert message_id is not None  # an INSERT always sets it
        return self.message(message_id)

    def message(self, message_id: int) -> StoredMessage:
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT m.*, f.rating FROM messages m LEFT JOIN feedback f ON f.message_id=m.id WHERE m.id=?",
                (message_id,),
            ).fetchone()
        if row is None:
            raise NotFoundError(f"message {message_id} does not exist")
        return _message(row)

    def rated_replies_to(self, user_text: str) -> builtins.list[StoredMessage]:
        """Rated assistant replies whose user turn (the last user message before them) is
        `user_text`, oldest first: the candidates for a preference pair from ratings."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT m.*, f.rating FROM messages m JOIN feedback f ON f.message_id=m.id"
                " WHERE m.role='assistant' AND (SELECT u.content FROM messages u WHERE"
                " u.conversation_id=m.conversation_id AND u.id<m.id AND u.role='user' ORDER BY u.id DESC LIMIT 1)=?"
                " ORDER BY m.id",
                (user_text,),
            ).fetchall()
        return [_message(r) for r in rows]

    def set_feedback(self, message_id: int, rating: int | None, reason: str = "") -> None:
        """Thumbs up (1), down (-1), or clear (None) on an assistant message."""
        msg = self.message(message_id)
        if msg.role != "assistant":
            raise ValidationError("feedback applies to assistant messages only")
        with self.db.transaction() as conn:
            if rating is None:
                conn.execute("DELETE FROM feedback WHERE message_id=?", (message_id,))
            elif rating in (1, -1):
                conn.execute(
                    "INSERT INTO feedback(message_id, rating, reason, created_at) VALUES (?,?,?,?)"
                    " ON CONFLICT(message_id) DO UPDATE SET rating=excluded.rating, reason=excluded.reason,"
                    " created_at=excluded.created_at",
                    (message_id, rating, reason, utcnow()),
                )
            else:
                raise ValidationError("rating must be 1 (thumbs up), -1 (thumbs down) or None")


def _conversation(row: sqlite3.Row) -> Conversation:
    return Conversation(
        id=row["id"],
        title=row["title"],
        system_prompt=row["system_prompt"],
        model=row["model"],
        adapter=row["adapter"],
        rag=bool(row["rag"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        message_count=row["n"],
    )


def _message(row: sqlite3.Row) -> StoredMessage:
    return StoredMessage(
        id=row["id"],
        conversation_id=row["conversation_id"],
        role=row["role"],
        content=row["content"],
        created_at=row["created_at"],
        model=row["model"],
        adapter=row["adapter"],
        settings=json.loads(row["settings_json"]) if row["settings_json"] else None,
        latency_ms=row["latency_ms"],
        ttft_ms=row["ttft_ms"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        finish_reason=row["finish_reason"],
        retrieval=json.loads(row["retrieval_json"]) if row["retrieval_json"] else None,
        source=row["source"],
        rating=row["rating"],
    )
