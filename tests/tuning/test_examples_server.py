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
    _, conv_id, _, _ = client.predict("When do you open on Sundays?", "", "base", "Be brief.", 0.0, 0.9, 16,
                                      api_name="/send")
    replies, reply_text, state = client.predict(conv_id, api_name="/curate_load_replies")
    [(label, message_id)] = replies["choices"]
    assert replies["value"] == message_id and "not rated" in state

    assert "👍" in client.predict(message_id, "friendly", api_name="/curate_thumbs_up")
    ideal = "Ahoy, rider! On Sundays we open from 10:00 to 16:00."
    status = client.predict(message_id, ideal, "hours, sunday", "", api_name="/curate_save_edited")
    assert "Saved the edited reply as example" in status and conv_id in status

    table, counts, _, _ = client.predict("Sundays", "(any)", "(any)", "(any)", "(any)", "(any)",
                                         api_name="/dataset_search")
    rows = [dict(zip(table["headers"], row)) for row in table["data"]]
    [row] = rows
    assert row["answer"] == ideal and row["source"] == "chat" and row["tags"] == "hours, sunday"
    assert f"chat {conv_id}" in row["provenance"] and f"message {message_id}" in row["provenance"]
    assert "edited" in row["provenance"] and "1 active example" in counts

    (ex_id, system, _, prompt, answer, _, _, status_, provenance, preview) = client.predict(
        str(row["id"]), api_name="/dataset_open_example")
    assert (system, prompt, answer, status_) == ("Be brief.", "When do you open on Sundays?", ideal, "active")
    assert f"message {message_id}" in provenance
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


def test_dataset_tab_import_clean_undo_split_snapshot_export(tailor_server, tiny_model_dir, tmp_path):
    import json

    from gradio_client import handle_file

    server = tailor_server(tmp_path / "ws", tiny_model_dir)
    client = Client(server.url, verbose=False)
    f = tmp_path / "upload.jsonl"
    f.write_text("\n".join([json.dumps({"prompt": f"Question {i}?", "completion": f"Answer {i}."}) for i in range(20)]
                           + ["not json", json.dumps({"prompt": "Question 0?", "completion": "Answer 0."}),
                              json.dumps({"prompt": "Card?", "completion": "Paid with 4111 1111 1111 1111."})]) + "\n")
    summary = client.predict(handle_file(str(f)), "uploaded", api_name="/dataset_import")
    assert "Imported 22 examples" in summary and "line 21: not valid JSON" in summary

    checks = ["duplicate", "pii", "conflict", "empty", "too_long", "normalise"]
    report, near = client.predict(checks, 0.95, 1024, api_name="/dataset_clean_report")
    assert "exact duplicate groups: 1" in report and "examples with private data: 1" in report
    assert "[CARD]" in report and "examples over the max length: 0" in report  # counted with the chat tokenizer
    fixed = client.predict(checks, 0.95, 1024, api_name="/dataset_clean_fix")
    assert "Deleted 1" in fixed and "rewrote 1" in fixed
    table, counts, _, _ = client.predict("Card", "uploaded", "(any)", "(any)", "(any)", "(any)",
                                         api_name="/dataset_search")
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
    assert len(lines) == 22 and json.loads(lines[0]) == {"prompt": "Question 0?", "completion": "Answer 0.",
                                                         "tags": ["uploaded"]}
