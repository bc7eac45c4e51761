"""The curation panel under the chat, for work the reply's own buttons (ui/chat_curation.py)
do not cover: rate a reply with a reason of your own, or save it as it is or edited, with tags
and a label, as a training example.

Both signals also make preference pairs (tuning/from_chat.py): an edit that changes the reply
is saved as a pair too (chosen = the edit, rejected = the original), and a rating that meets an
opposite rating on another reply to the same prompt makes a pair of the two."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from assistant.conversations import ConversationLog, StoredMessage
from assistant.errors import TailorError
from tuning.curation import Curation

from .chat_tab import ChatTab
from .dataset_format import short
from .errors import shows_errors

RATINGS = {1: "👍", -1: "👎"}


@dataclass
class CurationPanel:
    reply: gr.Dropdown  # the assistant reply being curated (its message id)
    edited: gr.Textbox  # the ideal answer
    status: gr.Markdown


def attach_curation(chat: ChatTab, curation: Curation, log: ConversationLog) -> CurationPanel:
    """Build the panel; call inside the chat tab, after build_chat_tab (`chat` is what that
    returned): the panel follows the chat's conversation and its chatbot's thumbs."""
    store = curation.store
    with gr.Accordion("Curate a reply: rate it, or save it (edited) as a training example", open=False):
        with gr.Row():
            reply = gr.Dropdown(label="Assistant reply", choices=[], value=None, scale=4, allow_custom_value=True)
            load_btn = gr.Button("Load replies", size="sm", scale=1)
        with gr.Row():
            up_btn = gr.Button("👍 Good", scale=1)
            down_btn = gr.Button("👎 Bad", scale=1)
            reason = gr.Textbox(label="Reason (optional)", max_lines=1, scale=4)
        edited = gr.Textbox(label="Ideal answer (edit the reply into what it should have said)", lines=4)
        with gr.Row():
            cur_tags = gr.Textbox(label="Tags", placeholder="comma,separated", max_lines=1)
            cur_label = gr.Textbox(label="Label", max_lines=1)
        with gr.Row():
            save_btn = gr.Button("Save reply as example")
            save_edit_btn = gr.Button("Save edited reply", variant="primary")
        cur_status = gr.Markdown("")

    def reply_state(m: StoredMessage, note: str = "") -> str:
        saved = store.find_by_message(m.id)
        examples = [str(e.id) for e in saved if not e.is_pair]
        pairs = [str(e.id) for e in saved if e.is_pair]
        rating = RATINGS.get(m.rating, "not rated")
        return (
            f"Reply #{m.id}: {rating}"
            + (f" · saved as example {', '.join(examples)}" if examples else "")
            + (f" · chosen in preference pair {', '.join(pairs)}" if pairs else "")
            + note
        )

    def rating_pairs(message_id: int) -> str:
        """Pairs with oppositely rated replies to the same prompt, saved now; a note for the user."""
        made = store.pairs_from_rating(log, message_id)
        if not made:
            return ""
        ids = ", ".join(str(p.id) for p in made)
        return (
            f" · saved preference pair {ids} (with the oppositely rated reply to this prompt; "
            "Dataset tab, kind: preference pairs)"
        )

    def load(conv_id):
        conv_id = (conv_id or "").strip()
        empty = gr.update(choices=[], value=None), "", ""
        if not conv_id:
            return empty
        try:
            replies = [m for m in log.get(conv_id).messages if m.role == "assistant"]
        except TailorError:  # a conversation id typed by hand that does not exist: show nothing
            return empty
        if not replies:
            return empty
        choices = [(f"#{m.id} {short(m.content, 70)}", m.id) for m in replies]
        last = replies[-1]
        return gr.update(choices=choices, value=last.id), last.content, reply_state(last)

    @shows_errors(also=(ValueError,))
    def pick(msg_id):
        if msg_id in (None, ""):
            return "", ""
        m = log.message(int(msg_id))
        return m.content, reply_state(m)

    @shows_errors(also=(ValueError,))
    def rate(msg_id, why, rating):
        if msg_id in (None, ""):
            raise gr.Error("Pick a reply first.")
        log.set_feedback(int(msg_id), rating, why or "")
        return reply_state(log.message(int(msg_id)), rating_pairs(int(msg_id)))

    @shows_errors(also=(ValueError,))
    def save(msg_id, text, tag_text, lab, use_edit):
        if msg_id in (None, ""):
            raise gr.Error("Pick a reply first (press “Load replies” after chatting).")
        ex = store.from_message(
            log, int(msg_id), edited_text=text if use_edit else None, label=lab or None, tags=tag_text or None
        )
        kind = "edited reply" if ex.edited else "reply"
        pair, pair_note = None, ""
        if use_edit and ex.edited:
            try:
                pair = store.pair_from_edit(log, int(msg_id), text)
            except TailorError as exc:  # the example is saved; say why the pair is not
                pair_note = f" (no preference pair: {exc})"
        return (
            f"Saved the {kind} as example {ex.id} ({ex.split}) · from conversation {ex.conversation_id}, "
            f"message {ex.message_id}"
            + (f", and as preference pair {pair.id} (chosen: your edit, rejected: the original)" if pair else "")
            + f". It is in the Dataset tab.{pair_note}"
        )

    conv = chat.conversation_id
    load_btn.click(load, [conv], [reply, edited, cur_status], api_name="curate_load_replies")
    # The chat's status line changes when a reply has been stored (and when a conversation
    # opens), so the reply list follows the chat without touching the chat tab's own events.
    chat.status.change(load, [conv], [reply, edited, cur_status], api_name="curate_follow_chat")
    reply.input(pick, [reply], [edited, cur_status], api_name="curate_pick_reply")
    up_btn.click(lambda m, r: rate(m, r, 1), [reply, reason], [cur_status], api_name="curate_thumbs_up")
    down_btn.click(lambda m, r: rate(m, r, -1), [reply, reason], [cur_status], api_name="curate_thumbs_down")
    save_btn.click(
        lambda m, t, tg, lb: save(m, t, tg, lb, False),
        [reply, edited, cur_tags, cur_label],
        [cur_status],
        api_name="curate_save_reply",
    )
    save_edit_btn.click(
        lambda m, t, tg, lb: save(m, t, tg, lb, True),
        [reply, edited, cur_tags, cur_label],
        [cur_status],
        api_name="curate_save_edited",
    )
    return CurationPanel(reply=reply, edited=edited, status=cur_status)
