"""Fault test: `tailor examples import` of a 50,000-line file killed with SIGKILL part-way.

The rows that landed are one import operation, shown afterwards as PARTIAL with an undo
that removes exactly them; importing the same file again ends with exactly 50,000
distinct examples and says that an interrupted import was completed."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from ..conftest import wait_until

REPO = Path(__file__).resolve().parents[2]
LINES = 50_000


def _tailor(ws: Path, *args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "examples", *map(str, args), "--workspace", str(ws)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        **kw,
    )


def _query(ws: Path, sql: str) -> list[tuple]:
    """Read the database from outside, as another process would (read-only, no migrations)."""
    db = ws / "tailor.db"
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        conn.close()


def _count(ws: Path) -> int:
    rows = _query(ws, "SELECT COUNT(*) FROM examples")
    return rows[0][0] if rows else 0


def _import_and_kill(ws: Path, f: Path) -> int:
    """Start the CLI import, wait until some rows are committed, check that a reader sees it
    running (not partial), SIGKILL it. Returns how many rows had landed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "examples", "import", str(f), "--batch-size", "500", "--workspace", str(ws)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )

    def committed() -> int:
        rows = _count(ws)
        assert rows or proc.poll() is None, proc.communicate()
        return rows

    try:
        wait_until(committed, timeout=300, interval=0.02, message="no rows were committed")
        from assistant.workspace import Workspace
        from tuning import open_curation

        op = open_curation(Workspace(ws)).store.imports(1)[0]
        assert op["status"] == "running", op
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        proc.stdout.close()  # (no ResourceWarning for pipes never read)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    landed = _count(ws)
    assert 0 < landed < LINES, landed
    return landed


def test_killed_import_is_partial_with_an_exact_undo_and_a_reimport_completes_it(tmp_path):
    ws = tmp_path / "ws"
    f = tmp_path / "big.jsonl"
    with open(f, "w", encoding="utf-8") as fh:
        for i in range(LINES):
            fh.write(
                json.dumps(
                    {"prompt": f"Question {i}: which gear for hill {i % 97}?", "completion": f"Answer {i}: a low one."}
                )
                + "\n"
            )

    # 1. Killed: every row that landed belongs to one import, still marked running (nothing
    #    could mark it otherwise); the next open shows it as partial, with an undo.
    landed = _import_and_kill(ws, f)
    assert _query(ws, "SELECT import_id, COUNT(*) FROM examples GROUP BY import_id") == [(1, landed)]
    assert _query(ws, "SELECT id, status, imported FROM example_imports") == [(1, "running", landed)]
    listed = _tailor(ws, "undo", "--list")
    assert listed.returncode == 0, listed.stderr
    [line] = [ln for ln in listed.stdout.splitlines() if ln.startswith("import-1")]
    assert "PARTIAL" in line and "big.jsonl" in line and f"({landed} examples)" in line
    assert _query(ws, "SELECT status FROM example_imports") == [("partial",)]
    undone = _tailor(ws, "undo")  # the latest change is that import
    assert undone.returncode == 0 and f"Removed {landed} example(s)" in undone.stdout, undone.stdout + undone.stderr
    assert _count(ws) == 0

    # 2. Killed again, then the same file imported again: only the rest is added.
    landed = _import_and_kill(ws, f)
    r = _tailor(ws, "import", f)
    assert r.returncode == 0, r.stderr
    assert f"Imported {LINES - landed} examples" in r.stdout and f"{landed} already present" in r.stdout, r.stdout
    assert "PARTIAL" in r.stdout and "already present and added the rest" in r.stdout, r.stdout
    assert _query(ws, "SELECT COUNT(*), COUNT(DISTINCT prompt_text), COUNT(DISTINCT dedup_hash) FROM examples") == [
        (LINES, LINES, LINES)
    ]
    assert _query(
        ws, "SELECT id, status, imported, duplicates, note FROM example_imports WHERE undone_at IS NULL ORDER BY id"
    ) == [(2, "partial", landed, 0, "completed by import #3"), (3, "done", LINES - landed, landed, None)]

    # 3. And once more: nothing is added.
    r = _tailor(ws, "import", f, "--json")
    out = json.loads(r.stdout)
    assert (out["imported"], out["already_present"], out["status"]) == (0, LINES, "done")
    assert _count(ws) == LINES
