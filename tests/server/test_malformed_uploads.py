"""Malformed uploads sent to the running server through the web app's own events (the same
calls the browser makes): documents to the Knowledge tab, datasets to the Dataset tab, and a
file over the upload limit. Each is refused with a message that names the file and says what
is wrong; the good files of the same upload still go in; the server stays up; and what was
saved before (a conversation, the examples, a document) is all still there."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

pytestmark = pytest.mark.server

GREEDY = (0.0, 0.9, 16)


def _count(ws: Path, table: str) -> int:
    conn = sqlite3.connect(f"file:{ws / 'tailor.db'}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        conn.close()


def test_malformed_uploads_are_refused_clearly_and_lose_nothing(tailor_server, tiny_model_dir, tmp_path):
    from gradio_client import Client, handle_file

    ws = tmp_path / "ws"
    server = tailor_server(ws, tiny_model_dir, env={"TAILOR_MAX_UPLOAD_MB": "1"})
    client = Client(server.url, verbose=False)
    files = tmp_path / "files"
    files.mkdir()

    # What the user had saved before the bad uploads.
    _, conv_id, _, _ = client.predict("Keep this conversation", "", "base", "", *GREEDY, api_name="/send")
    good_pairs = files / "good.jsonl"
    good_pairs.write_text("".join(json.dumps({"prompt": f"Q{i}?", "completion": f"A{i}."}) + "\n" for i in range(5)))
    assert "Imported 5 examples" in client.predict(handle_file(str(good_pairs)), "", api_name="/dataset_import")
    hours = files / "hours.md"
    hours.write_text("# Opening hours\n\nThe shop opens at nine on weekdays.\n")
    report = client.predict([handle_file(str(hours))], api_name="/knowledge_add_files")[0]
    assert "hours.md" in report
    before = {t: _count(ws, t) for t in ("conversations", "messages", "examples", "documents", "chunks")}

    # Documents: one good file among five bad ones, in one upload.
    bad_docs = {
        "notes.docx": (b"PK\x03\x04 something", "unsupported file type"),
        "latin1.txt": ("Caf\u00e9 cr\u00e8me".encode("latin-1"), "not valid UTF-8"),
        "empty.md": (b"   \n\n", "empty"),
        "binary.txt": (b"abc\x00\x01\x02def", "binary"),
        "broken.pdf": (b"%PDF-1.4\nthis is not really a pdf", "could not be read as a PDF"),
    }
    for name, (data, _) in bad_docs.items():
        (files / name).write_bytes(data)
    prices = files / "prices.md"
    prices.write_text("# Prices\n\nA day's rental costs 25 euros.\n")
    upload = [handle_file(str(files / n)) for n in bad_docs] + [handle_file(str(prices))]
    report = client.predict(upload, api_name="/knowledge_add_files")[0]
    for name, (_, reason) in bad_docs.items():
        line = next((ln for ln in report.splitlines() if name in ln), "")
        assert reason in line, f"{name}: {line!r} in\n{report}"
    assert "prices.md" in report
    assert _count(ws, "documents") == before["documents"] + 1  # only the good one went in

    # Datasets: not JSON at all, another encoding, a binary file, an empty file.
    bad_sets = {
        "garbage.jsonl": b"this is not json\n{also not\n",
        "latin1.jsonl": json.dumps({"prompt": "Caf\u00e9?", "completion": "Cr\u00e8me."}, ensure_ascii=False).encode(
            "latin-1"
        )
        + b"\n",
        "binary.jsonl": bytes(range(256)) * 4,
        "empty.jsonl": b"",
    }
    messages = {}
    for name, data in bad_sets.items():
        (files / name).write_bytes(data)
        try:
            messages[name] = client.predict(handle_file(str(files / name)), "", api_name="/dataset_import")
        except Exception as exc:  # noqa: BLE001 - gradio_client raises the app's gr.Error as AppError
            messages[name] = str(exc)
    for name, text in messages.items():
        assert text.strip() and "Traceback" not in text, (name, text)
    assert "line 1" in messages["garbage.jsonl"] and "line 2" in messages["garbage.jsonl"]
    assert "empty" in messages["empty.jsonl"].lower()
    assert "not valid UTF-8" in messages["latin1.jsonl"] and "line 1" in messages["latin1.jsonl"]
    assert "not valid UTF-8" in messages["binary.jsonl"]

    # A file over the web upload limit (1 MB here) is refused before it reaches the app.
    big = files / "big.md"
    big.write_bytes(b"# Big\n\n" + b"words " * 400_000)
    with pytest.raises(Exception):
        client.predict([handle_file(str(big))], api_name="/knowledge_add_files")

    # Nothing saved before was lost, and the server still works.
    after = {t: _count(ws, t) for t in before}
    assert after["conversations"] == before["conversations"] and after["messages"] == before["messages"]
    assert after["documents"] == before["documents"] + 1 and after["chunks"] > before["chunks"]
    assert after["examples"] == before["examples"]
    assert server.proc.poll() is None
    _, same, _, stats = client.predict("Still here?", conv_id, "base", "", *GREEDY, api_name="/send")
    assert same == conv_id and "tokens" in stats
    hits = client.predict("opens at nine", 3, "hybrid", api_name="/knowledge_search")
    assert "hours.md" in json.dumps(hits, default=str)
