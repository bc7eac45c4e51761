"""Examples written from forms: the Dataset tab's editor (system prompt, final user message,
answer, label, tags, status) and a reply from elsewhere (an evaluation run's) saved as a
training example. The workflows live here so that the UI only reads widgets and formats."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from assistant.errors import ValidationError

from .example import Example, make_example

if TYPE_CHECKING:
    from .example_store import ExampleStore

FROM_EVAL_TAG = "from-eval"


def edited_messages(old: list[dict], system: str, user: str, answer: str) -> list[dict]:
    """`old` with its final user turn and answer replaced and its system prompt set (or
    dropped when `system` is blank); the earlier turns of the conversation stay."""
    messages = [dict(m) for m in old]
    if messages[0]["role"] == "system":
        messages = messages[1:]
    messages[-2]["content"], messages[-1]["content"] = user or "", answer or ""
    if (system or "").strip():
        messages = [{"role": "system", "content": system.strip()}] + messages
    return messages


def new_messages(system: str, user: str, answer: str) -> list[dict]:
    """A one-turn chat: the system prompt (when not blank), the user message, the answer."""
    return ([{"role": "system", "content": system.strip()}] if (system or "").strip() else []) + [
        {"role": "user", "content": user},
        {"role": "assistant", "content": answer},
    ]


def save_from_editor(
    store: ExampleStore,
    example_id: int | str | None,
    *,
    system: str,
    user: str,
    answer: str,
    label: str | None,
    tags,
    status: str | None,
    rejected: str | None = None,
) -> tuple[Example, bool]:
    """Save the editor's fields: change example `example_id` (undoable), or add a new manual
    example when there is none. Returns the example and whether it was added. `rejected`: a
    preference pair's rejected reply; blank makes (or keeps) an ordinary example, and None
    leaves an existing example's as it is."""
    rejected_reply = ... if rejected is None else ((rejected or "").strip() or None)
    if str(example_id or "").strip():
        assert example_id is not None  # the test above excludes None
        old = store.get(int(example_id))
        assert old.id is not None  # examples read from the store have an id
        messages = edited_messages(old.messages, system, user, answer)
        if not (user or "").strip() or not (answer or "").strip():
            raise ValidationError("the user message and the answer must not be empty")
        return (
            store.update(
                old.id, messages=messages, label=label or None, tags=tags or [], status=status, rejected=rejected_reply
            ),
            False,
        )
    if not (user or "").strip() or not (answer or "").strip():
        raise ValidationError("write a user message and an answer first")
    example = make_example(
        new_messages(system, user, answer),
        label=label,
        tags=tags,
        status=status or "active",
        source="manual",
        rejected=None if rejected_reply is ... else rejected_reply,
    )
    return store.add(example), True


def save_reply(store: ExampleStore, messages: list[dict], reply: str, provenance: dict) -> Example:
    """Store `reply` to the conversation `messages` as a manual example tagged from-eval, with
    `provenance` (where it came from: an evaluation run, its arm and item)."""
    example = make_example(
        list(messages) + [{"role": "assistant", "content": reply}],
        source="manual",
        tags=[FROM_EVAL_TAG],
        provenance={**provenance, "edited": False},
    )
    return store.add(example)


def example_saver(store: ExampleStore) -> Callable[[list[dict], str, dict], str]:
    """save(messages, reply, provenance) -> a message for the user: the Evaluate tab's "save as
    training example" (evals.selection.save_item_as_example calls it)."""

    def save(messages: list[dict], reply: str, provenance: dict) -> str:
        saved = save_reply(store, messages, reply, provenance)
        return f"Saved as training example {saved.id} (tag {FROM_EVAL_TAG})."

    return save
