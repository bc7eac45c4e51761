"""An import is one recorded operation: all of it lands, or it is shown as partial with an
undo that removes exactly its rows; importing the same file again adds nothing it already
added. Plus the per-line hardening: deeply nested lines, unpaired surrogates, UTF-16
without a byte-order mark. (The kill -9 test is in test_import_killed.py.)"""

from __future__ import annotations

import codecs
import json
import sqlite3
from pathlib import Path

import pytest

from assistant.errors import ValidationError
from tuning.dataset_import import import_file
from tuning.example import chat_example, dedup_hash
from tuning.example_store import ExampleStore
from tuning.example_table import ExampleFilter
from tuning.text_encoding import detect_encoding


def _pairs(path: Path, n: int, start: int = 0, encoding: str = "utf-8") -> Path:
    path.write_bytes(
        "".join(
            json.dumps({"prompt": f"Question {i}?", "completion": f"Answer {i}."}) + "\n"
            for i in range(start, start + n)
        ).encode(encoding)
    )
    return path


def _import_ids(store: ExampleStore) -> dict:
    with store.db.read() as conn:
        return {r[0]: r[1] for r in conn.execute("SELECT import_id, COUNT(*) FROM examples GROUP BY import_id")}


# ---- the same file twice ------------------------------------------------------------------------
def test_importing_the_same_file_again_adds_nothing(cur_store, tmp_path):
    f = _pairs(tmp_path / "pairs.jsonl", 250)
    first = import_file(cur_store, f, batch_size=100)
    assert (first.imported, first.duplicates, first.status) == (250, 0, "done")
    again = import_file(cur_store, f, batch_size=100)
    assert (again.imported, again.duplicates) == (0, 250)
    assert "Imported 0 examples" in again.summary() and "250 already present" in again.summary()
    assert cur_store.count() == 250
    # Both are recorded; only the first has rows, so only it can be undone.
    ops = cur_store.imports()
    assert [(o["id"], o["status"], o["imported"], o["duplicates"]) for o in ops] == [
        (again.operation, "done", 0, 250),
        (first.operation, "done", 250, 0),
    ]
    assert [b["batch"] for b in cur_store.undo_batches() if b["kind"] == "import"] == [first.batch]


