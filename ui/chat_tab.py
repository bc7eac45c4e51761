"""The Chat tab: conversations in a sidebar list, the model picker above the chat, streaming
replies labelled with the model that wrote them, sources folded under each reply's label,
Regenerate / Copy / Edit / 👍👎 on every reply (the curation itself: ui/chat_curation.py), Stop
(also Esc), and the generation settings folded away. Every event has an api_name so scripts
can drive it with gradio_client; the conversation id is a hidden textbox for the same reason
(scripts pass it, people never see it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from assistant.chat import ChatRequest, ChatService
from assistant.engine import GenerationOptions
from assistant.errors import TailorError

from .chat_display import Note, chat_messages, with_pending_reply
from .chat_import_panel import ChatImportPanel, build_chat_import
from .errors import shows_errors
from .formatting import conversation_choices, reply_stats

# The chatbot's feedback buttons: the two thumbs, and reasons under its flag icon (each a 👎
# with that reason, so a person can say why in one click).
FEEDBACK_REASONS = ("Wrong facts", "Wrong tone", "Too long", "Ignored the question")
FEEDBACK = ("Like", "Dislike", *FEEDBACK_REASONS)
PLACEHOLDER = (
    "**Ask anything.** Pick the model above: the base model or one you tuned. "
    "Tick *Use my documents* to answer from the Knowledge tab's files, with sources.\n\n"
    "On any reply: ✏️ edit it into the answer you wanted (saved as a training example), "
    "👍/👎 rate it, 🔄 regenerate it."
)
MESSAGE_PLACEHOLDER = "Ask something and press Enter"
STOP_ID = "tailor-chat-stop"


@dataclass
class ChatTab:
    """What other tabs hook into (the curation, the Tune and Compare tabs, the page-load events)."""

    chatbot: gr.Chatbot
    conversation_id: gr.Textbox  # hidden: what scripts pass; people pick from the list
    model: gr.Dropdown
    status: gr.Markdown
    conversations: gr.Radio
    search: gr.Textbox
    title: gr.Textbox
    system_prompt: gr.Textbox
    use_docs: gr.Checkbox
    sidebar: gr.Sidebar
    show_saved: gr.Button  # "Show in the Dataset tab", once an edit saved something
    opened: list  # the sidebar's events that open a chat (pick, new, undo): the app shows the tab
    list_models: Callable  # () -> update of `model`: the chat's models and its default
    list_conversations: Callable  # (search text, open id) -> update of `conversations`
    render: Callable  # (conversation id) -> the chatbot's value for it


@dataclass
class ChatSidebar:
    """The conversation list and its controls: a page-level gr.Sidebar (Gradio makes room for it
    beside the page only at the top level of the Blocks; inside a tab, reopening it covered the
    chat), so it shows on every tab, like the chat apps people know."""

    sidebar: gr.Sidebar
    new_btn: gr.Button
    search: gr.Textbox
    conversations: gr.Radio
    title: gr.Textbox
    rename_btn: gr.Button
    delete_btn: gr.Button
    undo_btn: gr.Button
    deleted_id: gr.State
    imported: ChatImportPanel


def build_chat_sidebar(chat: ChatService) -> ChatSidebar:
    """Build the sidebar at the top level of the current gr.Blocks (before the tabs)."""
    with gr.Sidebar(label="Conversations", open=True, elem_id="tailor-chat-sidebar") as sidebar:
        new_btn = gr.Button("+ New chat", variant="primary")
        search = gr.Textbox(
            placeholder="Search chats", label="Search chats", show_label=False, max_lines=1, container=False
        )
        conversations = gr.Radio(
            choices=[], value=None, show_label=False, label="Conversations", elem_id="tailor-conversation-list"
        )
        with gr.Accordion("This chat", open=False):
            title = gr.Textbox(label="Title", max_lines=1, placeholder="Start a chat to give it a title")
            with gr.Row():
                rename_btn = gr.Button("Rename", size="sm")
                delete_btn = gr.Button("Delete", size="sm", variant="stop")
        undo_btn = gr.Button("↩ Undo delete", size="sm", visible=False)
        deleted_id = gr.State("")
        imported = build_chat_import(chat.log)
    return ChatSidebar(
        sidebar, new_btn, search, conversations, title, rename_btn, delete_btn, undo_btn, deleted_id, imported
    )


def build_chat_tab(chat: ChatService, side: ChatSidebar, note: Note | None = None) -> ChatTab:
    """Build the tab inside the current gr.Blocks and wire the sidebar `side` to it. `note(reply)`
    adds words to a reply's label (the curation passes what was saved from it)."""
    defaults = GenerationOptions()
    sidebar, new_btn, search, conversations = side.sidebar, side.new_btn, side.search, side.conversations
    title, rename_btn, delete_btn, undo_btn = side.title, side.rename_btn, side.delete_btn, side.undo_btn
    deleted_id, imported = side.deleted_id, side.imported
    with gr.Row(equal_height=True):
        model = gr.Dropdown(
            label="Model",
            choices=chat.models(),
            value=chat.default_model(),
            info="The base model or a tuned adapter; switch at any time, each reply says which wrote it.",
            scale=3,
            min_width=200,
        )
        use_docs = gr.Checkbox(
            label="Use my documents",
            value=False,
            info="Answer from the Knowledge tab's documents, with sources; kept per chat.",
            scale=2,
            min_width=220,  # with the picker's 200 px: they stack on a phone instead of squeezing
        )
    chatbot = gr.Chatbot(
        label="Chat",
        height=560,
        buttons=["copy"],
        editable="all",
        feedback_options=FEEDBACK,
        placeholder=PLACEHOLDER,
        elem_id="tailor-chatbot",
    )
    with gr.Row(equal_height=True):
        message = gr.Textbox(
            placeholder=MESSAGE_PLACEHOLDER,
            label="Message",
            show_label=False,
            scale=6,
            lines=1,
            max_lines=8,
            container=False,
            elem_id="tailor-chat-input",
        )
        send_btn = gr.Button("Send", variant="primary", scale=1, min_width=70)
        stop_btn = gr.Button("Stop", variant="stop", scale=1, min_width=70, elem_id=STOP_ID)
    with gr.Row(equal_height=True):
        status = gr.Markdown("", elem_id="tailor-chat-status")
        show_saved = gr.Button("Show in the Dataset tab", size="sm", visible=False, scale=0, min_width=180)
    with gr.Accordion("Generation settings", open=False):
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
        no_source = gr.Radio(
            ["answer", "decline"],
            value=chat.no_source,
            label="When no document supports an answer",
            info="answer: the model replies on its own, marked as not from your documents; "
            "decline: say no source was found.",
        )
    conversation_id = gr.Textbox(visible=False, label="Conversation id")

    def render(conv_id: str) -> list[dict]:
        return chat_messages(chat.log.get(conv_id).messages, note) if conv_id else []

    def _request(text, conv_id, model_name, system, temp, topp, max_new, rag, no_source_policy, regenerate=False):
        return ChatRequest(
            text=text,
            conversation_id=(conv_id or "").strip() or None,
            model=model_name or "base",
            system_prompt=system or "",
            options=GenerationOptions(temperature=float(temp), top_p=float(topp), max_new_tokens=int(max_new)),
            rag=bool(rag),
            no_source=no_source_policy or None,
            regenerate=regenerate,
        )

    def _stream(request: ChatRequest):
        turn = chat.send(request)
        # While a regenerated reply streams, the one it replaces is already out of the picture.
        kept = [
            m for m in chat.log.get(turn.conversation_id).messages if turn.replaces is None or m.id != turn.replaces.id
        ]
        shown = chat_messages(kept, note)
        label = request.model or "base"
        for partial in turn:
            yield with_pending_reply(shown, label, partial), turn.conversation_id, "", "…"
        reply = turn.wait()
        yield render(turn.conversation_id), turn.conversation_id, "", reply_stats(reply)

    @shows_errors
    def send(text, conv_id, model_name, system, temp, topp, max_new, rag=False, no_source_policy=None):
        text = (text or "").strip()
        if not text:
            raise gr.Error("Type a message first.")
        yield from _stream(_request(text, conv_id, model_name, system, temp, topp, max_new, rag, no_source_policy))

    @shows_errors
    def regenerate(conv_id, model_name, system, temp, topp, max_new, rag=False, no_source_policy=None):
        """The chatbot's 🔄 on the last reply: answer the same message again (with the model
        picked now); the old reply is kept out of the thread, with its rating."""
        request = _request("", conv_id, model_name, system, temp, topp, max_new, rag, no_source_policy, True)
        yield from _stream(request)

    def stop(conv_id):
        stopped = chat.stop((conv_id or "").strip())
        return "Stopping…" if stopped else "Nothing is running."

    def new_chat():
        return [], "", "New conversation: type a message.", ""

    def list_conversations(query, open_id=None):
        found = chat.log.list(query=(query or "").strip())
        value = open_id if open_id and any(c.id == open_id for c in found) else None
        return gr.update(choices=conversation_choices(found), value=value)

    @shows_errors
    def open_conversation(conv_id):
        conv_id = (conv_id or "").strip()
        if not conv_id:
            return [], "", gr.update(), "", gr.update()
        conv = chat.log.get(conv_id)
        return render(conv.id), conv.id, conv.system_prompt, f"Opened “{conv.title or 'untitled'}”.", conv.rag

    @shows_errors
    def rename(conv_id, new_title, query):
        conv_id = (conv_id or "").strip()
        if not conv_id:
            raise gr.Error("Open a chat first: there is nothing to rename.")
        conv = chat.log.rename(conv_id, new_title)
        return conv.title, list_conversations(query, conv.id), f"Renamed to “{conv.title}”."

    @shows_errors
    def delete(conv_id, query):
        conv_id = (conv_id or "").strip()
        if not conv_id:
            raise gr.Error("Open a chat first: there is nothing to delete.")
        conv = chat.log.delete(conv_id)
        gr.Info(f"Deleted “{conv.title or 'untitled'}”. Undo brings it back (for a day).")
        return (
            [],
            "",
            "",
            list_conversations(query),
            f"Deleted “{conv.title or 'untitled'}”.",
            gr.update(visible=True),
            conv_id,
        )

    @shows_errors
    def undo_delete(gone_id, query):
        if not gone_id:
            raise gr.Error("Nothing to undo.")
        conv = chat.log.restore(gone_id)
        if not conv.readable:  # an admin restored another user's conversation: it is not shown
            gr.Info(f"Restored {conv.title}.")
            return [], "", "", list_conversations(query), f"Restored {conv.title}.", gr.update(visible=False), ""
        return (
            render(conv.id),
            conv.id,
            conv.title,
            list_conversations(query, conv.id),
            f"Restored “{conv.title or 'untitled'}”.",
            gr.update(visible=False),
            "",
        )

    def list_models():
        return gr.update(choices=chat.models(), value=chat.default_model())

    def follow_open(conv_id, query):
        """The open conversation changed (a new chat got its first message, or one was opened):
        the list shows it at once, highlighted, the title box holds its title, and the model
        picker moves to the model of its latest reply (so carrying on keeps that model)."""
        conv_id = (conv_id or "").strip()
        try:
            conv = chat.log.get(conv_id) if conv_id else None
        except TailorError:
            conv = None
        replies = [m for m in conv.messages if m.role == "assistant"] if conv else []
        replies = [m for m in replies if not m.source.startswith("import:")]
        last_model = (replies[-1].adapter or "base") if replies else None
        picked = gr.update(value=last_model) if last_model in chat.models() else gr.update()
        return list_conversations(query, conv_id), conv.title if conv else "", picked

    send_inputs = [message, conversation_id, model, system_prompt, temperature, top_p, max_new_tokens, use_docs]
    send_inputs.append(no_source)
    send_outputs = [chatbot, conversation_id, message, status]
    regen_inputs = [conversation_id, model, system_prompt, temperature, top_p, max_new_tokens, use_docs, no_source]
    send_btn.click(send, send_inputs, send_outputs, api_name="send").then(
        list_conversations, [search, conversation_id], [conversations], api_name="refresh_after_send"
    )
    message.submit(send, send_inputs, send_outputs, api_name="send_on_enter").then(
        list_conversations, [search, conversation_id], [conversations], api_name="refresh_after_enter"
    )
    chatbot.retry(regenerate, regen_inputs, send_outputs, api_name="regenerate")
    stop_btn.click(stop, [conversation_id], [status], api_name="stop", queue=False)
    conversation_id.change(
        follow_open, [conversation_id, search], [conversations, title, model], api_name="conversation_changed"
    )
    started = new_btn.click(new_chat, None, [chatbot, conversation_id, status, title], api_name="new_chat")
    search.change(list_conversations, [search, conversation_id], [conversations], api_name="search_conversations")
    refresh_btn = gr.Button("Refresh list", size="sm", visible=False)
    refresh_btn.click(list_conversations, [search, conversation_id], [conversations], api_name="list_conversations")
    opened = [chatbot, conversation_id, system_prompt, status, use_docs]
    picked = conversations.input(open_conversation, [conversations], opened, api_name="pick_conversation")
    open_btn_hidden = gr.Button(visible=False)
    open_btn_hidden.click(open_conversation, [conversation_id], opened, api_name="open_conversation")
    rename_btn.click(rename, [conversation_id, title, search], [title, conversations, status], api_name="rename_chat")
    title.submit(rename, [conversation_id, title, search], [title, conversations, status], api_name="rename_on_enter")
    delete_btn.click(
        delete,
        [conversation_id, search],
        [chatbot, conversation_id, title, conversations, status, undo_btn, deleted_id],
        api_name="delete_chat",
    )
    restored = undo_btn.click(
        undo_delete,
        [deleted_id, search],
        [chatbot, conversation_id, title, conversations, status, undo_btn, deleted_id],
        api_name="undo_delete_chat",
    )
    imported.done.success(list_conversations, [search, conversation_id], [conversations], api_name="chat_import_after")
    refresh_models = gr.Button("Refresh models", size="sm", visible=False)
    refresh_models.click(list_models, None, [model], api_name="list_models")

    return ChatTab(
        chatbot=chatbot,
        conversation_id=conversation_id,
        model=model,
        status=status,
        conversations=conversations,
        search=search,
        title=title,
        system_prompt=system_prompt,
        use_docs=use_docs,
        sidebar=sidebar,
        show_saved=show_saved,
        opened=[picked, started, restored],
        list_models=list_models,
        list_conversations=list_conversations,
        render=render,
    )


