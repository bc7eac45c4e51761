"""Acceptance: from a chat in the browser, a user saves an edited reply; it appears in the
Dataset tab with its provenance. Driven through gradio_client against the real server."""

from pathlib import Path

import pytest
from gradio_client import Client

pytestmark = pytest.mark.server


def test_save_edited_reply_from_chat_shows_in_dataset_tab(tailor_server, tiny_model_dir, tmp_path):
    ws = tmp_path / "ws"
    server = tailor_server(ws, tiny_model_dir)
    client = Client(server.url, verbose=False)
    _, conv_id, _, _ = client.predict(
        "When do you open on Sundays?", "", "base", "Be brief.", 0.0, 0.9, 16, api_name="/send"
    )
    replies, reply_text, state = client.predict(conv_id, api_name="/curate_load_replies")
    [(label, message_id)] = replies["choices"]
    assert replies["value"] == message_id and "not rated" in state

    assert "👍" in client.predict(message_id, "friendly", api_name="/curate_thumbs_up")
    ideal = "Ahoy, rider! On Sundays we open from 10:00 to 16:00."
    status = client.predict(message_id, ideal, "hours, sunday", "", api_name="/curate_save_edited")
    assert "Saved the edited reply as example" in status and conv_id in status

    table, counts, _, _ = client.predict(
        "Sundays", "(any)", "(any)", "(any)", "(any)", "(any)", api_name="/dataset_search"
    )
    rows = [dict(zip(table["headers"], row)) for row in table["data"]]
    [row] = rows
    assert row["answer"] == ideal and row["source"] == "chat" and row["tags"] == "hours, sunday"
    assert f"chat {conv_id}" in row["provenance"] and f"message {message_id}" in row["provenance"]
    assert "edited" in row["provenance"] and "1 active example" in counts

    (ex_id, system, _, prompt, answer, _, _, status_, provenance, preview, rejected) = client.predict(
        str(row["id"]), api_name="/dataset_open_example"
    )
    assert (system, prompt, answer, status_) == ("Be brief.", "When do you open on Sundays?", ideal, "active")
    assert f"message {message_id}" in provenance and rejected == ""
    # The preview is the tiny model's ChatML template applied to what the trainer gets.
    assert preview.startswith("<|im_start|>system\nBe brief.<|im_end|>") and f"{ideal}<|im_end|>" in preview

    # The stored row has the full provenance, including the reply before editing.
    from assistant.workspace import Workspace
    from tuning import open_curation

    ex = open_curation(Workspace(ws)).store.get(int(ex_id))
    assert ex.provenance["conversation_id"] == conv_id and ex.provenance["message_id"] == message_id
    assert ex.provenance["edited"] is True and ex.provenance["original_text"] == reply_text
    assert ex.provenance["rating"] == 1 and ex.provenance["message_time"]

    with pytest.raises(Exception, match="empty"):
        client.predict(message_id, "   ", "", "", api_name="/curate_save_edited")

    # The tiny model's reply was empty, so that edit made no preference pair. A reply with text
    # (written into the workspace's log, as another chat would) edited in the panel makes one.
    from assistant.conversations import ConversationLog

    log = ConversationLog(Workspace(ws).db)
    other = log.create(system_prompt="")
    log.add_message(other.id, "user", "Can I ride on Sundays?")
    original = log.add_message(other.id, "assistant", "Well, it depends on many things, let me explain...")
    status = client.predict(original.id, "Yes, any day.", "", "", api_name="/curate_save_edited")
    assert "and as preference pair" in status
    table, counts, _, _ = client.predict(
        "Sundays", "(any)", "(any)", "(any)", "(any)", "(any)", "pair", api_name="/dataset_search"
    )
    [pair_row] = [dict(zip(table["headers"], row)) for row in table["data"]]
    assert pair_row["answer"] == "Yes, any day." and pair_row["rejected"].startswith("Well, it depends")
    assert "of them 1 preference pair" in counts
    *_, pair_provenance, _, pair_rejected = client.predict(str(pair_row["id"]), api_name="/dataset_open_example")
    assert "Preference pair (from an edit)" in pair_provenance and pair_rejected == original.content


