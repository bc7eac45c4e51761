"""Build the whole Gradio app from its tabs."""

from __future__ import annotations

import gradio as gr

from assistant.runtime import Core

from .chat_tab import build_chat_tab


def build_ui(core: Core) -> gr.Blocks:
    with gr.Blocks(title="Tailor") as demo:
        gr.Markdown(f"## Tailor · {core.engine.name} · {core.engine.hardware.describe()}")
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                chat = build_chat_tab(core.chat)
        # Refresh lists whenever a page opens: adapters or conversations may have been added
        # by another browser, the CLI or a training job since the app started.
        demo.load(chat["list_models"], None, [chat["model"]], api_name="page_load_models")
        demo.load(chat["list_conversations"], [chat["search"]], [chat["conversations"]],
                  api_name="page_load_conversations")
    return demo
