"""Records of the file formats, to and from examples: one JSON object (or CSV row, or
datasets row) per example.

Read (`record_to_example`, the shape detected per record):
- prompt/completion: {"prompt": str, "completion": str} (also TRL's conversational form
  where prompt and completion are lists of messages);
- chat: {"messages": [...]} (TRL and the OpenAI fine-tuning API);
- grounding: {"question", "passages": [{"source", "text"}], "answer"};
- preference (TRL's): {"prompt", "chosen", "rejected"}, as strings or as lists of messages
  (conversational), or with the prompt implicit: chosen and rejected are whole
  conversations that differ only in their last (assistant) message.
Optional fields on any record: system, label, tags, passages.

Written (`export_record`): "messages" or "prompt-completion" for examples, "preference" for
preference pairs (and "hf", a datasets folder, tuning/dataset_export.py).
"""

from __future__ import annotations

from assistant.errors import ValidationError

from .example import Example, chat_example, make_example, render_messages

FORMATS = ("messages", "prompt-completion", "preference", "hf")


def _common(rec: dict) -> dict:
    out: dict[str, object] = {}
    if "label" in rec and rec["label"] not in (None, ""):
        out["label"] = str(rec["label"])
    if rec.get("tags"):
        tags = rec["tags"]
        if not isinstance(tags, (list, str)):
            raise ValidationError("'tags' must be a list or a comma-separated string")
        out["tags"] = tags
    return out


def _text(value, name: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"'{name}' must be text, got {type(value).__name__}")
    if not value.strip():
        raise ValidationError(f"'{name}' is empty")
    return value


def record_to_example(rec, source: str = "import") -> tuple[str, Example]:
    """Detect the shape of one record and build the example. Raises ValidationError."""
    if not isinstance(rec, dict):
        raise ValidationError(f"expected a JSON object, got {type(rec).__name__}")
    common = _common(rec)
    system = rec.get("system") or ""
    if not isinstance(system, str):
        raise ValidationError("'system' must be text")
    passages = rec.get("passages") or None
    if "chosen" in rec or "rejected" in rec:
        return "preference", preference_example(rec, system, passages, source, common)
    if "messages" in rec:
        messages = rec["messages"]
        if isinstance(messages, list) and system and not (messages and messages[0].get("role") == "system"):
            messages = [{"role": "system", "content": system}] + messages
        return "messages", make_example(messages, passages=passages, source=source, **common)
    if "prompt" in rec or "completion" in rec:
        prompt, completion = rec.get("prompt"), rec.get("completion")
        if prompt is None or completion is None:
            raise ValidationError("a prompt/completion record needs both 'prompt' and 'completion'")
        if isinstance(prompt, list) or isinstance(completion, list):  # TRL conversational prompt-completion
            if not isinstance(prompt, list) or not isinstance(completion, list):
                raise ValidationError("'prompt' and 'completion' must both be text or both be lists of messages")
            return "prompt-completion", make_example(prompt + completion, passages=passages, source=source, **common)
        return "prompt-completion", chat_example(
            _text(prompt, "prompt"), _text(completion, "completion"), system, passages=passages, source=source, **common
        )
    if "question" in rec and "answer" in rec:
        return "grounding", grounding_example(rec, source=source)
    keys = ", ".join(sorted(rec)[:6]) or "none"
    raise ValidationError(
        f"unknown record shape (fields: {keys}); expected 'messages', 'prompt'+'completion' or 'question'+'answer'"
    )


def _reply(value, name: str) -> tuple[list[dict] | None, str]:
    """A chosen/rejected value: text, one assistant message in a list, or a whole conversation
    (the implicit-prompt form). Returns (the messages before the reply, or None, the reply)."""
    if isinstance(value, str):
        return None, _text(value, name)
    if not isinstance(value, list) or not value or not all(isinstance(m, dict) for m in value):
        raise ValidationError(f"'{name}' must be text or a list of messages")
    last = value[-1]
    if last.get("role") != "assistant":
        raise ValidationError(f"'{name}' must end with an assistant message")
    return [dict(m) for m in value[:-1]], _text(last.get("content"), f"{name}'s assistant message")


