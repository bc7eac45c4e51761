"""What the chatbot shows for a stored conversation (gradio-free, so it is easy to test).

Every assistant reply is shown as two chatbot messages that Gradio draws in one bubble:

1. a collapsed header (a message with `metadata.title`): who wrote the reply (the base model, an
   adapter, or the model an imported chat came from), its figures, and what was saved from it;
   clicking it opens the reply's sources, each with its supporting sentence highlighted;
2. the reply's own text (the user's correction, once edited in place), nothing appended, so
   that editing it with the chatbot's pencil edits exactly the reply.

The header comes first because Gradio reports an edit of a bubble as an edit of the bubble's
*last* message: with the text last, the edited value is the reply. A like reports the bubble's
first message. `stored_message_at` maps any shown index back to the stored message, whichever
part of the bubble an event names."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from assistant.conversations import StoredMessage

from .knowledge_format import citations_markdown

Note = Callable[[StoredMessage], str]  # extra words for a reply's header ("✏️ example 12")


def writer(m: StoredMessage) -> str:
    """Who wrote a reply: an adapter or full checkpoint name, "base", or an imported chat's model."""
    if m.source.startswith("import:"):
        return f"{m.model or 'unknown model'} (imported from {m.source.split(':', 1)[1]})"
    return m.adapter or "base"


def reply_header(m: StoredMessage, note: str = "") -> str:
    parts = [writer(m)]
    if m.completion_tokens:
        parts.append(f"{m.completion_tokens} tokens")
    if m.latency_ms:
        parts.append(f"{m.latency_ms / 1000:.1f} s")
    if m.finish_reason == "no_source":
        parts.append("no source found")
    elif m.finish_reason and m.finish_reason not in ("stop", "eos"):
        parts.append(f"ended: {m.finish_reason}")
    passages = (m.retrieval or {}).get("passages") or []
    if passages:
        abstained = (m.retrieval or {}).get("abstained")
        parts.append(f"{len(passages)} closest passages" if abstained else f"📚 {len(passages)} sources")
    if m.edited_content is not None:
        parts.append("✏️ edited by you")
    if m.rating:
        parts.append("👍" if m.rating > 0 else "👎")
    if note:
        parts.append(note)
    return " · ".join(parts)


def _header(title: str, body: str, pending: bool = False) -> dict:
    return {
        "role": "assistant",
        "content": body,
        "metadata": {"title": title, "status": "pending" if pending else "done"},
    }


def chat_messages(messages: Sequence[StoredMessage], note: Note | None = None) -> list[dict]:
    """The chatbot's value for a conversation's stored messages (system prompts are shown elsewhere)."""
    out: list[dict] = []
    for m in messages:
        if m.role == "user":
            out.append({"role": "user", "content": m.content})
        elif m.role == "assistant":
            out.append(_header(reply_header(m, note(m) if note else ""), citations_markdown(m.retrieval)))
            out.append({"role": "assistant", "content": m.shown})
    return out


def with_pending_reply(shown: list[dict], label: str, partial: str) -> list[dict]:
    """`shown` plus the reply being written (its header says so, with Gradio's spinner)."""
    return shown + [_header(f"{label} · writing…", "", pending=True), {"role": "assistant", "content": partial}]


def stored_message_at(messages: Sequence[StoredMessage], index: int) -> StoredMessage | None:
    """The stored message behind the chatbot message at `index` of chat_messages(messages):
    a reply's header and text both map to the reply. None when out of range."""
    found = part_at(messages, index)
    return found[0] if found else None


def part_at(messages: Sequence[StoredMessage], index: int) -> tuple[StoredMessage, str] | None:
    """(stored message, which part) for the chatbot message at `index`: "user", or a reply's
    "header" or "text". Gradio's edit of a bubble sends an event for its header too (with the
    header's own text), which the edit handler must tell apart from an edit of the reply."""
    position = 0
    for m in messages:
        if m.role == "user":
            if index == position:
                return m, "user"
            position += 1
        elif m.role == "assistant":
            if index in (position, position + 1):
                return m, "header" if index == position else "text"
            position += 2
    return None
