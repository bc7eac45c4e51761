"""Imports as recorded operations (the `example_imports` table).

An import is one recorded operation: the row is written first (status "running"), every
batch of rows it inserts carries its id (`examples.import_id`), and it is marked "done" at
the end. The importing process holds a lock file while it runs; an import found "running"
whose lock is free (the process was killed) is shown as "partial". Undoing an import (done
or partial) deletes exactly the rows it added. Batches skip examples that are already in the
store: `dedup_hash` is the hash of the normalised messages and passages, so importing the
same file twice adds nothing the second time.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from assistant.db import Database, utcnow
from assistant.errors import NotFoundError, ValidationError

from .example import Example, dedup_hash
from .example_table import insert_examples

try:
    import fcntl
except ImportError:  # Windows: interrupted imports are recognised by their silence instead
    fcntl = None  # type: ignore[assignment]

STALE_IMPORT_S = 15 * 60  # where lock files cannot be checked: a running import silent this long was killed


@dataclass
class ImportOperation:
    """The handle an importing process holds while it runs (see ImportLog.begin)."""

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


class ImportLog:
    """The recorded imports of one database (see the module notes)."""

    def __init__(self, db: Database):
        self.db = db

    @property
    def lock_dir(self) -> Path:
        return self.db.path.parent / ".import-locks"

    def begin(self, path: Path | str, *, file_hash: str | None, source: str = "import") -> ImportOperation:
        """Record an import as running (and hold its lock file) before any row is written."""
        path = Path(path)
        token = secrets.token_hex(8)
        lock = _ImportLock(self.lock_dir / f"{token}.lock")
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
                assert op_id is not None  # set by the INSERT above
                conn.execute("UPDATE example_imports SET batch=? WHERE id=?", (f"import-{op_id}", op_id))
        except BaseException:
            lock.release()
            raise
        return ImportOperation(id=op_id, batch=f"import-{op_id}", file_name=path.name, file_hash=file_hash, lock=lock)

    def add_batch(self, op: ImportOperation, examples: Sequence[Example]) -> tuple[list[int], int]:
        """Insert, in one transaction tagged with `op`, the examples that are not already in
        the store (by `dedup_hash`, also within the batch). Returns (new ids, how many were
        already present)."""
        hashes = [dedup_hash(ex.messages, ex.passages, ex.rejected) for ex in examples]
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
            ids = insert_examples(conn, keep, now, import_id=op.id, hashes=keep_hashes)
            conn.execute(
                "UPDATE example_imports SET imported=imported+?, duplicates=duplicates+?, updated_at=?,"
                " status='running' WHERE id=?",
                (len(keep), len(examples) - len(keep), now, op.id),
            )
        return ids, len(examples) - len(keep)

    def finish(self, op: ImportOperation, *, bad: int = 0, error: str | None = None) -> str | None:
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
            return not _lock_held(self.lock_dir / f"{row['lock']}.lock")
        age = datetime.now(timezone.utc) - datetime.fromisoformat(row["updated_at"])
        return age.total_seconds() > STALE_IMPORT_S

    def recover(self) -> list[int]:
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
            (self.lock_dir / f"{r['lock']}.lock").unlink(missing_ok=True)
        return [r["id"] for r in dead]

    def recent(
        self, limit: int | None = 20, *, status: str | None = None, file_hash: str | None = None, undoable: bool = False
    ) -> list[dict]:
        """Recorded imports, newest first, with `examples`: how many of their rows are still
        in the store (what undoing the import removes)."""
        self.recover()
        clauses: list[str] = []
        args: list[object] = []
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

    def get(self, import_id_or_batch) -> dict:
        self.recover()
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

    def undo(self, import_id_or_batch) -> int:
        """Delete exactly the rows an import added (it may be done or partial, not running).
        Returns how many were removed."""
        op = self.get(import_id_or_batch)  # (an interrupted one is marked partial first)
        with self.db.transaction() as conn:
            row = conn.execute("SELECT status, undone_at FROM example_imports WHERE id=?", (op["id"],)).fetchone()
            if row["status"] == "running":
                raise ValidationError(f"import #{op['id']} of {op['file_name']} is still running; wait for it to end")
            if row["undone_at"]:
                raise ValidationError(f"import #{op['id']} of {op['file_name']} was already undone")
            n = conn.execute("DELETE FROM examples WHERE import_id=?", (op["id"],)).rowcount
            conn.execute("UPDATE example_imports SET undone_at=? WHERE id=?", (utcnow(), op["id"]))
        return n

    def is_import(self, batch: str) -> bool:
        """Whether the undo id `batch` names an import (rather than an edit)."""
        with self.db.read() as conn:
            return conn.execute("SELECT 1 FROM example_imports WHERE batch=?", (batch,)).fetchone() is not None
