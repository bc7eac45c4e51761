"""The undo log (the `example_undo` table): every change a user may regret (edit, delete,
bulk tag, a cleaning fix) records the rows' previous state under one batch id, and
`undo(batch)` puts them back. Imports are undone by their own record (tuning/import_log.py).
"""

from __future__ import annotations

import json
import secrets
import sqlite3

from assistant.db import Database, utcnow
from assistant.errors import NotFoundError

from .example import dedup_hash


def new_batch_id() -> str:
    """Names one undoable change; several calls may share it (a cleaning run's fixes)."""
    return f"{utcnow()}-{secrets.token_hex(3)}"


class UndoLog:
    def __init__(self, db: Database):
        self.db = db

    def remember(self, conn: sqlite3.Connection, batch: str, description: str, example_id: int | None) -> bool:
        """Record example `example_id`'s row as it is now, under `batch`, in the caller's
        transaction (before it changes it). False when there is no such example."""
        row = conn.execute("SELECT * FROM examples WHERE id=?", (example_id,)).fetchone()
        if row is None:
            return False
        conn.execute(
            "INSERT INTO example_undo(batch, description, example_id, before_json, created_at) VALUES (?,?,?,?,?)",
            (batch, description, example_id, json.dumps({k: row[k] for k in row.keys()}), utcnow()),
        )
        return True

    def batches(self, limit: int = 20) -> list[dict]:
        """Edit batches not undone yet, newest first; `last` is the time of their latest change."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT batch, description, MIN(created_at) AS at, MAX(created_at) AS last, COUNT(*) AS n"
                " FROM example_undo WHERE undone_at IS NULL GROUP BY batch ORDER BY MAX(seq) DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            {
                "batch": r["batch"],
                "description": r["description"],
                "at": r["at"],
                "examples": r["n"],
                "kind": "edit",
                "status": "done",
                "last": r["last"],
            }
            for r in rows
        ]

    def undo(self, batch: str) -> int:
        """Put back the rows the edit batch touched; returns how many."""
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
                        before.get("rejected_text"),
                    )
                cols = list(before)
                conn.execute(
                    f"INSERT INTO examples({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    [before[c] for c in cols],
                )
            conn.execute("UPDATE example_undo SET undone_at=? WHERE batch=?", (utcnow(), batch))
        return len(rows)
