"""The Chat tab: streaming chat, stop, new chat, past conversations, model picker and
generation settings. Every event has an api_name so scripts can drive it with gradio_client."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from assistant.chat import ChatRequest, ChatService
from assistant.engine import GenerationOptions

from .errors import shows_errors
from .formatting import chat_history, conversation_choices, reply_stats
from .knowledge_format import with_citations


@dataclass
class ChatTab:
    """What other tabs hook into (the curation panel, the Tune tab, the app's page-load events)."""

    chatbot: gr.Chatbot
    conversation_id: gr.Textbox
    model: gr.Dropdown
    status: gr.Markdown
    conversations: gr.Dropdown
    search: gr.Textbox
    system_prompt: gr.Textbox
    use_docs: gr.Checkbox
    list_models: Callable  # () -> update of `model`: the chat's models and its default
    list_conversations: Callable  # (search text) -> update of `conversations`


def _shown(messages) -> list[dict]:
    """Chat history with numbered citations under replies that used the documents."""
    return with_citations(chat_history(messages), messages)


def build_chat_tab(chat: ChatService) -> ChatTab:
    """Build the tab inside the current gr.Blocks."""
    defaults = GenerationOptions()
    with gr.Row():
        with gr.Column(scale=1, min_width=240):
            new_btn = gr.Button("New chat", variant="secondary")
            search = gr.Textbox(label="Search conversations", placeholder="words in a title or message")
            conversations = gr.Dropdown(label="Past conversations", choices=[], value=None, interactive=True)
            refresh_btn = gr.Button("Refresh list", size="sm")
            conversation_id = gr.Textbox(
                label="Conversation id", interactive=True, max_lines=1, info="Empty starts a new conversation."
            )
        with gr.Column(scale=4):
            chatbot = gr.Chatbot(label="Chat", height=520, buttons=["copy"])
            with gr.Row():
                message = gr.Textbox(
                    placeholder="Ask something and press Enter", show_label=False, scale=6, lines=1, max_lines=6
                )
                send_btn = gr.Button("Send", variant="primary", scale=1)
                stop_btn = gr.Button("Stop", variant="stop", scale=1)
            use_docs = gr.Checkbox(
                label="Use my documents",
                value=False,
                info="Answer from the Knowledge tab's documents and cite them; kept per conversation.",
            )
            no_source = gr.Radio(
                ["answer", "decline"],
                value=chat.no_source,
                label="When no document supports an answer",
                info="answer: the model replies on its own, marked as not from your documents; "
                "decline: say no source was found.",
            )
            status = gr.Markdown("")
            with gr.Accordion("Model and generation settings", open=False):
                model = gr.Dropdown(
                    label="Model",
                    choices=chat.models(),
                    value=chat.default_model(),
                    info="The base model or a tuned adapter; switching does not reload the base.",
                )
                system_prompt = gr.Textbox(label="System prompt", lines=2, placeholder="Optional")
                with gr.Row():
                    temperature = gr.Slider(
                        0,
                        1.5,
                        value=defaults.temperature,
                        step=0.05,
                        label="Temperature",
                        info="0 = always the most likely word",
                    )
                    top_p = gr.Slider(0.05, 1, value=defaults.top_p, step=0.05, label="Top-p")
                    max_new_tokens = gr.Slider(16, 1024, value=defaults.max_new_tokens, step=16, label="Max new tokens")

    @shows_errors
    def send(text, conv_id, model_name, system, temp, topp, max_new, rag=False, no_source_policy=None):
        text = (text or "").strip()
        if not text:
            raise gr.Error("Type a message first.")
        request = ChatRequest(
            text=text,
            conversation_id=(conv_id or "").strip() or None,
            model=model_name or "base",
            system_prompt=system or "",
            options=GenerationOptions(temperature=float(temp), top_p=float(topp), max_new_tokens=int(max_new)),
            rag=bool(rag),
            no_source=no_source_policy or None,
        )
        turn = chat.send(request)
        history = _shown(chat.log.get(turn.conversation_id).messages)
        partial = ""
        for partial in turn:
            yield history + [{"role": "assistant", "content": partial}], turn.conversation_id, "", "…"
        reply = turn.wait()
        history = _shown(chat.log.get(turn.conversation_id).messages)
        yield history, turn.conversation_id, "", reply_stats(reply)

    def stop(conv_id):
        stopped = chat.stop((conv_id or "").strip())
        return "Stopping…" if stopped else "Nothing is running."

    def new_chat():
        return [], "", "New conversation: type a message."

    def list_conversations(query):
        return gr.update(choices=conversation_choices(chat.log.list(query=(query or "").strip())))

    @shows_errors
    def open_conversation(conv_id):
        conv_id = (conv_id or "").strip()
        if not conv_id:
            return [], "", gr.update(), "", gr.update()
        conv = chat.log.get(conv_id)
        return (_shown(conv.messages), conv.id, conv.system_prompt, f"Opened “{conv.title or conv.id}”.", conv.rag)

    def list_models():
        return gr.update(choices=chat.models(), value=chat.default_model())

    send_inputs = [
        message,
        conversation_id,
        model,
        system_prompt,
        temperature,
        top_p,
        max_new_tokens,
        use_docs,
        no_source,
    ]
    send_outputs = [chatbot, conversation_id, message, status]
    send_btn.click(send, send_inputs, send_outputs, api_name="send").then(
        list_conversations, [search], [conversations], api_name="refresh_after_send"
    )
    message.submit(send, send_inputs, send_outputs, api_name="send_on_enter").then(
        list_conversations, [search], [conversations], api_name="refresh_after_enter"
    )
    stop_btn.click(stop, [conversation_id], [status], api_name="stop", queue=False)
    new_btn.click(new_chat, None, [chatbot, conversation_id, status], api_name="new_chat")
    refresh_btn.click(list_conversations, [search], [conversations], api_name="list_conversations")
    search.submit(list_conversations, [search], [conversations], api_name="search_conversations")
    conversations.input(
        open_conversation,
        [conversations],
        [chatbot, conversation_id, system_prompt, status, use_docs],
        api_name="pick_conversation",
    )
    open_btn_hidden = gr.Button(visible=False)
    open_btn_hidden.click(
        open_conversation,
        [conversation_id],
        [chatbot, conversation_id, system_prompt, status, use_docs],
        api_name="open_conversation",
    )
    refresh_models = gr.Button("Refresh models", size="sm", visible=False)
    refresh_models.click(list_models, None, [model], api_name="list_models")

    return ChatTab(
        chatbot=chatbot,
        conversation_id=conversation_id,
        model=model,
        status=status,
        conversations=conversations,
        search=search,
        system_prompt=system_prompt,
        use_docs=use_docs,
        list_models=list_models,
        list_conversations=list_conversations,
    )