def test_duplicates_within_a_file_and_whitespace_variants_are_already_present(cur_store, tmp_path):
    cur_store.add(chat_example("Where is the shop?", "On the quay."))  # saved by hand earlier
    f = tmp_path / "dups.jsonl"
    f.write_text(
        "\n".join(
            json.dumps(r, ensure_ascii=False)
            for r in [
                {"prompt": "Where is the shop?", "completion": "On the quay."},  # already in the store
                {"prompt": "Hours?", "completion": "Nine to five."},
                {"prompt": "Hours?", "completion": "Nine to five.", "tags": ["x"]},  # same text, other tags
                {"prompt": "  Hours?\r\n", "completion": "Nine  to five. "},  # whitespace differs only
                {"prompt": "Cafe\u0301?", "completion": "Yes."},  # decomposed é
                {"prompt": "Caf\u00e9?", "completion": "Yes."},  # composed é: the same
                {"prompt": "Hours?", "completion": "Nine to six."},  # a different answer
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    result = import_file(cur_store, f)
    assert (result.imported, result.duplicates, result.bad_total) == (3, 4, 0)
    assert sorted(e.answer for e in cur_store.list(ExampleFilter(source="import"))) == [
        "Nine to five.",
        "Nine to six.",
        "Yes.",
    ]


def test_a_cleaned_example_still_counts_as_imported(cur_store, tmp_path):
    """The cleaning report's normalise fix rewrites text; re-importing the original file
    must not bring the unnormalised version back."""
    from tuning.cleaning import apply_fixes, build_report

    f = tmp_path / "messy.jsonl"
    f.write_text(json.dumps({"prompt": "Hello\u00a0 there ", "completion": "Ahoy!\n\n\n\nHow can I help?"}) + "\n")
    assert import_file(cur_store, f).imported == 1
    fix = apply_fixes(cur_store, build_report(cur_store, checks=["normalise"]), kinds=["normalise"])
    assert fix.rewritten == [1] and cur_store.list()[0].prompt == "Hello there"
    again = import_file(cur_store, f)
    assert (again.imported, again.duplicates) == (0, 1) and cur_store.count() == 1


# ---- stopped part-way ---------------------------------------------------------------------------
def test_an_import_stopped_part_way_is_partial_with_an_undo_of_exactly_its_rows(cur_store, tmp_path):
    keep = cur_store.add(chat_example("Saved by hand", "Keep me."))
    earlier = import_file(cur_store, _pairs(tmp_path / "earlier.jsonl", 30, start=10_000))
    f = _pairs(tmp_path / "big.jsonl", 1000)
    calls = []

    def stop_after_three_batches(done, total):
        calls.append(done)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C, a crash in the progress bar, ...

    with pytest.raises(KeyboardInterrupt) as err:
        import_file(cur_store, f, batch_size=100, progress=stop_after_three_batches)
    op = err.value.partial_import
    assert op["status"] == "partial" and op["examples"] == op["imported"] == 300
    assert "KeyboardInterrupt" in op["error"]
    assert cur_store.count() == 1 + 30 + 300
    assert _import_ids(cur_store) == {None: 1, earlier.operation: 30, op["id"]: 300}

    [latest] = cur_store.undo_batches(1)
    assert latest["kind"] == "import" and latest["status"] == "partial" and latest["examples"] == 300
    assert "PARTIAL" in latest["description"] and "big.jsonl" in latest["description"]
    # A later import reports it.
    other = import_file(cur_store, _pairs(tmp_path / "other.jsonl", 5, start=20_000))
    assert any("PARTIAL" in n and "big.jsonl" in n for n in other.notes()) and "PARTIAL" in other.summary()

    assert cur_store.undo(op["batch"]) == 300
    assert cur_store.count() == 1 + 30 + 5 and cur_store.get(keep.id).answer == "Keep me."
    assert _import_ids(cur_store) == {None: 1, earlier.operation: 30, other.operation: 5}
    assert cur_store.get_import(op["id"])["undone_at"]
    with pytest.raises(ValidationError, match="already undone"):
        cur_store.undo(op["batch"])
    assert import_file(cur_store, f).imported == 1000  # after the undo the whole file goes in


def test_reimporting_after_an_interruption_adds_only_the_rest(cur_store, tmp_path):
    f = _pairs(tmp_path / "big.jsonl", 1000)

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_file(cur_store, f, batch_size=400, progress=stop)
    assert cur_store.count() == 400
    rest = import_file(cur_store, f, batch_size=400)
    assert (rest.imported, rest.duplicates) == (600, 400)
    assert cur_store.count() == 1000 and len({e.prompt for e in cur_store.list()}) == 1000
    [note] = rest.notes()
    assert "PARTIAL" in note and "already present" in note
    first = cur_store.get_import(rest.operation - 1)
    assert first["status"] == "partial" and first["note"] == f"completed by import #{rest.operation}"
    assert rest.notes() and not import_file(cur_store, _pairs(tmp_path / "x.jsonl", 1)).notes()


def test_an_import_that_fails_before_any_row_leaves_no_record(cur_store, tmp_path):
    bad_csv = tmp_path / "cols.csv"
    bad_csv.write_text("question_text,reply\na,b\n", encoding="utf-8")
    with pytest.raises(ValidationError):
        import_file(cur_store, bad_csv)
    (tmp_path / "blank.jsonl").write_text("\n \n")
    with pytest.raises(ValidationError, match="no records"):
        import_file(cur_store, tmp_path / "blank.jsonl")
    assert cur_store.imports() == [] and cur_store.undo_batches() == []
    assert not list((cur_store.db.path.parent / ".import-locks").glob("*.lock"))


def test_a_running_import_is_not_partial_and_cannot_be_undone(cur_store, tmp_path):
    """While the importing process is alive (it holds the lock), readers see it running."""
    f = _pairs(tmp_path / "pairs.jsonl", 300)
    seen = []

    def look(done, total):
        other = ExampleStore(cur_store.db.__class__(cur_store.db.path))  # another reader opening the store
        [op] = other.imports()
        seen.append(op["status"])
        if op["imported"] and len(seen) == 1:
            with pytest.raises(ValidationError, match="still running"):
                other.undo_import(op["id"])
            assert [b for b in other.undo_batches() if b["kind"] == "import"] == []

    result = import_file(cur_store, f, batch_size=100, progress=look)
    # Running after every batch; the last progress call comes once it is recorded as done.
    assert len(seen) >= 4 and set(seen[:-1]) == {"running"} and seen[-1] == "done" and result.status == "done"
    assert cur_store.imports()[0]["status"] == "done"


def test_undo_order_mixes_imports_and_edits(cur_store, tmp_path):
    result = import_file(cur_store, _pairs(tmp_path / "pairs.jsonl", 3))
    first = cur_store.list()[0]
    cur_store.update(first.id, label="greeting")
    batches = cur_store.undo_batches()
    assert [b["kind"] for b in batches] == ["edit", "import"]
    assert cur_store.undo() == 1 and cur_store.get(first.id).label is None  # the edit
    assert cur_store.undo() == 3 and cur_store.count() == 0  # then the import
    assert cur_store.get_import(result.operation)["undone_at"]
    with pytest.raises(ValidationError, match="nothing to undo"):
        cur_store.undo()


def test_migration_backfills_the_hash_of_rows_stored_before_it(tmp_path):
    """A database from before import operations: its rows get their dedup hash, so an
    import of the same examples adds nothing; old undo entries still work."""
    from assistant.db import Database
    from tuning.example_table import MIGRATIONS, row_values

    db = Database(tmp_path / "old.db")
    db.migrate("tuning", MIGRATIONS[:1])
    old_cols = (
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
    )
    exs = [chat_example(f"Old question {i}?", f"Old answer {i}.") for i in range(5)]
    with db.transaction() as conn:
        conn.executemany(
            f"INSERT INTO examples({', '.join(old_cols)}) VALUES ({', '.join('?' * len(old_cols))})",
            [row_values(ex, "2024-01-01T00:00:00+00:00")[: len(old_cols)] for ex in exs],
        )
        row = conn.execute("SELECT * FROM examples WHERE id=1").fetchone()
        conn.execute(
            "INSERT INTO example_undo(batch, description, example_id, before_json, created_at)"
            " VALUES ('old', 'edit', 1, ?, '2024-01-02T00:00:00+00:00')",
            (json.dumps({k: row[k] for k in row.keys()}),),
        )
        conn.execute("UPDATE examples SET answer_text='changed' WHERE id=1")

    store = ExampleStore(Database(tmp_path / "old.db"))
    assert store.db.applied_migrations("tuning") == [
        "_m001_examples",
        "_m002_import_operations",
        "_m003_preference_pairs",
    ]
    assert all(ex.rejected is None for ex in store.list())  # rows from before pairs are examples
    with store.db.read() as conn:
        hashes = [r[0] for r in conn.execute("SELECT dedup_hash FROM examples ORDER BY id")]
    assert hashes == [dedup_hash(ex.messages, ex.passages) for ex in exs]
    f = tmp_path / "old.jsonl"
    f.write_text(
        "".join(json.dumps({"prompt": f"Old question {i}?", "completion": f"Old answer {i}."}) + "\n" for i in range(6))
    )
    result = import_file(store, f)
    assert (result.imported, result.duplicates) == (1, 5)
    assert store.undo("old") == 1  # a pre-migration undo entry: restored, with its hash filled in
    with store.db.read() as conn:
        assert conn.execute("SELECT dedup_hash FROM examples WHERE id=1").fetchone()[0] == hashes[0]


# ---- lines that used to crash the import --------------------------------------------------------
def test_deeply_nested_line_is_a_bad_line(cur_store, tmp_path):
    f = tmp_path / "nested.jsonl"
    good = json.dumps({"prompt": "Fine?", "completion": "Fine."})
    deep_tags = json.dumps({"prompt": "Tags?", "completion": "Deep.", "tags": [[["x"]]]})
    deep_tags = deep_tags.replace('[[["x"]]]', "[" * 5000 + '"x"' + "]" * 5000)
    f.write_text(
        "\n".join(
            [
                good,
                "[" * 50_000 + "]" * 50_000,
                '{"prompt": ' + "{" * 0 + "[" * 50_000,
                json.dumps({"prompt": "Still?", "completion": "Yes."}),
                deep_tags,
            ]
        )
        + "\n"
    )
    result = import_file(cur_store, f)
    assert result.imported == 2
    bad = {b.line: b.reason for b in result.bad}
    assert sorted(bad) == [2, 3, 5], bad
    assert "nested too deeply" in bad[2] and "nested too deeply" in bad[3]
    assert "line 2: nested too deeply" in result.summary()


def test_unpaired_surrogate_is_a_bad_line(cur_store, tmp_path):
    f = tmp_path / "surrogate.jsonl"
    f.write_text(
        '{"prompt": "\\ud800", "completion": "x"}\n'
        '{"prompt": "ok", "completion": "y", "tags": ["\\udfff"]}\n'
        '{"prompt": "emoji \\ud83d\\ude00", "completion": "z"}\n'
    )
    result = import_file(cur_store, f)
    assert result.imported == 1 and [b.line for b in result.bad] == [1, 2]
    assert "surrogate" in result.bad[0].reason
    assert cur_store.list()[0].prompt == "emoji \U0001f600"


# ---- UTF-16 without a byte-order mark -----------------------------------------------------------
@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_bom_is_decoded(cur_store, tmp_path, codec):
    f = tmp_path / f"{codec}.jsonl"
    lines = [
        json.dumps({"prompt": f"Café {i}?", "completion": "Oui — €3.10 \u2028 ok"}, ensure_ascii=False)
        for i in range(3)
    ]
    data = "".join(line + "\r\n" for line in lines).encode(codec)
    assert not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    f.write_bytes(data)
    assert detect_encoding(f) == codec
    result = import_file(cur_store, f)
    assert (result.imported, result.bad_total, result.encoding) == (3, 0, codec), result.summary()
    assert [e.prompt for e in cur_store.list()] == ["Café 0?", "Café 1?", "Café 2?"]
    assert cur_store.list()[0].answer == "Oui — €3.10 \u2028 ok"
    plain = tmp_path / f"ascii-{codec}.jsonl"  # all ASCII: used to be "not valid JSON" on every line
    plain.write_bytes((json.dumps({"prompt": "Plain?", "completion": "Yes."}) + "\n").encode(codec))
    assert (import_file(cur_store, plain).imported, import_file(cur_store, plain).duplicates) == (1, 1)
    csv_file = tmp_path / f"{codec}.csv"
    csv_file.write_bytes('prompt,completion\n"Crème?","Non"\n'.encode(codec))
    assert import_file(cur_store, csv_file).imported == 1


def test_broken_utf16_without_bom_is_refused_as_an_encoding_problem(cur_store, tmp_path):
    f = tmp_path / "broken16.jsonl"
    good = (json.dumps({"prompt": "a", "completion": "b"}) + "\n").encode("utf-16-le")
    f.write_bytes(good * 20 + "\ud800".encode("utf-16-le", "surrogatepass") + good)  # a lone surrogate
    with pytest.raises(ValidationError) as err:
        import_file(cur_store, f)
    msg = str(err.value)
    assert "not valid UTF-16 (little-endian, no byte-order mark)" in msg and f"byte offset {len(good) * 20}" in msg
    assert "Save the file as UTF-8" in msg and "not valid JSON" not in msg
    assert cur_store.count() == 0 and cur_store.imports() == []


def test_utf8_with_stray_nul_bytes_is_still_read_as_utf8(cur_store, tmp_path):
    f = tmp_path / "nul.jsonl"
    f.write_bytes(json.dumps({"prompt": "a", "completion": "b"}).encode() + b"\n\x00\x00junk\n")
    assert detect_encoding(f) == "utf-8"
    result = import_file(cur_store, f)
    assert result.imported == 1 and [b.line for b in result.bad] == [2]


def test_the_database_keeps_one_import_id_per_row(cur_store, tmp_path):
    a = import_file(cur_store, _pairs(tmp_path / "a.jsonl", 10))
    b = import_file(cur_store, _pairs(tmp_path / "b.jsonl", 10, start=5))
    assert (b.imported, b.duplicates) == (5, 5)
    conn = sqlite3.connect(cur_store.db.path)
    try:
        rows = conn.execute("SELECT import_id, COUNT(*) FROM examples GROUP BY import_id ORDER BY 1").fetchall()
    finally:
        conn.close()
    assert rows == [(a.operation, 10), (b.operation, 5)]
