"""The two export shapes that assistant/chat_import.py reads, each parsed into an
ImportedConversation (the branch the app last showed, with its times and models).

- ChatGPT's conversations.json: a list of conversations, each a tree of nodes (`mapping`:
  `{id, message: {author: {role}, create_time, content: {content_type, parts}, metadata:
  {model_slug}, recipient} | null, parent, children}`); a regenerated reply or an edited question
  is a second branch. The branch that ends at `current_node` is walked up to the root.
- Open WebUI's export: a list of chat records `{id, title, chat: {models, params: {system},
  history: {messages: {id: {parentId, role, content, timestamp, model}}, currentId}, messages,
  timestamp}, created_at, updated_at}`; the branch ending at `history.currentId`, else
  `chat.messages` in order.

A conversation that breaks its format's shape raises Malformed (with the reason), which the
caller turns into a ValidationError naming the conversation."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from .conversations import ImportedConversation, ImportedMessage
from .db import utcnow
from .errors import ValidationError

_ROLES = ("user", "assistant")
# ChatGPT message kinds that are not the conversation itself (reasoning, the context the app
# added): left out without a note. Other non-text kinds (code, quotes) get one.
_SILENT_KINDS = {"thoughts", "reasoning_recap", "user_editable_context", "model_editable_context"}


class Malformed(Exception):
    """A conversation that is not what its format says; becomes a ValidationError naming it."""


class LeftOut(Counter):
    """What was left out, counted by (noun, detail): ("non-text part", " (image_asset_pointer)")."""

    def lines(self) -> list[str]:
        return [f"left out {n} {noun}{'' if n == 1 else 's'}{detail}" for (noun, detail), n in sorted(self.items())]


def detect_format(top: Any, name: str) -> str:
    first = top[0] if isinstance(top, list) else top
    if isinstance(first, dict):
        if "mapping" in first:
            return "chatgpt"
        chat = first.get("chat")
        if (isinstance(chat, dict) and ("history" in chat or "messages" in chat)) or "history" in first:
            return "openwebui"
        keys = ", ".join(sorted(map(str, first))[:12]) or "none"
        what = "the top level is an object" if first is top else "its first item is an object"
        raise ValidationError(
            f"{name} is not a ChatGPT or Open WebUI export: {what} with keys {keys} (a ChatGPT conversation "
            "has a 'mapping', an Open WebUI chat a 'chat' with 'history')"
        )
    what = f"its first item is {kind_of(first)}" if isinstance(top, list) else f"the top level is {kind_of(top)}"
    raise ValidationError(f"{name} is not a ChatGPT or Open WebUI export: {what}, not a conversation")


def kind_of(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true or false", type(None): "null"}.get(
        type(value), "a number"
    )


def _iso(value: Any) -> str | None:
    """An export's time (epoch seconds, milliseconds or microseconds, or ISO text) as the log's
    ISO-8601 UTC; None for a missing or unreadable one."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return None
            parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
            return parsed.astimezone(timezone.utc).isoformat(timespec="microseconds")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value <= 0:
        return None
    seconds = float(value)
    while seconds > 1e11:  # milliseconds (Open WebUI's chat.timestamp), microseconds, nanoseconds
        seconds /= 1000
    try:
        return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="microseconds")
    except (OverflowError, OSError, ValueError):
        return None


def _branch(nodes: dict, leaf: str, parent_of: Callable[[dict], Any], what: str) -> list[str]:
    """The ids from the root down to `leaf`, following each node's parent."""
    chain: list[str] = []
    seen: set[str] = set()
    node_id: Any = leaf
    while node_id is not None:
        if not isinstance(node_id, str) or node_id not in nodes:
            below = f" ({what} {chain[-1]}'s parent)" if chain else ""
            raise Malformed(f"{what} {node_id}{below} is not in the conversation")
        if node_id in seen:
            raise Malformed(f"{what} {node_id} is its own ancestor (the branch loops)")
        seen.add(node_id)
        chain.append(node_id)
        node = nodes[node_id]
        if not isinstance(node, dict):
            raise Malformed(f"{what} {node_id} is {kind_of(node)}, not an object")
        node_id = parent_of(node)
    return chain[::-1]