def preference_example(rec: dict, system: str, passages, source: str, common: dict) -> Example:
    """TRL's preference record as a pair: the prompt, the chosen reply, the rejected one."""
    if "chosen" not in rec or "rejected" not in rec:
        raise ValidationError("a preference record needs both 'chosen' and 'rejected'")
    chosen_before, chosen = _reply(rec["chosen"], "chosen")
    rejected_before, rejected = _reply(rec["rejected"], "rejected")
    prompt = rec.get("prompt")
    if prompt is None:  # implicit prompt: the conversation both replies continue
        if not chosen_before or chosen_before != rejected_before:
            raise ValidationError(
                "a preference record without 'prompt' needs 'chosen' and 'rejected' to be the same conversation "
                "up to their last message"
            )
        messages = chosen_before
    elif isinstance(prompt, str):
        messages = [{"role": "user", "content": _text(prompt, "prompt")}]
    elif isinstance(prompt, list):
        messages = [dict(m) if isinstance(m, dict) else m for m in prompt]
    else:
        raise ValidationError(f"'prompt' must be text or a list of messages, got {type(prompt).__name__}")
    if prompt is not None and (chosen_before or rejected_before):
        raise ValidationError("with a 'prompt', 'chosen' and 'rejected' hold only the replies")
    if system and not (messages and isinstance(messages[0], dict) and messages[0].get("role") == "system"):
        messages = [{"role": "system", "content": system}] + messages
    return make_example(
        messages + [{"role": "assistant", "content": chosen}],
        passages=passages,
        source=source,
        rejected=rejected,
        **common,
    )


def grounding_example(rec: dict, source: str = "import") -> Example:
    """The demo grounding format: a question, the passages to answer it from, the answer.
    The passages are kept on the example, so training shows them to the model exactly as
    the chat does with retrieval on."""
    passages = rec.get("passages")
    if not isinstance(passages, list) or not passages:
        raise ValidationError("a grounding record needs a non-empty 'passages' list")
    return chat_example(
        _text(rec.get("question"), "question"),
        _text(rec.get("answer"), "answer"),
        rec.get("system") or "",
        passages=passages,
        source=source,
        **_common(rec),
    )


def export_record(ex: Example, fmt: str, rendered: bool = False) -> dict:
    """One example as a record of `fmt`. `rendered` inlines passages into the user turn (what
    the trainer sees) instead of keeping them in a separate field."""
    messages = render_messages(ex) if rendered else ex.messages
    passages = None if rendered else ex.passages
    extra: dict[str, object] = {}
    if ex.label is not None:
        extra["label"] = ex.label
    if ex.tags:
        extra["tags"] = ex.tags
    if passages:
        extra["passages"] = passages
    if fmt == "preference":
        if ex.rejected is None:
            raise ValidationError(
                f"example {ex.id} is not a preference pair; export it as messages or prompt-completion"
            )
        body = [m for m in messages if m["role"] != "system"]
        if len(body) == 2 and messages[0]["role"] != "system":  # one turn, no system prompt: TRL's strings
            return {"prompt": body[0]["content"], "chosen": body[1]["content"], "rejected": ex.rejected, **extra}
        return {
            "prompt": messages[:-1],
            "chosen": messages[-1:],
            "rejected": [{"role": "assistant", "content": ex.rejected}],
            **extra,
        }
    if ex.rejected is not None:
        raise ValidationError(f"example {ex.id} is a preference pair; export pairs with the preference format")
    if fmt == "messages":
        return {"messages": messages, **extra}
    if fmt == "prompt-completion":
        body = [m for m in messages if m["role"] != "system"]
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        if len(body) == 2:  # a single turn: plain strings
            rec = {"prompt": body[0]["content"], "completion": body[1]["content"]}
            if system:
                rec["system"] = system
            return {**rec, **extra}
        return {"prompt": messages[:-1], "completion": messages[-1:], **extra}
    raise ValidationError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
