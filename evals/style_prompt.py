"""The "prompted" arm's default style prompt: a short system prompt that shows the base model a
few of the user's own training pairs, so an evaluation can tell when prompting is enough and
when tuning pays.

Only active examples of the train split are used. The test split is what an evaluation
answers, and validation is held out from training; showing either to the prompted arm would
leak the references it is scored against. Examples without retrieved passages and without
earlier turns are preferred: they show the voice in the fewest characters. The choice is
deterministic (the store's order, no randomness), so two runs on the same dataset get the same
prompt.

evals imports only the core: the example store (tuning.example_store.ExampleStore) is handed
in by the caller, so here it is anything with `iter_all()` yielding example-like objects."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from .sets import split_grounded

DEFAULT_EXAMPLES = 3
MAX_EXAMPLE_CHARS = 300  # per prompt and per answer: a few pairs must fit a small model's context
INSTRUCTION = "Answer in the same voice and style as these example replies."


class StyleExample(Protocol):
    """What the style prompt reads of a training example (tuning.example.Example)."""

    messages: list[dict]
    passages: list[dict] | None
    status: str
    split: str | None
    rejected: str | None  # set on a preference pair, which is not a style example


class ExampleSource(Protocol):
    """What the style prompt needs of the example store: every example, in a stable order."""

    def iter_all(self) -> Iterable[StyleExample]: ...


def _pair(example: StyleExample) -> tuple[str, str] | None:
    """(final user turn, answer) of a usable train pair, else None."""
    if example.status != "active" or example.split != "train" or example.rejected is not None:
        return None
    messages = example.messages or []
    if len(messages) < 2 or messages[-1].get("role") != "assistant" or messages[-2].get("role") != "user":
        return None
    prompt, answer = str(messages[-2].get("content") or "").strip(), str(messages[-1].get("content") or "").strip()
    return (prompt, answer) if prompt and answer else None


def _cost(example: StyleExample, prompt: str, answer: str) -> tuple[bool, bool, bool]:
    """Sort key, lower is better: no sources, then no earlier turns, then fits untrimmed."""
    has_sources = bool(example.passages) or split_grounded(prompt)[1] is not None
    earlier_turns = any(m.get("role") != "system" for m in example.messages[:-2])
    too_long = len(prompt) > MAX_EXAMPLE_CHARS or len(answer) > MAX_EXAMPLE_CHARS
    return has_sources, earlier_turns, too_long


def pick_style_examples(examples: Iterable[StyleExample], n: int = DEFAULT_EXAMPLES) -> list[tuple[str, str]]:
    """The (prompt, answer) pairs of up to `n` usable examples, best first, ties in the given
    order, one per question. Stops reading once `n` ideal ones are found, so a big store is not
    read whole (the later ones could not have beaten them)."""
    if n < 1:
        return []
    ranked: list[tuple[tuple[bool, bool, bool], int, tuple[str, str]]] = []
    ideal_questions: set[str] = set()
    for position, example in enumerate(examples):
        pair = _pair(example)
        if pair is None:
            continue
        cost = _cost(example, *pair)
        ranked.append((cost, position, pair))
        if not any(cost):
            ideal_questions.add(pair[0])
            if len(ideal_questions) >= n:
                break
    ranked.sort(key=lambda r: (r[0], r[1]))
    chosen: list[tuple[str, str]] = []
    for _, _, pair in ranked:
        if pair[0] not in {prompt for prompt, _ in chosen}:  # the same question twice shows nothing new
            chosen.append(pair)
        if len(chosen) == n:
            break
    return chosen


def trim(text: str, limit: int = MAX_EXAMPLE_CHARS) -> str:
    """`text` cut to at most `limit` characters, at a word boundary when one is near, with "…"."""
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip() + "…"


def format_style_prompt(pairs: Sequence[tuple[str, str]]) -> str:
    """The instruction followed by the numbered example pairs; "" without pairs."""
    if not pairs:
        return ""
    blocks = [f"Example {i}\nUser: {trim(q)}\nReply: {trim(a)}" for i, (q, a) in enumerate(pairs, start=1)]
    return "\n\n".join([INSTRUCTION, *blocks])


def default_style_prompt(examples: Iterable[StyleExample], n: int = DEFAULT_EXAMPLES) -> str:
    """A system prompt built from up to `n` of the user's train pairs; "" when none is usable."""
    return format_style_prompt(pick_style_examples(examples, n))


def style_pairs_from_store(store: ExampleSource | None, n: int = DEFAULT_EXAMPLES) -> list[tuple[str, str]]:
    """The pairs the default style prompt shows, read from a workspace's example store (none
    without one). The store yields every example; `pick_style_examples` keeps the train split's
    active ones."""
    return [] if store is None else pick_style_examples(store.iter_all(), n)


def style_prompt_from_store(store: ExampleSource | None, n: int = DEFAULT_EXAMPLES) -> str:
    """The default style prompt for a workspace's example store; "" without usable pairs."""
    return format_style_prompt(style_pairs_from_store(store, n))
