"""Prompt building: history, system prompt and retrieved passages into chat messages.

This is the single place that decides how retrieved passages are shown to the model, so
that training examples saved from a retrieval chat are formatted exactly as the chat did.
Retrieval itself lives in the retrieval package and reaches the core through `Retriever`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Protocol

from .errors import ValidationError
from .evidence import Evidence, choose_evidence, evidence_sentences
from .generation import MAX_COPY_BIAS, GenerationOptions
from .settings import env_str, env_switch


@dataclass
class Passage:
    id: int | str  # chunk id in the database
    source: str  # document name
    text: str
    score: float = 0.0
    heading: str = ""
    scores: dict = field(default_factory=dict)  # e.g. {"dense": .., "bm25": .., "fused": ..}
    # The sentences of `text` the model is shown (assistant/evidence.py); empty: the whole text.
    evidence: list[Evidence] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def shown_text(self) -> str:
        """What the model reads of this passage: its evidence sentences (joined, with "…"
        where sentences were skipped), or its whole text."""
        if not self.evidence:
            return self.text.strip()
        parts: list[str] = []
        last_end: int | None = None
        for ev in sorted(self.evidence, key=lambda e: e.start):
            if parts and last_end is not None and self.text[last_end : ev.start].strip():
                parts.append("…")
            parts.append(ev.text.strip())
            last_end = ev.end
        return " ".join(parts)


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


def format_context(passages: Sequence[Passage], best_last: bool = False) -> str:
    """Numbered sources, [1] = the best passage. With `best_last` the list is shown from the
    weakest to the best, so the best passage sits right before the question."""
    blocks = []
    for i, p in enumerate(passages, start=1):
        head = p.source + (f" — {p.heading}" if p.heading else "")
        blocks.append(f"[{i}] {head}\n{p.shown_text}")
    return "\n\n".join(reversed(blocks) if best_last else blocks)


# How the passages are presented was measured on the default model (SmolLM2-135M-Instruct,
# greedy, 38 demo facts, the hybrid top passages; right = the reply contains the gold answer):
#   instruction, sources best first, question last, 4 passages                   6/38  15.8%
#   the same with 2 passages                                                      5/38  13.2%
#   the same, weakest passage first (numbered [1] = weakest)                      9/38  23.7%
#   instruction, sources best LAST, question last, 4 passages (this format)      12/38  31.6%
#   question, sources, "answer using the sources", 4 passages                    11/38  28.9%
#   ... plus "if they do not contain the answer, say so", 4 / 3 passages   8/38 21.1% / 4/38 10.5%
#   question repeated before and after the sources, 4 / 2 passages          4/38 10.5% / 2/38 5.3%
# The question-first formats often made the model list the sources back ("1. ... 2. ..."),
# which finds the answer by accident; with the best passage right before the question it
# answered in a plain sentence and its hits were real answers.
ANSWER_INSTRUCTION = "Use these sources to answer. If they do not contain the answer, say you could not find it."


def grounded_user_message(question: str, passages: Sequence[Passage]) -> str:
    """The user turn the model sees when retrieval is on: the instruction to answer from the
    sources (and to say so when they do not hold the answer), the numbered sources with the
    best one last, then the question."""
    if not passages:
        return question
    shown = choose_evidence(question, passages)
    return f"{ANSWER_INSTRUCTION}\n\n{format_context(shown, best_last=True)}\n\nQuestion: {question}"


def split_grounded_user_message(text: str) -> tuple[str, str | None]:
    """The inverse of `grounded_user_message`: (question, sources block) for a user turn built
    with passages, (text, None) for a plain one. For code that stores rendered prompts and
    needs the question back (evaluation arms with retrieval off)."""
    head, marker = f"{ANSWER_INSTRUCTION}\n\n", "\n\nQuestion: "
    if text.startswith(head) and marker in text:
        sources, question = text[len(head) :].rsplit(marker, 1)
        if question.strip():
            return question, sources
    return text, None


def build_messages(
    history: Sequence[dict], user_text: str, system_prompt: str = "", passages: Sequence[Passage] | None = None
) -> list[dict]:
    """Chat messages for the model. Earlier turns are shown as they were typed (without their
    passages) to save context; only the newest question carries its sources."""
    messages: list[dict] = []
    if system_prompt.strip():
        messages.append({"role": "system", "content": system_prompt.strip()})
    messages += [{"role": m["role"], "content": m["content"]} for m in history if m["role"] != "system"]
    messages.append({"role": "user", "content": grounded_user_message(user_text, passages or [])})
    return messages


# Decoding when the reply is read from sources, chosen on the demo's 114 facts (README, "Decoding
# that copies"; benchmarks/reading.py rows penalty-*, copy-*): with the penalty kept to the reply,
# a copy bias of 1 / 2 gave the tuned adapter 0.325 / 0.351 from 0.237 (bias 2: +0.114, paired
# p = 0.008) and the base model 0.368 / 0.395 from 0.368. Both stay settings for the ablation rows.
DEFAULT_COPY_BIAS = 2.0
DEFAULT_PENALIZE_SOURCES = False


def copy_bias() -> float:
    """TAILOR_COPY_BIAS: logits added to the sources' tokens while answering from them."""
    return _logits("TAILOR_COPY_BIAS", DEFAULT_COPY_BIAS)


