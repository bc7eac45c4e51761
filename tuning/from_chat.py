"""Training data from the chat: an assistant reply (as it was, or as the user edited it)
with the conversation that led to it, and the preference pairs the chat's signals make.

Pairs come from two signals:
- an edit: the user rewrote a reply, so the edit is *chosen* and the original *rejected*;
- ratings: two replies to the same prompt (same system prompt, same earlier turns, same user
  message; in one conversation or two), one rated 👍 and one 👎. The pair's prompt is the
  👍 reply's (its retrieved passages too, when they differ: the prompt the good reply saw).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from assistant.conversations import Conversation, ConversationLog, StoredMessage
from assistant.errors import ValidationError

from .example import Example, make_example, normalised_text


@dataclass
class ReplyContext:
    """An assistant reply with everything before it: what a training example is made of."""

    message: StoredMessage
    conversation: Conversation
    prompt: list[dict]  # system prompt (when set), earlier turns, the user turn it answered
    passages: list[dict] | None

    def key(self) -> tuple:
        """Two replies answer the same prompt when these are equal."""
        return tuple((m["role"], normalised_text(m["content"])) for m in self.prompt)


def reply_context(conversation_log: ConversationLog, message_id: int) -> ReplyContext:
    msg = conversation_log.message(int(message_id))
    if msg.role != "assistant":
        raise ValidationError(f"message {message_id} is a {msg.role} message; pick an assistant reply")
    conv = conversation_log.get(msg.conversation_id)
    before = [m for m in conv.messages if m.id < msg.id and m.role in ("user", "assistant")]
    if not before or before[-1].role != "user":
        raise ValidationError(f"message {message_id} does not answer a user message")
    prompt = [{"role": "system", "content": conv.system_prompt}] if conv.system_prompt.strip() else []
    prompt += [m.as_chat() for m in before]
    passages = None
    if msg.retrieval and not msg.retrieval.get("abstained"):
        passages = msg.retrieval.get("passages") or None
    return ReplyContext(msg, conv, prompt, passages)


def _provenance(ctx: ReplyContext) -> dict:
    msg = ctx.message
    return {
        "conversation_id": ctx.conversation.id,
        "message_id": msg.id,
        "message_time": msg.created_at,
        "model": msg.model,
        "adapter": msg.adapter,
        "rating": msg.rating,
    }


def _edited_text(text: str) -> str:
    text = unicodedata.normalize("NFC", text).strip()
    if not text:
        raise ValidationError("the edited reply is empty")
    return text


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
    ctx = reply_context(conversation_log, message_id)
    msg = ctx.message
    answer = msg.content
    edited = False
    if edited_text is not None:
        edited_text = _edited_text(edited_text)
        edited = edited_text != msg.content.strip()
        answer = edited_text
    if not answer.strip():
        raise ValidationError("the reply is empty; edit it into the answer you want before saving")
    provenance = {**_provenance(ctx), "edited": edited}
    if edited:
        provenance["original_text"] = msg.content
    return make_example(
        ctx.prompt + [{"role": "assistant", "content": answer}],
        passages=ctx.passages,
        label=label,
        tags=tags,
        source="chat",
        provenance=provenance,
    )


def pair_from_edit(
    conversation_log: ConversationLog, message_id: int, edited_text: str, *, label: str | None = None, tags=None
) -> Example | None:
    """The preference pair an edit makes (chosen = the edit, rejected = the original reply),
    or None when the edit leaves the reply as it was (or the original is empty)."""
    ctx = reply_context(conversation_log, message_id)
    edited_text = _edited_text(edited_text)
    original = ctx.message.content
    if not normalised_text(original) or normalised_text(edited_text) == normalised_text(original):
        return None
    return make_example(
        ctx.prompt + [{"role": "assistant", "content": edited_text}],
        passages=ctx.passages,
        label=label,
        tags=tags,
        source="chat",
        provenance={**_provenance(ctx), "pair_from": "edit", "edited": True},
        rejected=original,
    )


def pairs_from_rating(conversation_log: ConversationLog, message_id: int) -> list[Example]:
    """The preference pairs a rated reply makes with the oppositely rated replies to the same
    prompt (empty when the reply is not rated or has no such counterpart)."""
    ctx = reply_context(conversation_log, message_id)
    rating = ctx.message.rating
    if rating not in (1, -1):
        return []
    user_text = ctx.prompt[-1]["content"]
    key = ctx.key()
    out = []
    for other in conversation_log.rated_replies_to(user_text):
        if other.id == ctx.message.id or other.rating != -rating or not other.content.strip():
            continue
        other_ctx = reply_context(conversation_log, other.id)
        if other_ctx.key() != key:
            continue
        good, bad = (ctx, other_ctx) if rating == 1 else (other_ctx, ctx)
        if normalised_text(good.message.content) == normalised_text(bad.message.content):
            continue  # the same text rated both ways: no preference to learn
        out.append(
            make_example(
                good.prompt + [{"role": "assistant", "content": good.message.content}],
                passages=good.passages,
                source="chat",
                provenance={
                    **_provenance(good),
                    "pair_from": "ratings",
                    "edited": False,
                    "rejected_message_id": bad.message.id,
                    "rejected_conversation_id": bad.conversation.id,
                    "rejected_model": bad.message.model,
                    "rejected_adapter": bad.message.adapter,
                },
                rejected=bad.message.content,
            )
        )
    return out
