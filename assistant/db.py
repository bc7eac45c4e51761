"""SQLite access: one file in WAL mode, short-lived connections, numbered migrations.

Migrations are plain functions numbered in a list per *namespace* ("assistant", "tuning",
"retrieval", ...). Each package owns its tables and its own list, so the core never needs
to know about the others, and a database is upgraded in place by applying the functions
it has not seen yet (like simonw/llm's migrations, but one list per package)."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path

from .errors import TailorError

Migration = Callable[[sqlite3.Connection], None]


def utcnow() -> str:
    """ISO-8601 UTC timestamp with microseconds (sorts as text; milliseconds tied on fast
    machines, which made "most recent first" orderings arbitrary)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def like_escape(text: str) -> str:
    """`text` for a LIKE pattern with ESCAPE '\\': its % and _ match themselves, not anything."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


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


class DatabaseCorrupt(TailorError):
    """The workspace's SQLite file is damaged: it was left as it is, and a copy kept aside."""


class Database:
    """A SQLite file. Connections are opened per unit of work: Gradio and the HTTP API call
    services from many threads, and a per-call connection is both thread-safe and cheap.

    Opening checks the file once per process (SQLite's `quick_check`: every page and record
    read, without the slower index cross-check of `integrity_check`), so a damaged database
    stops the CLI or the server at start with `DatabaseCorrupt` and its way out, instead of a
    traceback halfway through some later request."""

    _checked: set[Path] = set()  # resolved paths already checked in this process
    _checked_lock = threading.Lock()

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._migrated: set[str] = set()
        self._lock = threading.Lock()
        try:
            with closing(self.connect()) as conn:
                self._check(conn)
                # WAL lets the app read while a training job (another process) writes progress.
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS migrations ("
                    " namespace TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL,"
                    " applied_at TEXT NOT NULL, PRIMARY KEY (namespace, version))"
                )
        except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed", ...
            if isinstance(exc, sqlite3.OperationalError) and not _looks_corrupt(exc):
                raise  # locked, read-only, disk full: not damage (handled where they happen)
            raise self._corrupt(str(exc)) from None

    def _check(self, conn: sqlite3.Connection) -> None:
        key = self.path.resolve()
        with self._checked_lock:
            if key in self._checked or not self.path.exists() or self.path.stat().st_size == 0:
                return
        rows = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
        if rows != ["ok"]:
            raise self._corrupt("; ".join(str(r) for r in rows))
        with self._checked_lock:
            self._checked.add(key)

    def _corrupt(self, detail: str) -> DatabaseCorrupt:
        """Keep a copy of the damaged file (and its WAL) beside it, never touching the original:
        whatever a recovery tool can still read from it stays readable."""
        kept = None
        try:
            stamp = datetime.fromtimestamp(self.path.stat().st_mtime, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            kept = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
            for suffix in ("", "-wal"):
                src = self.path.with_name(self.path.name + suffix)
                dst = kept.with_name(kept.name + suffix)
                if src.exists() and not dst.exists():
                    shutil.copy2(src, dst)
        except OSError:
            kept = None
        where = f" A copy of it was kept at {kept}." if kept else ""
        return DatabaseCorrupt(
            f"the workspace database {self.path} is damaged ({detail[:200]}); Tailor left it unchanged.{where} "
            f"To recover, restore a backup into a new folder (tailor import workspace BACKUP.zip --workspace "
            f"NEW_FOLDER), or move {self.path.name} out of {self.path.parent} to start this workspace with an empty "
            "database (adapter, document and job folders stay on disk)."
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
                row["version"] for row in conn.execute("SELECT version FROM migrations WHERE namespace=?", (namespace,))
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


def _looks_corrupt(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return any(w in text for w in ("malformed", "not a database", "corrupt", "encrypted"))