def _logits(name: str, default: float) -> float:
    """A logit bias setting: a number from 0 to MAX_COPY_BIAS, or `default` when unset."""
    raw = env_str(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValidationError(f"{name} must be a number, got {raw!r}") from None
    if not 0 <= value <= MAX_COPY_BIAS:
        raise ValidationError(f"{name} must be between 0 and {MAX_COPY_BIAS:g}, got {raw!r}")
    return value


def penalize_sources() -> bool:
    """TAILOR_PENALIZE_SOURCES (on/off): whether the repetition penalty also counts the
    prompt's tokens (the sources among them) when answering from sources."""
    return _on_off("TAILOR_PENALIZE_SOURCES", DEFAULT_PENALIZE_SOURCES)


def _on_off(name: str, default: bool) -> bool:
    """settings.env_switch, its error as a ValidationError: read per reply, a bad value is the
    request's error (the chat shows it), not a failure at start."""
    try:
        return env_switch(name, default)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


# Answer focus (assistant/answer_choice.py): the bias on the answer span chosen by the model's
# likelihood, and whether the prompt also names it; bias 0 with the hint off turns the choice
# off. Chosen on the demo's 114 facts (README "Answer focus"; benchmarks/reading.py rows
# focus-*, hint-focus-4), fact accuracy base / tuned with retrieval: no choice 0.439 / 0.360,
# bias 4 0.491 / 0.456, bias 8 0.412 / 0.544 (the base model collapses into digit loops), the
# hint and bias 4 0.544 / 0.500: the best mean of the two arms with the whole span favoured.
# Followed (DEFAULT_ANSWER_FOLLOW, below), 8 measured best and loops no more.
DEFAULT_FOCUS_BIAS = 8.0
DEFAULT_ANSWER_HINT = True
# Ranking the candidates (bare numbers yield, lower sources pay; benchmarks/reading.py row
# `ranking-off` is the choice without it): chosen offline on the demo's facts, where it made
# the choice right for 72 / 72 of the 95 whose answer is a candidate, from 64 / 68.
DEFAULT_ANSWER_RANKING = True
# Following the span (benchmarks/reading.py rows `follow-4`, `follow-8`, 7 Dec, with ranking):
# demo fact accuracy base / tuned with retrieval, whole span +4 0.596 / 0.544, followed +4
# 0.702 / 0.649, followed +8 0.711 / 0.675: the best mean of the two arms, so on, at 8.
DEFAULT_ANSWER_FOLLOW = True


def focus_bias() -> float:
    """TAILOR_ANSWER_FOCUS: logits added to the chosen answer span's tokens while answering
    from sources (0: no answer choice)."""
    return _logits("TAILOR_ANSWER_FOCUS", DEFAULT_FOCUS_BIAS)


ANSWER_HINT = "Answer found in the sources: "


def answer_hint() -> bool:
    """TAILOR_ANSWER_HINT (on/off): whether the chosen answer span is also named in the prompt,
    right before the question (assistant/answer_choice.py)."""
    return _on_off("TAILOR_ANSWER_HINT", DEFAULT_ANSWER_HINT)


def answer_ranking() -> bool:
    """TAILOR_ANSWER_RANKING (on/off): whether the answer choice ranks the candidate spans with
    two priors besides the model's likelihood: bare numbers yield to any other span, and a span
    of a lower source pays per place (assistant/answer_choice.py). Off: the likelihood alone."""
    return _on_off("TAILOR_ANSWER_RANKING", DEFAULT_ANSWER_RANKING)


def answer_follow() -> bool:
    """TAILOR_ANSWER_FOLLOW (on/off): whether the focus bias follows the chosen span token by
    token and stops once it is written (`GenerationOptions.focus_follow`) instead of favouring
    all its tokens through the whole reply."""
    return _on_off("TAILOR_ANSWER_FOLLOW", DEFAULT_ANSWER_FOLLOW)


def with_answer_hint(messages: Sequence[dict], span: str) -> list[dict]:
    """`messages` with "Answer found in the sources: SPAN" put between the sources and the
    question of the last (grounded) user turn; unchanged when that turn has no sources."""
    out = [dict(m) for m in messages]
    if not out or out[-1]["role"] != "user":
        return out
    question, sources = split_grounded_user_message(out[-1]["content"])
    if sources is None:
        return out
    out[-1]["content"] = f"{ANSWER_INSTRUCTION}\n\n{sources}\n\n{ANSWER_HINT}{span}\n\nQuestion: {question}"
    return out


def reading_options(options: GenerationOptions, question: str, passages: Sequence[Passage] | None) -> GenerationOptions:
    """The decoding options for a reply to `question` with `passages` in its prompt: what the
    chat, /v1 and evaluations all call after `build_messages`, so they decode alike. Without
    passages the options are returned unchanged."""
    if not passages:
        return options
    shown = choose_evidence(question, passages)
    return replace(
        options,
        copy_bias=copy_bias(),
        copy_source="\n".join(p.shown_text for p in shown),
        penalize_prompt=penalize_sources(),
    )


def reading_settings() -> dict:
    """How replies read from sources are made now (for the record of an evaluation run); it
    also checks the settings, so a bad value fails before any work starts."""
    return {
        "evidence_sentences": evidence_sentences(),
        "copy_bias": copy_bias(),
        "penalize_sources": penalize_sources(),
        "answer_focus": focus_bias(),
        "answer_hint": answer_hint(),
        "answer_ranking": answer_ranking(),
        "answer_follow": answer_follow(),
    }