# Runs once when the page loads (the js of gr.mount_gradio_app):
# - Esc stops the reply being written (Enter sends and Shift+Enter starts a new line: the
#   message box's own behaviour).
# - Copy on a reply copies the reply alone: Gradio copies every message of a bubble, and a
#   reply's bubble starts with its label (chat_display.py), so the label and sources would come
#   along. After Gradio has written the clipboard, the reply's own text replaces it.
# - On a phone-wide screen the conversation list starts folded away, so the chat shows first
#   (its toggle opens it).
NARROW_PX = 768
CHAT_JS = f"""
() => {{
  document.addEventListener('keydown', (event) => {{
    if (event.key !== 'Escape') return;
    const stop = document.querySelector('#{STOP_ID}');
    if (stop && stop.offsetParent !== null) stop.click();
  }});
  document.addEventListener('click', (event) => {{
    const button = event.target.closest('#tailor-chatbot button[aria-label="Copy message"]');
    const bar = button && button.closest('.message-buttons');
    const row = bar && bar.previousElementSibling;
    if (!row || !row.querySelector('.thought')) return;
    const parts = [...row.querySelectorAll('.message')].filter((m) => !m.closest('.thought'));
    const text = parts.map((m) => m.innerText).join('\\n\\n').trim();
    if (text) setTimeout(() => navigator.clipboard.writeText(text).catch(() => {{}}), 100);
  }}, true);
  if (window.innerWidth < {NARROW_PX}) {{
    let tries = 0;
    const fold = () => {{
      const sidebar = document.querySelector('.sidebar.open');
      const toggle = sidebar && sidebar.querySelector('.toggle-button');
      if (toggle) toggle.click();
      else if (tries++ < 50) setTimeout(fold, 100);
    }};
    fold();
  }}
}}
"""
