"""SQLite access: one file in WAL mode, short-lived connections, numbered migrations.

Migrations are plain functions numbered in a list per *namespace* ("assistant", "tuning",
"retrieval", ...). Each package owns its tables and its own list, so the core never needs
to know about the others, and a database is upgraded in place by applying the functions
it has not seen yet (like simonw/llm's migrations, but one list per package)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

Migration = Callable[[sqlite3.Connection], None]


def utcnow() -> str:
    """ISO-8601 UTC timestamp with microseconds (sorts as text; milliseconds tied on fast
    machines, which made "most recent first" orderings arbitrary)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def execute_script(conn: sqlite3.Connection, script: str) -> None:
    """Run several ;-separated statements inside the current transaction.
    (sqlite3's executescript() would COMMIT first and break a migration's atomicity.)"""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            if statement.strip():
                conn.execute(statement)
            statement = ""
    if statement.strip():
        raise sqlite3.OperationalError(f"incomplete SQL statement: {statement.strip()[:80]}")


class Database:
    """A SQLite file. Connections are opened per unit of work: Gradio and the HTTP API call
    services from many threads, and a per-call connection is both thread-safe and cheap."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._migrated: set[str] = set()
        self._lock = threading.Lock()
        with self.connect() as conn:
            # WAL lets the app read while a training job (another process) writes progress.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS migrations ("
                " namespace TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL,"
                " applied_at TEXT NOT NULL, PRIMARY KEY (namespace, version))"
            )

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        conn = self.connect()
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error: all or nothing."""
        conn = self.connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    def migrate(self, namespace: str, migrations: Sequence[Migration]) -> list[str]:
        """Apply the migrations of `namespace` that this database has not seen, in order.
        Returns the names applied. Safe to call from several processes at once."""
        if namespace in self._migrated:
            return []
        applied: list[str] = []
        with self._lock, self.transaction() as conn:
            done = {
                row["version"]
                for row in conn.execute("SELECT version FROM migrations WHERE namespace=?", (namespace,))
            }
            for version, fn in enumerate(migrations, start=1):
                if version in done:
                    continue
                fn(conn)
                conn.execute(
                    "INSERT INTO migrations(namespace, version, name, applied_at) VALUES (?,?,?,?)",
                    (namespace, version, fn.__name__, utcnow()),
                )
                applied.append(fn.__name__)
        self._migrated.add(namespace)
        return applied

    def applied_migrations(self, namespace: str) -> list[str]:
        with self.read() as conn:
            rows = conn.execute(
                "SELECT name FROM migrations WHERE namespace=? ORDER BY version", (namespace,)
            ).fetchall()
        return [r["name"] for r in rows]
