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
from datetime import datetime, timedelta, timezone

from .accounts import NO_ACCOUNTS, Accounts, Viewer
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


def _m002_trash_and_imports(conn: sqlite3.Connection) -> None:
    # deleted_at: a deleted conversation goes to the trash first, so the chat's Delete can be
    # undone; it is purged (with its messages) a day later. external_id: where an imported
    # conversation came from ("chatgpt:<id>", "openwebui:<id>"), so importing the same export
    # twice adds nothing the second time. superseded_by: a reply that Regenerate replaced; it
    # stays (with its rating: a 👎 on it and a 👍 on the new one make a preference pair) but is
    # no longer part of the conversation the model and the chat see. edited_content: the reply
    # as the user corrected it in place; `content` keeps what the model said (the rejected side
    # of the preference pair the edit makes), the conversation goes on from the edit.
    execute_script(
        conn,
        """
        ALTER TABLE messages ADD COLUMN superseded_by INTEGER;
        ALTER TABLE messages ADD COLUMN edited_content TEXT;
        ALTER TABLE conversations ADD COLUMN deleted_at TEXT;
        ALTER TABLE conversations ADD COLUMN external_id TEXT;
        CREATE UNIQUE INDEX conversations_external ON conversations(external_id) WHERE external_id IS NOT NULL;
        """,
    )


def _m003_owners(conn: sqlite3.Connection) -> None:
    # owner: the user who started the conversation when accounts are on (assistant/accounts.py);
    # NULL for conversations from before, or with no accounts.
    execute_script(
        conn,
        """
        ALTER TABLE conversations ADD COLUMN owner TEXT;
        CREATE INDEX conversations_owner ON conversations(owner, updated_at);
        """,
    )


MIGRATIONS = [_m001_conversations, _m002_trash_and_imports, _m003_owners]

# How long a deleted conversation can still be restored.
TRASH_SECONDS = 24 * 3600


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
    superseded_by: int | None = None
    edited_content: str | None = None  # the user's in-place correction of a reply

    @property
    def shown(self) -> str:
        """The text the conversation goes on from: the user's correction, else what was said."""
        return self.edited_content if self.edited_content is not None else self.content

    def as_chat(self) -> dict:
        return {"role": self.role, "content": self.shown}


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
    deleted_at: str | None = None
    external_id: str | None = None
    owner: str | None = None  # the user who started it, when accounts are on
    readable: bool = True  # False: an admin sees it only to delete or restore it (no title, no messages)


@dataclass
class ImportedMessage:
    """A message from another chat app's export (assistant/chat_import.py), with its own time
    (ISO-8601 UTC, like utcnow) and, for a reply, the model that wrote it there ("gpt-4o")."""

    role: str  # "user" or "assistant"
    content: str
    created_at: str
    model: str | None = None


@dataclass
class ImportedConversation:
    """A conversation from another chat app's export; `external_id` ("chatgpt:<id>") is where it
    came from, so the same export imported twice adds it once."""

    external_id: str
    title: str
    created_at: str
    updated_at: str
    messages: list[ImportedMessage] = field(default_factory=list)
    model: str | None = None
    system_prompt: str = ""


# A conversation's messages as the chat shows them: replies replaced by Regenerate not counted.
_COUNT = "(SELECT COUNT(*) FROM messages m WHERE m.conversation_id=c.id AND m.superseded_by IS NULL)"


