"""Prompt building: history, system prompt and retrieved passages into chat messages.

This is the single place that decides how retrieved passages are shown to the model, so
that training examples saved from a retrieval chat are formatted exactly as the chat did.
Retrieval itself lives in the retrieval package and reaches the core through `Retriever`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol


@dataclass
class Passage:
    id: int | str  # chunk id in the database
    source: str  # document name
    text: str
    score: float = 0.0
    heading: str = ""
    scores: dict = field(default_factory=dict)  # e.g. {"dense": .., "bm25": .., "fused": ..}

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Retrieval:
    passages: list[Passage]
    # True when no passage is good enough to answer from: the chat then says it found no
    # source instead of letting the model guess (small models answer ~90% of unanswerable
    # questions when asked to abstain; a score threshold does not depend on the model).
    abstain: bool = False
    reason: str = ""


class Retriever(Protocol):
    def retrieve(self, query: str, k: int = 4) -> Retrieval: ...


def format_context(passages: Sequence[Passage]) -> str:
    blocks = []
    for i, p in enumerate(passages, start=1):
        head = p.source + (f" — {p.heading}" if p.heading else "")
        blocks.append(f"[{i}] {head}\n{p.text.strip()}")
    return "\n\n".join(blocks)


def grounded_user_message(question: str, passages: Sequence[Passage]) -> str:
    """The user turn the model sees when retrieval is on: sources first, then the question."""
    if not passages:
        return question
    return (
        "Use these sources to answer. If they do not contain the answer, say you could not find it.\n\n"
        f"{format_context(passages)}\n\n"
        f"Question: {question}"
    )


def build_messages(history: Sequence[dict], user_text: str, system_prompt: str = "",
                   passages: Sequence[Passage] | None = None) -> list[dict]:
    """Chat messages for the model. Earlier turns are shown as they were typed (without their
    passages) to save context; only the newest question carries its sources."""
    messages: list[dict] = []
    if system_prompt.strip():
        messages.append({"role": "system", "content": system_prompt.strip()})
    messages += [{"role": m["role"], "content": m["content"]} for m in history if m["role"] != "system"]
    messages.append({"role": "user", "content": grounded_user_message(user_text, passages or [])})
    return messages