def test_dataset_tab_import_clean_undo_split_snapshot_export(tailor_server, tiny_model_dir, tmp_path):
    import json

    from gradio_client import handle_file

    server = tailor_server(tmp_path / "ws", tiny_model_dir)
    client = Client(server.url, verbose=False)
    f = tmp_path / "upload.jsonl"
    f.write_text(
        "\n".join(
            [json.dumps({"prompt": f"Question {i}?", "completion": f"Answer {i}."}) for i in range(20)]
            + [
                "not json",
                json.dumps({"prompt": "Question 0?", "completion": "Answer 0."}),
                json.dumps({"prompt": "Card?", "completion": "Paid with 4111 1111 1111 1111."}),
            ]
        )
        + "\n"
    )
    summary = client.predict(handle_file(str(f)), "uploaded", api_name="/dataset_import")
    assert "Imported 21 examples" in summary and "line 21: not valid JSON" in summary
    assert "1 already present" in summary and "“Undo last change” removes this import" in summary  # line 22
    again = client.predict(handle_file(str(f)), "uploaded", api_name="/dataset_import")
    assert "Imported 0 examples" in again and "22 already present" in again
    # An exact duplicate can still be added by hand; the cleaning report finds it.
    client.predict("", "", "Question 0?", "Answer 0.", "", "uploaded", "active", api_name="/dataset_save")

    checks = ["duplicate", "pii", "conflict", "empty", "too_long", "normalise"]
    report, near = client.predict(checks, 0.95, 1024, api_name="/dataset_clean_report")
    assert "exact duplicate groups: 1" in report and "examples with private data: 1" in report
    assert "[CARD]" in report and "examples over the max length: 0" in report  # counted with the chat tokenizer
    fixed = client.predict(checks, 0.95, 1024, api_name="/dataset_clean_fix")
    assert "Deleted 1" in fixed and "rewrote 1" in fixed
    table, counts, _, _ = client.predict(
        "Card", "uploaded", "(any)", "(any)", "(any)", "(any)", api_name="/dataset_search"
    )
    assert "[CARD]" in table["data"][0][7]
    assert "restored" in client.predict(api_name="/dataset_undo")
    table, counts, _, _ = client.predict("", "(any)", "(any)", "(any)", "(any)", "(any)", api_name="/dataset_search")
    assert len(table["data"]) == 22 and "22 active examples" in counts

    assert "Newly assigned" in client.predict("60,20,20", True, api_name="/dataset_assign_splits")
    versions, message = client.predict("from the UI", api_name="/dataset_snapshot")
    assert message.startswith("Created v1") and versions["data"][0][0] == 1
    assert client.predict("", api_name="/dataset_snapshot")[1] == "Nothing changed since v1."
    exported = client.predict("prompt-completion", False, api_name="/dataset_export")
    lines = Path(exported).read_text().splitlines()
    assert len(lines) == 22 and json.loads(lines[0]) == {
        "prompt": "Question 0?",
        "completion": "Answer 0.",
        "tags": ["uploaded"],
    }


def test_dataset_tab_import_killed_with_the_server_is_partial_after_restart(
    tailor_server, tiny_model_dir, tmp_path, wait_until
):
    """The server is SIGKILLed while it imports an upload: after the restart the import is
    listed as partial, "Undo last change" removes exactly its rows, and importing the file
    again ends with every example once."""
    import json
    import os
    import signal
    import sqlite3

    from gradio_client import handle_file

    def count(sql="SELECT COUNT(*) FROM examples"):
        try:
            conn = sqlite3.connect(f"file:{ws / 'tailor.db'}?mode=ro", uri=True, timeout=30)
            try:
                return conn.execute(sql).fetchone()[0]
            finally:
                conn.close()
        except sqlite3.OperationalError:
            return 0

    ws = tmp_path / "ws"
    n = 40_000
    f = tmp_path / "big.jsonl"
    f.write_text(
        "".join(json.dumps({"prompt": f"Question {i}?", "completion": f"Answer {i}."}) + "\n" for i in range(n))
    )
    server = tailor_server(ws, tiny_model_dir)
    job = Client(server.url, verbose=False).submit(handle_file(str(f)), "", api_name="/dataset_import")

    def rows_landed():
        landed = count()
        assert landed or not job.done(), "the upload was not imported"  # (the current `job`)
        return landed

    wait_until(rows_landed, timeout=240, interval=0.02, message="the upload was not imported")
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(30)
    landed = count()
    assert 0 < landed < n and count("SELECT COUNT(DISTINCT import_id) FROM examples") == 1

    server = tailor_server(ws, tiny_model_dir)
    client = Client(server.url, verbose=False)
    undone = client.predict(api_name="/dataset_undo")
    assert "PARTIAL" in undone and "big.jsonl" in undone and f"({landed} example(s)" in undone, undone
    assert count() == 0

    # Killed again, then the same file imported again through the UI: only the rest goes in.
    job = client.submit(handle_file(str(f)), "", api_name="/dataset_import")
    wait_until(rows_landed, timeout=240, interval=0.02, message="the upload was not imported")
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(30)
    landed = count()
    server = tailor_server(ws, tiny_model_dir)
    summary = Client(server.url, verbose=False).predict(handle_file(str(f)), "", api_name="/dataset_import")
    assert f"Imported {n - landed} examples" in summary and f"{landed} already present" in summary, summary
    assert "PARTIAL" in summary and "added the rest" in summary
    assert count() == n == count("SELECT COUNT(DISTINCT prompt_text) FROM examples")
