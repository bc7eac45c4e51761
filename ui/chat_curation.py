"""Curate where you read: the chatbot's own buttons on every reply.

- 👍 / 👎 (and the reasons under the flag: each a 👎 with that reason) rate the reply; a rating
  opposite to another reply's to the same prompt (a regenerated one, say) saves a preference pair.
- ✏️ Edit corrects the reply in place: the conversation goes on from the correction, the
  correction is saved as a training example with its provenance, and, since it changed the
  reply, as a preference pair (chosen = the edit, rejected = what the model said). Editing the
  same reply again replaces what its previous edit saved (undoable in the Dataset tab).

A toast says what was saved, with a link that opens it in the Dataset tab (`?find=#12` on the
page's address: ui/app.py reads it when a page loads), and "Show in the Dataset tab" under the
chat does the same in this page."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from urllib.parse import quote_plus

import gradio as gr

from assistant.conversations import ConversationLog, StoredMessage
from assistant.errors import TailorError, ValidationError
from tuning.curation import Curation

from .chat_display import part_at, stored_message_at
from .chat_tab import FEEDBACK_REASONS, ChatTab
from .errors import shows_errors


@dataclass
class InlineCuration:
    show_saved: gr.Button  # "Show in the Dataset tab": visible once something was saved
    saved_query: gr.State  # the Dataset tab's search for it ("#12 #13")


def saved_note(curation: Curation):
    """A reply label's note on what was saved from it: "saved as example 12 · pair 13"."""

    def note(m: StoredMessage) -> str:
        saved = curation.store.find_by_message(m.id)
        examples = [f"{e.id}" for e in saved if not e.is_pair]
        pairs = [f"{e.id}" for e in saved if e.is_pair]
        words = []
        if examples:
            words.append(f"example {', '.join(examples)}")
        if pairs:
            words.append(f"pair {', '.join(pairs)}")
        return ("saved as " + " · ".join(words)) if words else ""

    return note


def _index(evt) -> int:
    return int(evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index)


def _reply_at(log: ConversationLog, conv_id: str, index: int) -> StoredMessage:
    if not (conv_id or "").strip():
        raise ValidationError("This chat has not been saved yet: send a message first.")
    m = stored_message_at(log.get(conv_id.strip()).messages, index)
    if m is None:
        raise ValidationError("That message is no longer in this chat: open the chat again.")
    return m


def rating_of(liked) -> tuple[int | None, str]:
    """(rating, reason) for the chatbot's feedback value: True/"Like" 👍, False/"Dislike" 👎, a
    reason from FEEDBACK_REASONS 👎 with that reason, None/"" clears the rating."""
    if liked is None or liked == "":
        return None, ""
    if liked is True or liked == "Like":
        return 1, ""
    if liked is False or liked == "Dislike":
        return -1, ""
    if liked in FEEDBACK_REASONS:
        return -1, str(liked)
    raise ValidationError(f"unknown feedback {liked!r}")


def saved_message(example_id: int, pair_id: int | None, pair_note: str = "") -> tuple[str, str]:
    """(the status line, the toast's HTML) for an edit that was saved."""
    ids = f"#{example_id}" + (f" #{pair_id}" if pair_id is not None else "")
    what = f"example {example_id}" + (f" and preference pair {pair_id}" if pair_id is not None else "")
    status = (
        f"✏️ Saved your edit as {what}"
        + (" (chosen: your edit, rejected: the original)" if pair_id is not None else "")
        + f". It is in the Dataset tab (search {ids}).{pair_note}"
    )
    href = "?find=" + quote_plus(ids)
    link = f'<a href="{escape(href)}" target="_blank">open it in the Dataset tab</a>'
    return status, f"Saved your edit as {escape(what)}: {link}.{escape(pair_note)}"


def attach_inline_curation(chat: ChatTab, curation: Curation, log: ConversationLog) -> InlineCuration:
    """Wire the chatbot's like and edit events (call inside the chat tab, after build_chat_tab)."""
    store = curation.store
    show_saved = chat.show_saved
    saved_query = gr.State("")

    @shows_errors
    def like(conv_id, evt: gr.LikeData):
        m = _reply_at(log, conv_id, _index(evt))
        if m.role != "assistant":
            raise ValidationError("Only replies can be rated.")
        rating, reason = rating_of(evt.liked)
        log.set_feedback(m.id, rating, reason)
        made = store.pairs_from_rating(log, m.id) if rating is not None else []
        said = {1: "👍", -1: "👎"}.get(rating, "Rating cleared") if rating is not None else "Rating cleared"
        status = f"{said} on this reply" + (f" ({reason})" if reason else "") + "."
        if made:
            ids = ", ".join(str(p.id) for p in made)
            status += f" With the oppositely rated reply to the same message it makes preference pair {ids}."
            gr.Info(f"Saved preference pair {ids} from your two ratings.")
        return chat.render(m.conversation_id), status

    @shows_errors
    def edit(conv_id, evt: gr.EditData):
        m = _reply_at(log, conv_id, _index(evt))
        found = part_at(log.get(m.conversation_id).messages, _index(evt))
        if found is not None and found[1] == "header":  # the label above the reply: not editable
            return gr.update(), gr.update(), gr.update(), gr.update()
        if m.role != "assistant":
            gr.Warning("Your own messages stay as you sent them: to ask differently, send a new message.")
            return chat.render(m.conversation_id), gr.update(), gr.update(), gr.update()
        text = str(evt.value or "").strip()
        if text == m.shown.strip():
            return chat.render(m.conversation_id), "Nothing changed in that reply.", gr.update(), gr.update()
        earlier = [e.id for e in store.find_by_message(m.id) if e.provenance.get("edited")]
        log.edit_reply(m.id, text)
        example = store.from_message(log, m.id, edited_text=text)
        pair, pair_note = None, ""
        try:
            pair = store.pair_from_edit(log, m.id, text)
        except TailorError as exc:  # the example is saved; say why there is no pair
            pair_note = f" No preference pair: {exc}."
        replaced = [i for i in earlier if i not in {example.id, getattr(pair, "id", None)}]
        if replaced:  # a second edit of the same reply replaces what the first one saved
            store.delete(replaced, description=f"replaced by a new edit of reply {m.id}")
        status, toast = saved_message(example.id, pair.id if pair else None, pair_note)
        gr.Info(toast)
        query = f"#{example.id}" + (f" #{pair.id}" if pair else "")
        return chat.render(m.conversation_id), status, gr.update(visible=True), query

    chat.chatbot.like(like, [chat.conversation_id], [chat.chatbot, chat.status], api_name="curate_like")
    chat.chatbot.edit(
        edit,
        [chat.conversation_id],
        [chat.chatbot, chat.status, show_saved, saved_query],
        api_name="chat_edit_reply",
    )
    return InlineCuration(show_saved=show_saved, saved_query=saved_query)
