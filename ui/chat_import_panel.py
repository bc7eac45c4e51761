"""The "Import chats" button: an upload for a ChatGPT or Open WebUI export (assistant/chat_import.py,
the same as `tailor conversations import`) and a line saying what came in. The chat sidebar
places it with `build_chat_import(log)` and chains its list refresh on the returned `done`."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from assistant.chat_import import import_chats
from assistant.conversations import ConversationLog

from .errors import shows_errors
from .uploads import uploaded_path

BUTTON_LABEL = "Import chats (Open WebUI or ChatGPT export, .json or .zip)"


@dataclass
class ChatImportPanel:
    upload: gr.UploadButton
    status: gr.Markdown
    # The upload event (api_name "chat_import"): chain `.success(...)` to refresh the conversation
    # list after a file went in (`.then(...)` runs after a refused file too).
    done: object


@shows_errors
def import_upload(log: ConversationLog, file) -> str:
    """The upload handler: import the uploaded export, say what came in. A refused file shows its
    reason as an error, and nothing of it is stored."""
    if not file:
        raise gr.Error("Choose an export first: ChatGPT's conversations.json or .zip, or Open WebUI's .json.")
    # Only a file this server received as an upload (a web request can name any path).
    result = import_chats(log, uploaded_path(file))
    text = result.summary()
    if result.imported:
        text += " They are in the conversation list, under their own dates."
    return text


def build_chat_import(log: ConversationLog) -> ChatImportPanel:
    """The button and its status line, inside the current gr.Blocks context."""
    upload = gr.UploadButton(BUTTON_LABEL, file_types=[".json", ".zip"], file_count="single", size="sm")
    status = gr.Markdown()

    def on_upload(file):
        return import_upload(log, file)

    done = upload.upload(on_upload, [upload], [status], api_name="chat_import")
    return ChatImportPanel(upload=upload, status=status, done=done)