def new_conversation_id() -> str:
    """Time-ordered, unguessable: 12 hex digits of milliseconds then 8 random hex digits."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(4)}"


def _title_from(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 60 else line[:57].rstrip() + "..."


class ConversationLog:
    """The log, as seen by whoever asks: with accounts on, every method acts for the current
    request's user (assistant/accounts.py), and another user's conversation or message "does
    not exist" (the same error as an unknown id, so nothing leaks)."""

    def __init__(self, db: Database, accounts: Accounts = NO_ACCOUNTS):
        self.db = db
        self.accounts = accounts
        db.migrate("assistant", MIGRATIONS)
        self.purge_trash()

    def _viewer(self) -> Viewer:
        return self.accounts.viewer()

    def _owner_of(self, conn: sqlite3.Connection, conversation_id: str, *, deleted: bool = False) -> str | None:
        """The conversation's owner, after checking the current user may read it (NotFound
        otherwise, as for an unknown id). `deleted`: a conversation in the trash counts too."""
        row = conn.execute("SELECT owner, deleted_at FROM conversations WHERE id=?", (conversation_id,)).fetchone()
        if row is None or (row["deleted_at"] is not None and not deleted) or not self._viewer().may_read(row["owner"]):
            raise NotFoundError(f"conversation {conversation_id!r} does not exist")
        return row["owner"]

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
                "INSERT INTO conversations(id, title, system_prompt, model, adapter, rag, created_at, updated_at,"
                " owner) VALUES (?,?,?,?,?,?,?,?,?)",
                (cid, title, system_prompt, model, adapter, int(rag), now, now, self.accounts.owner_for_new()),
            )
        return self.get(cid, with_messages=False)

    def get(
        self, conversation_id: str, with_messages: bool = True, *, deleted: bool = False, to_delete: bool = False
    ) -> Conversation:
        """One conversation; a deleted one (in the trash) only with `deleted=True`.
        `to_delete`: fetched to be deleted or restored, which admins may do to anyone's."""
        viewer = self._viewer()
        with self.db.read() as conn:
            row = conn.execute(
                f"SELECT c.*, {_COUNT} AS n FROM conversations c WHERE id=?",
                (conversation_id,),
            ).fetchone()
            allowed = row is not None and (viewer.may_delete if to_delete else viewer.may_read)(row["owner"])
            if row is None or (row["deleted_at"] is not None and not deleted) or not allowed:
                raise NotFoundError(f"conversation {conversation_id!r} does not exist")
            conv = _conversation(row)
            if not viewer.may_read(row["owner"]):
                # An admin deleting or restoring another user's conversation: its title is the
                # first message's words, so it is not shown either.
                conv.title = f"a conversation of {row['owner'] or 'no user'}"
                conv.readable = False
                return conv
            if with_messages:
                conv.messages = [
                    _message(r)
                    for r in conn.execute(
                        "SELECT m.*, f.rating FROM messages m LEFT JOIN feedback f ON f.message_id=m.id"
                        " WHERE conversation_id=? AND m.superseded_by IS NULL ORDER BY m.id",
                        (conversation_id,),
                    )
                ]
        return conv

    def list(self, limit: int = 100, offset: int = 0, query: str = "") -> list[Conversation]:
        sql = f"SELECT c.*, {_COUNT} AS n FROM conversations c WHERE c.deleted_at IS NULL"
        args: list = []
        viewer = self._viewer()
        if viewer.restricted:  # one's own; admins also those from before accounts (no owner)
            sql += " AND (c.owner = ?" + (" OR c.owner IS NULL)" if viewer.admin else ")")
            args.append(viewer.user)
        if query:
            # % and _ in the query are searched for, not wildcards.
            sql += (
                " AND (c.title LIKE ? ESCAPE '\\' OR EXISTS (SELECT 1 FROM messages m"
                " WHERE m.conversation_id=c.id AND m.content LIKE ? ESCAPE '\\'))"
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
            self._owner_of(conn, conversation_id, deleted=True)  # as before: the trash too
            cur = conn.execute(
                f"UPDATE conversations SET {sets}, updated_at=? WHERE id=?",
                [*fields.values(), utcnow(), conversation_id],
            )
            if cur.rowcount == 0:
                raise NotFoundError(f"conversation {conversation_id!r} does not exist")

    def rename(self, conversation_id: str, title: str) -> Conversation:
        """Give a conversation its own title (an empty one is refused: the list needs a name)."""
        title = " ".join((title or "").split())
        if not title:
            raise ValidationError("a conversation needs a title: type one, or keep the old one")
        if len(title) > 200:
            raise ValidationError(f"a title is at most 200 characters (this one has {len(title)})")
        self.get(conversation_id, with_messages=False)  # NotFound for a deleted or unknown one
        self.update(conversation_id, title=title)
        return self.get(conversation_id, with_messages=False)

    def delete(self, conversation_id: str) -> Conversation:
        """Move a conversation to the trash: gone from the list and from `get`, restorable with
        `restore` for TRASH_SECONDS, then purged. Examples saved from it keep their text."""
        conv = self.get(conversation_id, with_messages=False, to_delete=True)
        with self.db.transaction() as conn:
            conn.execute("UPDATE conversations SET deleted_at=? WHERE id=?", (utcnow(), conversation_id))
        return conv

    def restore(self, conversation_id: str) -> Conversation:
        """Take a deleted conversation back out of the trash (Undo)."""
        conv = self.get(conversation_id, with_messages=False, deleted=True, to_delete=True)
        if conv.deleted_at is None:
            return conv
        with self.db.transaction() as conn:
            conn.execute("UPDATE conversations SET deleted_at=NULL WHERE id=?", (conversation_id,))
        return self.get(conversation_id, with_messages=False, to_delete=True)

    def purge(self, conversation_id: str) -> None:
        """Delete a conversation and its messages for good (no undo)."""
        self.get(conversation_id, with_messages=False, deleted=True, to_delete=True)
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM conversations WHERE id=?", (conversation_id,))

    def purge_trash(self, older_than_s: float = TRASH_SECONDS) -> int:
        """Purge conversations deleted more than `older_than_s` seconds ago; returns how many."""
        cutoff = (datetime.now(timezone.utc) - timedelta(seconds=older_than_s)).isoformat(timespec="microseconds")
        with self.db.transaction() as conn:
            cur = conn.execute("DELETE FROM conversations WHERE deleted_at IS NOT NULL AND deleted_at < ?", (cutoff,))
        return cur.rowcount

    def add_history(self, conversation_id: str, messages: Sequence[dict], *, source: str = "chat") -> int:
        """Log earlier turns that came with a request (`{"role", "content"}` each) in one
        transaction: a /v1 client re-sends its whole history, and one transaction per message
        made a 999-turn request hold the engine's queue slot for seconds. Returns how many."""
        if not messages:
            return 0
        now = utcnow()
        with self.db.transaction() as conn:
            self._owner_of(conn, conversation_id, deleted=True)  # as before: the trash too
            conv = conn.execute("SELECT title FROM conversations WHERE id=?", (conversation_id,)).fetchone()
            conn.executemany(
                "INSERT INTO messages(conversation_id, role, content, created_at, source) VALUES (?,?,?,?,?)",
                [(conversation_id, m["role"], m["content"], now, source) for m in messages],
            )
            first_user = next((m["content"] for m in messages if m["role"] == "user"), "")
            title = conv["title"] or _title_from(first_user)
            conn.execute("UPDATE conversations SET updated_at=?, title=? WHERE id=?", (now, title, conversation_id))
        return len(messages)

    def add_imported(self, conversations: Sequence[ImportedConversation], *, source: str) -> builtins.list[str | None]:
        """Store conversations from an export with their own dates and models, all in one
        transaction (an error leaves none of them). One whose external_id is already in the log
        (in the trash too), or earlier in `conversations`, is left out. Returns the new ids, in
        order, None for each left out. `source` marks the messages ("import:chatgpt")."""
        ids: builtins.list[str | None] = []
        owner = self.accounts.owner_for_new()
        with self.db.transaction() as conn:
            for conv in conversations:
                if conn.execute("SELECT 1 FROM conversations WHERE external_id=?", (conv.external_id,)).fetchone():
                    ids.append(None)
                    continue
                cid = new_conversation_id()
                first_user = next((m.content for m in conv.messages if m.role == "user"), "")
                conn.execute(
                    "INSERT INTO conversations(id, title, system_prompt, model, created_at, updated_at,"
                    " external_id, owner) VALUES (?,?,?,?,?,?,?,?)",
                    (
                        cid,
                        conv.title or _title_from(first_user),
                        conv.system_prompt,
                        conv.model,
                        conv.created_at,
                        conv.updated_at,
                        conv.external_id,
                        owner,
                    ),
                )
                conn.executemany(
                    "INSERT INTO messages(conversation_id, role, content, created_at, model, source)"
                    " VALUES (?,?,?,?,?,?)",
                    [(cid, m.role, m.content, m.created_at, m.model, source) for m in conv.messages],
                )
                ids.append(cid)
        return ids

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
            self._owner_of(conn, conversation_id, deleted=True)  # as before: the trash too
            conv = conn.execute("SELECT title FROM conversations WHERE id=?", (conversation_id,)).fetchone()
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
        """One message, of a conversation the current user may read (NotFound otherwise)."""
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT m.*, f.rating, c.owner AS conversation_owner FROM messages m"
                " LEFT JOIN feedback f ON f.message_id=m.id JOIN conversations c ON c.id=m.conversation_id"
                " WHERE m.id=?",
                (message_id,),
            ).fetchone()
        if row is None or not self._viewer().may_read(row["conversation_owner"]):
            raise NotFoundError(f"message {message_id} does not exist")
        return _message(row)

    def edit_reply(self, message_id: int, text: str) -> StoredMessage:
        """Correct a reply in place: the conversation goes on from `text`, and `content` keeps
        what the model said. Editing back to the original clears the correction."""
        msg = self.message(message_id)
        if msg.role != "assistant":
            raise ValidationError("only assistant replies can be edited; your own messages stay as you sent them")
        text = (text or "").strip()
        if not text:
            raise ValidationError("the edited reply is empty: type the answer it should have given")
        edited = None if text == msg.content.strip() else text
        with self.db.transaction() as conn:
            conn.execute("UPDATE messages SET edited_content=? WHERE id=?", (edited, message_id))
            conn.execute("UPDATE conversations SET updated_at=? WHERE id=?", (utcnow(), msg.conversation_id))
        return self.message(message_id)

    def supersede(self, message_id: int, by: int) -> None:
        """Regenerate: reply `message_id` was replaced by reply `by` (kept, out of the thread)."""
        self.message(message_id)
        self.message(by)
        with self.db.transaction() as conn:
            conn.execute("UPDATE messages SET superseded_by=? WHERE id=?", (by, message_id))

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
        deleted_at=row["deleted_at"],
        external_id=row["external_id"],
        owner=row["owner"],
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
        superseded_by=row["superseded_by"],
        edited_content=row["edited_content"],
    )