def _finish(
    raw: dict,
    messages: list[ImportedMessage],
    *,
    prefix: str,
    ident: Any,
    title: Any,
    created: str | None,
    updated: str | None,
    model: str | None,
    system: str = "",
) -> ImportedConversation:
    """Merge same-role neighbours, fill missing times, and name the conversation."""
    merged: list[ImportedMessage] = []
    for m in messages:
        if merged and merged[-1].role == m.role:
            last = merged[-1]
            last.content += "\n\n" + m.content
            last.model = m.model or last.model
            last.created_at = last.created_at or m.created_at
        else:
            merged.append(m)
    known = [m.created_at for m in merged if m.created_at]
    created = created or (known[0] if known else None) or updated or utcnow()
    updated = updated or (known[-1] if known else None) or created
    previous = created
    for m in merged:
        m.created_at = previous = m.created_at or previous
    if not isinstance(ident, (str, int)) or isinstance(ident, bool) or str(ident) == "":
        # No id in the export: the content stands for it, so re-importing still adds nothing.
        ident = "sha1-" + hashlib.sha1(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()
    model = model or next((m.model for m in reversed(merged) if m.model), None)
    return ImportedConversation(
        external_id=f"{prefix}:{ident}",
        title=" ".join(title.split())[:200] if isinstance(title, str) else "",
        created_at=created,
        updated_at=updated,
        messages=merged,
        model=model,
        system_prompt=system,
    )


def _text_parts(parts: list, notes: LeftOut) -> str:
    """The text of a message's parts: strings, and the text of voice transcriptions; the rest
    (images, files) is left out with a note."""
    texts = []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and isinstance(part.get("text"), str):
            texts.append(part["text"])  # audio_transcription, or OpenAI-style {"type": "text"}
        else:
            kind = part.get("content_type") or part.get("type") if isinstance(part, dict) else None
            notes["non-text part", f" ({kind or kind_of(part)})"] += 1
    return "".join(texts) if all(isinstance(p, str) for p in parts) else "\n".join(texts)


# ---- ChatGPT ----------------------------------------------------------------------------------
def parse_chatgpt(conv: dict, notes: LeftOut) -> ImportedConversation:
    mapping = conv.get("mapping")
    if not isinstance(mapping, dict):
        raise Malformed(f"it has no 'mapping' of messages (a ChatGPT conversation has one; found {kind_of(mapping)})")
    leaf = conv.get("current_node")
    if leaf is None:  # not in every export: the newest leaf is what the app showed last
        leaves = [k for k, n in mapping.items() if isinstance(n, dict) and not n.get("children")]
        leaf = max(leaves, key=lambda k: _chatgpt_time(mapping[k]), default=None)
        if leaf is None:
            return _finish(conv, [], prefix="chatgpt", ident=None, title=None, created=None, updated=None, model=None)
    default_model = conv.get("default_model_slug") if isinstance(conv.get("default_model_slug"), str) else None
    messages: list[ImportedMessage] = []
    system = ""
    for node_id in _branch(mapping, leaf, lambda n: n.get("parent"), "node"):
        msg = mapping[node_id].get("message")
        if msg is None:
            continue  # the root
        if not isinstance(msg, dict):
            raise Malformed(f"node {node_id}'s message is {kind_of(msg)}, not an object")
        mid = msg.get("id") or node_id
        author = msg.get("author")
        role = author.get("role") if isinstance(author, dict) else None
        if not isinstance(role, str):
            raise Malformed(f"message {mid} has no author role")
        content = msg.get("content")
        if not isinstance(content, dict):
            raise Malformed(f"message {mid} has no content")
        metadata = msg.get("metadata")
        metadata = metadata if isinstance(metadata, dict) else {}
        if metadata.get("is_visually_hidden_from_conversation") or msg.get("recipient", "all") != "all":
            continue  # custom instructions, memory, a call to a tool
        if role not in _ROLES and role != "system":
            continue  # a tool's output
        kind = content.get("content_type")
        if kind not in ("text", "multimodal_text"):
            if role in _ROLES and kind not in _SILENT_KINDS:
                notes["message", f" of kind {kind or '(none)'}"] += 1
            continue
        parts = content.get("parts")
        if not isinstance(parts, list):
            raise Malformed(f"message {mid} has no text (its content has no 'parts' list)")
        text = _text_parts(parts, notes).strip()
        if not text:
            continue
        if role == "system":
            system = system or text
            continue
        model = metadata.get("model_slug") if role == "assistant" else None
        model = model if isinstance(model, str) and model else (default_model if role == "assistant" else None)
        messages.append(ImportedMessage(role, text, _iso(msg.get("create_time")) or "", model))
    return _finish(
        conv,
        messages,
        prefix="chatgpt",
        ident=conv.get("id") or conv.get("conversation_id"),
        title=conv.get("title"),
        created=_iso(conv.get("create_time")),
        updated=_iso(conv.get("update_time")),
        model=None,
        system=system,
    )


def _chatgpt_time(node: dict) -> float:
    msg = node.get("message")
    value = msg.get("create_time") if isinstance(msg, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


# ---- Open WebUI -------------------------------------------------------------------------------
def parse_openwebui(record: dict, notes: LeftOut) -> ImportedConversation:
    chat = record.get("chat", record)  # a record {id, chat, ...}, or the chat object alone
    if not isinstance(chat, dict):
        raise Malformed(f"its 'chat' is {kind_of(chat)}, not an object")
    history = chat.get("history")
    if history is None and "messages" not in chat:
        raise Malformed("it has no 'chat' with a 'history' or 'messages' (an Open WebUI chat has them)")
    nodes = history.get("messages") if isinstance(history, dict) else None
    if history is not None and not isinstance(nodes, dict):
        raise Malformed("its history has no 'messages' object")
    current = history.get("currentId") if isinstance(history, dict) else None
    if isinstance(nodes, dict) and (current is not None or not chat.get("messages")):
        if current is None:
            raw: list = []
        else:
            raw = [(i, nodes[i]) for i in _branch(nodes, current, lambda n: n.get("parentId"), "message")]
    else:
        listed = chat.get("messages", [])
        if not isinstance(listed, list):
            raise Malformed(f"its 'messages' is {kind_of(listed)}, not a list")
        raw = [(m.get("id") if isinstance(m, dict) else None, m) for m in listed]
    chat_models = [m for m in chat.get("models") or [] if isinstance(m, str) and m]
    messages: list[ImportedMessage] = []
    for n, (mid, msg) in enumerate(raw, 1):
        label = mid if isinstance(mid, str) and mid else f"#{n}"
        if not isinstance(msg, dict):
            raise Malformed(f"message {label} is {kind_of(msg)}, not an object")
        role = msg.get("role")
        if not isinstance(role, str):
            raise Malformed(f"message {label} has no role")
        if "content" not in msg or msg["content"] is None:
            raise Malformed(f"message {label} has no content")
        content = msg["content"]
        if isinstance(content, list):
            content = _text_parts(content, notes)
        if not isinstance(content, str):
            raise Malformed(f"message {label}'s content is {kind_of(content)}, not text")
        if role not in _ROLES or not content.strip():
            continue
        model = None
        if role == "assistant":
            own = msg.get("model")
            if not (isinstance(own, str) and own):
                listed_models = msg.get("models")
                own = listed_models[0] if isinstance(listed_models, list) and listed_models else None
            model = own if isinstance(own, str) and own else (chat_models[0] if chat_models else None)
        messages.append(ImportedMessage(role, content.strip(), _iso(msg.get("timestamp")) or "", model))
    params = chat.get("params")
    system = params.get("system") if isinstance(params, dict) else None
    system = system if isinstance(system, str) else chat.get("system")
    outer = record if "chat" in record else {}
    return _finish(
        record,
        messages,
        prefix="openwebui",
        ident=outer.get("id") or chat.get("id"),
        title=record.get("title") or chat.get("title"),
        created=_iso(outer.get("created_at")) or _iso(chat.get("timestamp")),
        updated=_iso(outer.get("updated_at")),
        model=chat_models[0] if chat_models else None,
        system=system.strip() if isinstance(system, str) else "",
    )
