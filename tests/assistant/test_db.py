import sqlite3
import threading

import pytest

from assistant.db import Database, execute_script


def test_wal_and_migrations_apply_once(tmp_path):
    db = Database(tmp_path / "t.db")
    calls = []

    def m001_items(conn):
        calls.append(1)
        execute_script(
            conn, "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT);\nCREATE INDEX items_name ON items(name);"
        )

    def m002_add_col(conn):
        calls.append(2)
        conn.execute("ALTER TABLE items ADD COLUMN size INTEGER")

    assert db.migrate("demo", [m001_items]) == ["m001_items"]
    # A new process (new Database object) sees migration 1 as applied and runs only 2.
    db2 = Database(tmp_path / "t.db")
    assert db2.migrate("demo", [m001_items, m002_add_col]) == ["m002_add_col"]
    assert calls == [1, 2]
    assert db2.applied_migrations("demo") == ["m001_items", "m002_add_col"]
    with db2.read() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        cols = [r[1] for r in conn.execute("PRAGMA table_info(items)")]
    assert cols == ["id", "name", "size"]


def test_failed_migration_rolls_back_entirely(tmp_path):
    db = Database(tmp_path / "t.db")

    def m001_broken(conn):
        conn.execute("CREATE TABLE half(id INTEGER)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        db.migrate("x", [m001_broken])
    with db.read() as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "half" not in tables
    assert db.applied_migrations("x") == []


def test_transaction_rolls_back_on_error(tmp_path):
    db = Database(tmp_path / "t.db")
    with db.transaction() as conn:
        conn.execute("CREATE TABLE t(v INTEGER)")
    with pytest.raises(ValueError):
        with db.transaction() as conn:
            conn.execute("INSERT INTO t VALUES (1)")
            raise ValueError
    with db.read() as conn:
        assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0


def test_concurrent_writers_from_threads(tmp_path):
    db = Database(tmp_path / "t.db")
    with db.transaction() as conn:
        conn.execute("CREATE TABLE t(v INTEGER)")

    def write(n):
        for i in range(25):
            with db.transaction() as conn:
                conn.execute("INSERT INTO t VALUES (?)", (n * 100 + i,))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with db.read() as conn:
        assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 100


def test_execute_script_rejects_incomplete_sql(tmp_path):
    conn = sqlite3.connect(tmp_path / "x.db")
    with pytest.raises(sqlite3.OperationalError):
        execute_script(conn, "CREATE TABLE a(id INTEGER);\nCREATE TABLE b(id")
