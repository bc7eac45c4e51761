"""A damaged tailor.db: the CLI and the server stop with one clear line that says what is wrong,
where the file is and how to recover, and the damaged file is kept as it was (issue #12.6;
before, both ended in a sqlite3.DatabaseError traceback)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.db import Database, DatabaseCorrupt
from assistant.workspace import Workspace

REPO_ROOT = Path(__file__).resolve().parents[2]


def _garbage(root: Path) -> Path:
    root.mkdir(parents=True)
    db = root / "tailor.db"
    db.write_bytes(b"this is not a database at all\n" * 200)
    return db


def _damaged_page(root: Path) -> Path:
    """A real database whose middle pages were overwritten (what a bad disk or a copy that was
    cut short leaves): the header is fine, so only the integrity check notices."""
    ws = Workspace(root)
    with ws.db.transaction() as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.executemany("INSERT INTO notes(body) VALUES (?)", [("note %d " % i * 20,) for i in range(3000)])
        conn.execute("CREATE INDEX notes_body ON notes(body)")
    with sqlite3.connect(ws.db.path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(ws.db.path.read_bytes())
    page = 4096
    for n in range(5, 12):
        data[n * page + 8 : (n + 1) * page - 8] = b"\xa5" * (page - 16)
    ws.db.path.write_bytes(bytes(data))
    Database._checked.clear()  # a new process would check it again
    return ws.db.path


@pytest.mark.parametrize("damage", [_garbage, _damaged_page])
def test_opening_a_damaged_database_says_how_to_recover(tmp_path, damage):
    db = damage(tmp_path / "ws")
    before = db.read_bytes()
    with pytest.raises(DatabaseCorrupt) as info:
        Workspace(tmp_path / "ws")
    message = str(info.value)
    assert str(db) in message and "damaged" in message and "tailor import workspace" in message
    assert db.read_bytes() == before  # never overwritten
    kept = list(db.parent.glob("tailor.db.damaged-*"))
    assert [p.read_bytes() for p in kept if not p.name.endswith("-wal")] == [before]
    # trying again keeps the one copy, does not pile up more
    with pytest.raises(DatabaseCorrupt):
        Workspace(tmp_path / "ws")
    assert sorted(db.parent.glob("tailor.db.damaged-*")) == sorted(kept)


def _run(*args, cwd=REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("command", [["examples", "list"], ["adapters", "list"], ["serve", "--port", "0"]])
def test_cli_and_serve_print_one_line_and_exit_2(tmp_path, command):
    _garbage(tmp_path / "ws")
    result = _run(*command, "--workspace", str(tmp_path / "ws"))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("tailor: error:")]
    assert len(errors) == 1 and "is damaged" in errors[0] and "tailor import workspace" in errors[0]


def test_a_healthy_database_is_checked_once_per_process(tmp_path, monkeypatch):
    ws = Workspace(tmp_path / "ws")
    calls = []
    original = Database._check
    monkeypatch.setattr(Database, "_check", lambda self, conn: calls.append(1) or original(self, conn))
    Workspace(tmp_path / "ws")
    Workspace(tmp_path / "ws")
    assert ws.db.path.resolve() in Database._checked and len(calls) == 2  # called, but returns at once
