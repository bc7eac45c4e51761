"""The abstention benchmark's reader signals (benchmarks/reader_signals.py) on the tiny model:
each is the engine's own log-probability arithmetic, and a question without a typed span gets
the documented floor."""

import math

import pytest

from assistant.answer_choice import ANSWER_PREFIX
from assistant.evidence import choose_evidence, score_sentences
from assistant.prompting import Passage, build_messages
from benchmarks.reader_signals import DECLINE, NO_SPAN, VERIFY, Reader, opening_only, span_sentence_score

RENTALS = "The deposit is €150 per bike, paid by card. Late returns cost €8 for every started hour."
PASSAGES = [Passage(id=1, source="rentals.md", text=RENTALS)]


def test_opening_only_keeps_the_question_word():
    assert opening_only("How much does the deposit cost?") == "How much?"
    assert opening_only("who started the shop?") == "Who?"
    assert opening_only("Tell me about the deposit") == "What?"


def test_reader_signals_are_the_engines_own_scores(tiny_engine):
    question = "How much is the deposit?"
    f = Reader(tiny_engine)(question, PASSAGES)
    assert set(f) == {"span_likelihood", "span_pmi", "span_sentence", "decline_likelihood", "verify"}
    assert all(math.isfinite(v) for v in f.values())
    shown = choose_evidence(question, PASSAGES)
    messages = build_messages([], question, "", shown)
    total, n = tiny_engine.span_logprobs(messages, ANSWER_PREFIX, [DECLINE])[0]
    assert f["decline_likelihood"] == pytest.approx(total / n)
    asked = [{"role": "user", "content": f"{messages[-1]['content']}\n\n{VERIFY}"}]
    (yes, _), (no, _) = tiny_engine.span_logprobs(asked, "", ["Yes", "No"])
    assert f["verify"] == pytest.approx(yes - no)
    assert f["span_likelihood"] < 0 and f["span_likelihood"] != NO_SPAN


def test_a_question_without_a_typed_span_gets_the_floor(tiny_engine):
    f = Reader(tiny_engine)("Who repairs the bikes?", PASSAGES)  # no name in the passage
    assert f["span_likelihood"] == NO_SPAN and f["span_pmi"] == 0.0 and f["span_sentence"] == 0.0


def test_the_span_sentence_is_the_shown_sentence_that_holds_the_span():
    question = "How much is the deposit?"
    shown = choose_evidence(question, PASSAGES)
    scored = {shown[0].text[s.start : s.end]: sc for sc, s in score_sentences(question, shown)}
    deposit = "The deposit is €150 per bike, paid by card."
    assert span_sentence_score(question, shown, 0, "€150 per bike") == scored[deposit]
    assert span_sentence_score(question, shown, 0, "€8") < scored[deposit]
    assert span_sentence_score(question, shown, 0, "€999") == 0.0
