"""Answer choice: pick the span of the sources that answers, by the model's own likelihood, and
steer the reply to state it.

Measured on the demo's 114 facts (default model, greedy; README "Answer focus"): the answer is
in the evidence sentences the model reads for 103 of them and among the typed candidate spans
(assistant/answer_spans.py) for 96, yet a free reply states it for under half. Asked instead
which candidate is likelier after "The answer is ", the same model picks the right one far
more often (mean log-probability per token; the sum favours short spans and the pointwise
mutual information against the bare question did worse), and more often still with two
priors (TAILOR_ANSWER_RANKING, below). The prompt then names that span ("Answer found in the
sources: ...", TAILOR_ANSWER_HINT) and the reply is decoded with its tokens favoured
(`GenerationOptions.focus_bias`, TAILOR_ANSWER_FOCUS; with TAILOR_ANSWER_FOLLOW only the
span's next token, until it is written: `assistant.engine.SpanFollower`), in the adapter's
own voice: the choice is soft, so the model can still phrase the answer or decline.

Every answering path (the chat, /v1 and evaluations) calls `answer_focus` right after
`prompting.reading_options`, so they choose alike."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from .answer_spans import BARE_NUMBER, Candidate, candidates
from .errors import ModelError, ValidationError
from .evidence import choose_evidence
from .generation import GenerationOptions, Message
from .prompting import Passage, answer_follow, answer_hint, answer_ranking, focus_bias, with_answer_hint

log = logging.getLogger(__name__)

ANSWER_PREFIX = "The answer is "
# Ranking (TAILOR_ANSWER_RANKING, default on) adds two priors to the likelihood. Measured
# offline on the demo's facts: of the 95 whose answer is among the candidates, the likelihood
# alone picks it for 64 (base) / 68 (tuned); with bare numbers yielding 68 / 70; with both
# priors 72 / 72 (the penalty at 0.3: 72 / 71, at 1.0: 66 / 68).
# - The sources come best first (assistant/evidence.py ranks the passages by their best
#   sentence), so a span from a lower one needs a likelier reading to win: its mean log-
#   probability is lowered by this much per place.
SOURCE_RANK_PENALTY = 0.5
# - A number with nothing around it ("15", "2") yields to any other span: a figure with a unit
#   or currency, a time, a code or a name says what it is; a bare one is often an age, a row
#   number or a model number's tail ("How big is the deposit?": "15" over "€150"). See
#   answer_spans.BARE_NUMBER.


@dataclass(frozen=True)
class AnswerChoice:
    """The chosen span and how every candidate scored (mean log-probability per token)."""

    candidate: Candidate
    score: float
    scored: tuple[tuple[str, float], ...]


class SpanScorer(Protocol):
    """What choosing needs of an engine (assistant.engine.ChatEngine is one)."""

    def span_logprobs(
        self, messages: Sequence[Message], prefix: str, spans: Sequence[str], adapter: str | None = None
    ) -> list[tuple[float, int]]: ...


def choose_answer(
    engine: SpanScorer,
    messages: Sequence[Message],
    question: str,
    sources: Sequence[str],
    adapter: str | None = None,
    score_all: bool = False,
) -> AnswerChoice | None:
    """The candidate span of `sources` (the texts the model is shown, best first) that the
    model finds likeliest as the answer to `question`, asked with `messages`; None without
    candidates. With ranking on, bare numbers yield to other spans and a span of a lower
    source needs `SOURCE_RANK_PENALTY` more per place. The scores reported are plain means.
    A lone candidate is chosen unscored (score 0.0) unless `score_all` asks for its score, as
    benchmarks/reader_signals.py does."""
    ranked = answer_ranking()
    found = candidates(question, list(sources))
    if ranked and any(not BARE_NUMBER.fullmatch(c.text) for c in found):
        found = [c for c in found if not BARE_NUMBER.fullmatch(c.text)]
    if not found:
        return None
    if len(found) == 1 and not score_all:
        return AnswerChoice(found[0], 0.0, ((found[0].text, 0.0),))
    scored = engine.span_logprobs(messages, ANSWER_PREFIX, [c.text for c in found], adapter)
    means = [total / max(n, 1) for total, n in scored]
    penalty = SOURCE_RANK_PENALTY if ranked else 0.0
    best = max(range(len(found)), key=lambda i: (means[i] - penalty * found[i].source, -i))
    return AnswerChoice(found[best], means[best], tuple((c.text, round(m, 4)) for c, m in zip(found, means)))


def answer_focus(
    options: GenerationOptions,
    engine: SpanScorer,
    messages: Sequence[Message],
    question: str,
    passages: Sequence[Passage] | None,
    adapter: str | None = None,
) -> tuple[list[Message], GenerationOptions]:
    """The messages and options to answer with, when the reply is read from sources and answer
    focus is on: the chosen span favoured while decoding (`TAILOR_ANSWER_FOCUS`) and, with
    `TAILOR_ANSWER_HINT`, named in the prompt next to the question. Unchanged otherwise, or
    when the engine cannot score (logged: the reply is then made as without the option, never
    refused for it)."""
    bias, hint, follow = focus_bias(), answer_hint(), answer_follow()
    if (bias <= 0 and not hint) or not passages:
        return list(messages), options
    sources = [p.shown_text for p in choose_evidence(question, passages)]
    try:
        choice = choose_answer(engine, messages, question, sources, adapter)
    except (ModelError, ValidationError) as exc:
        log.warning("answer focus skipped: %s", exc)
        return list(messages), options
    if choice is None:
        return list(messages), options
    span = choice.candidate.text
    focused = replace(options, focus_bias=bias, focus_text=span, focus_follow=follow)
    return (with_answer_hint(messages, span) if hint else list(messages)), focused
