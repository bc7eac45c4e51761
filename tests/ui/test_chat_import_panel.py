"""The chat sidebar's "Import chats" button (ui/chat_import_panel.py): the upload handler imports
an export and says what came in; a bad file shows its reason; the event is scriptable as
/chat_import. No browser: the handler is called directly, as a web event would."""

import json
from pathlib import Path

import gradio as gr
import pytest

from assistant.conversations import ConversationLog
from ui.chat_import_panel import build_chat_import, import_upload

EXPORTS = Path(__file__).resolve().parents[1] / "assistant" / "data" / "chat_exports"


def test_the_handler_imports_and_says_what_came_in(workspace):
    log = ConversationLog(workspace.db)
    status = import_upload(log, str(EXPORTS / "chatgpt_conversations.json"))
    assert status.startswith("Imported 2 conversations (ChatGPT export, 6 messages)")
    assert {c.title for c in log.list()} == {"Trip plan", "Quick sum"}
    again = import_upload(log, {"path": str(EXPORTS / "chatgpt_conversations.json")})  # FileData's shape
    assert again.startswith("Imported 0 conversations (ChatGPT export, 0 messages; 2 already here)")


def test_a_bad_file_or_no_file_shows_the_reason(workspace, tmp_path):
    log = ConversationLog(workspace.db)
    bad = tmp_path / "export.json"
    bad.write_text(json.dumps({"messages": "nope"}))
    with pytest.raises(gr.Error, match="export.json is not a ChatGPT or Open WebUI export"):
        import_upload(log, str(bad))
    with pytest.raises(gr.Error, match="Choose an export first"):
        import_upload(log, None)
    assert log.list() == []


def test_the_panel_wires_an_upload_named_chat_import(workspace):
    log = ConversationLog(workspace.db)
    with gr.Blocks() as demo:
        panel = build_chat_import(log)
        panel.done.success(lambda: None, None, None, api_name="chat_import_after")
    names = [d.get("api_name") for d in demo.config["dependencies"]]
    assert "chat_import" in names and "chat_import_after" in names
    assert isinstance(panel.upload, gr.UploadButton) and isinstance(panel.status, gr.Markdown)
