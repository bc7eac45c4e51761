"""Training examples from the chat: an assistant reply (as it was, or as the user edited it)
with the conversation that led to it."""

from __future__ import annotations

import unicodedata

from assistant.conversations import ConversationLog
from assistant.errors import ValidationError

from .example import Example, make_example


def example_from_message(
    conversation_log: ConversationLog,
    message_id: int,
    edited_text: str | None = None,
    *,
    label: str | None = None,
    tags=None,
) -> Example:
    """An example from an assistant message: the conversation up to that reply (system
    prompt, earlier turns, the user turn it answered), the reply or `edited_text` as the
    answer, the passages it was grounded in, and where it came from."""
    msg = conversation_log.message(int(message_id))
    if msg.role != "assistant":
        raise ValidationError(f"message {message_id} is a {msg.role} message; pick an assistant reply")
    conv = conversation_log.get(msg.conversation_id)
    before = [m for m in conv.messages if m.id < msg.id and m.role in ("user", "assistant")]
    if not before or before[-1].role != "user":
        raise ValidationError(f"message {message_id} does not answer a user message")
    answer = msg.content
    edited = False
    if edited_text is not None:
        edited_text = unicodedata.normalize("NFC", edited_text).strip()
        if not edited_text:
            raise ValidationError("the edited reply is empty")
        edited = edited_text != msg.content.strip()
        answer = edited_text
    if not answer.strip():
        raise ValidationError("the reply is empty; edit it into the answer you want before saving")
    messages = [{"role": "system", "content": conv.system_prompt}] if conv.system_prompt.strip() else []
    messages += [m.as_chat() for m in before] + [{"role": "assistant", "content": answer}]
    passages = None
    if msg.retrieval and not msg.retrieval.get("abstained"):
        passages = msg.retrieval.get("passages") or None
    provenance = {
        "conversation_id": conv.id,
        "message_id": msg.id,
        "message_time": msg.created_at,
        "edited": edited,
        "model": msg.model,
        "adapter": msg.adapter,
        "rating": msg.rating,
    }
    if edited:
        provenance["original_text"] = msg.content
    return make_example(messages, passages=passages, label=label, tags=tags, source="chat", provenance=provenance)
