"""Answer choice: typed candidate spans, the model's likelihood of each, and the focus bias that
steers the reply to the chosen one (assistant/answer_spans.py, assistant/answer_choice.py)."""

from dataclasses import replace

import pytest
import torch

from assistant.answer_choice import ANSWER_PREFIX, SOURCE_RANK_PENALTY, answer_focus, choose_answer
from assistant.answer_spans import candidates
from assistant.engine import GenerationOptions, SpanFollower
from assistant.errors import ModelError, ValidationError
from assistant.prompting import (
    Passage,
    answer_hint,
    answer_ranking,
    build_messages,
    focus_bias,
    reading_settings,
    split_grounded_user_message,
)

RENTALS = (
    "Bike: Tidewalker 8 city bike; Half day: €19; Full day: €31; 7 days: €118. "
    "The deposit is €150 per bike, paid by card. Late returns cost €8 for every started hour."
)


def _texts(question, sources):
    return [c.text for c in candidates(question, sources)]


def test_candidates_have_the_shape_the_question_asks_for():
    assert _texts("How much is the deposit?", [RENTALS]) == ["€19", "€31", "€118", "€150 per bike", "€8"]
    # "how big" asks for a quantity, which a number, a measure or an amount of money can be
    assert _texts("How big is the deposit?", [RENTALS]) == ["8", "€19", "€31", "7 days", "€118", "€150 per bike", "€8"]
    assert _texts("What time do you close on a Thursday?", ["Every Thursday we stay open until 20:00."]) == ["20:00"]
    hours = "Day: Monday; Shop: 10:00–17:30; Workshop: Closed"
    assert _texts("What are the shop hours on a Monday?", [hours]) == ["10:00–17:30"]  # a range stays whole
    founder = "The shop was founded by Oriel Pentreath, a former ferry engineer, in 2011."
    assert _texts("Who started the shop?", [founder]) == ["Oriel Pentreath"]
    assert _texts("How heavy is it?", ["- Price: €689 - Weight: 14.6 kg"]) == ["€689", "14.6 kg"]
    assert "PW3 7LB" in _texts("What postcode do I use?", ["Port Wren PW3 7LB"])
    assert "hello@shop.example" in _texts("What email address should I use?", ["Write to hello@shop.example today."])


def test_candidates_leave_out_what_the_question_already_says_and_duplicates():
    spans = _texts("How long does the Lamproom 900 run in eco mode?", ["Lamproom 900: 21 hours in eco mode, 21 hours."])
    assert spans == ["21 hours"]  # "900" repeats the question; the second "21 hours" is a duplicate
    # spans keep their place: source number and character offsets into that source
    c = candidates("How much is the deposit?", ["nothing here", RENTALS])[3]
    assert c.source == 1 and RENTALS[c.start : c.end] == c.text and c.kind == "money"
    assert candidates("How much is the deposit?", ["No figures at all."]) == []


class _Scorer:
    """Scores spans from a table; records what it was asked."""

    def __init__(self, table, fail=None):
        self.table, self.fail, self.calls = table, fail, []

    def span_logprobs(self, messages, prefix, spans, adapter=None):
        if self.fail:
            raise self.fail
        self.calls.append((prefix, list(spans), adapter))
        return [self.table.get(s, (-50.0, 5)) for s in spans]


def test_choose_answer_takes_the_best_mean_log_probability():
    scorer = _Scorer({"€150 per bike": (-3.0, 3), "€19": (-1.5, 1), "€8": (-0.9, 1)})  # means -1.0, -1.5, -0.9
    choice = choose_answer(scorer, [], "How much is the deposit?", [RENTALS], adapter="voice")
    assert choice is not None and choice.candidate.text == "€8"
    scorer.table["€8"] = (-1.2, 1)
    assert choose_answer(scorer, [], "How much is the deposit?", [RENTALS]).candidate.text == "€150 per bike"
    assert scorer.calls[0][0] == ANSWER_PREFIX and scorer.calls[0][2] == "voice"
    assert choose_answer(scorer, [], "How much is the deposit?", ["No figures."]) is None
    single = _Scorer({}, fail=AssertionError("one candidate needs no scoring"))
    assert choose_answer(single, [], "What time?", ["Open until 20:00."]).candidate.text == "20:00"
    # benchmarks/reader_signals.py asks for the lone candidate's score too
    scored = choose_answer(_Scorer({"20:00": (-1.5, 3)}), [], "What time?", ["Open until 20:00."], score_all=True)
    assert scored is not None and scored.candidate.text == "20:00" and scored.score == -0.5


def test_ranking_lets_bare_numbers_yield_and_prefers_the_best_source(monkeypatch):
    """With ranking on (the default) a bare number loses to a span that says what it counts,
    and a span of a lower source needs a likelier reading; off, the likelihood alone decides."""
    rules = "Riders must be 15 or older. The deposit is €150 per bike."
    scorer = _Scorer({"15": (-0.5, 1), "€150 per bike": (-6.0, 3)})  # means -0.5 and -2.0
    question = "How big is the deposit?"
    assert _texts(question, [rules]) == ["15", "€150 per bike"]
    assert choose_answer(scorer, [], question, [rules]).candidate.text == "€150 per bike"
    assert not scorer.calls  # the bare number left one candidate, which needs no scoring
    # only bare numbers: they stay candidates
    ages = choose_answer(scorer, [], "How old must riders be?", ["Riders must be 15 or 16."])
    assert ages is not None and ages.candidate.text == "15" and scorer.calls[-1][1] == ["15", "16"]
    monkeypatch.setenv("TAILOR_ANSWER_RANKING", "off")
    assert choose_answer(scorer, [], question, [rules]).candidate.text == "15"

    # sources best first: the second source's span is likelier by less than the penalty per place
    sources = ["The deposit is €150.", "A basket costs €19."]
    near = _Scorer({"€150": (-2.0, 1), "€19": (-2.0 + SOURCE_RANK_PENALTY / 2, 1)})
    assert choose_answer(near, [], "How much is it?", sources).candidate.text == "€19"  # ranking off
    monkeypatch.setenv("TAILOR_ANSWER_RANKING", "on")
    choice = choose_answer(near, [], "How much is it?", sources)
    assert choice.candidate.text == "€150" and choice.score == -2.0  # reported: the plain mean
    far = _Scorer({"€150": (-2.0, 1), "€19": (-2.0 + 2 * SOURCE_RANK_PENALTY, 1)})
    assert choose_answer(far, [], "How much is it?", sources).candidate.text == "€19"  # likelier by more: it wins

    assert reading_settings()["answer_ranking"] is True
    monkeypatch.setenv("TAILOR_ANSWER_RANKING", "sometimes")
    with pytest.raises(ValidationError, match="TAILOR_ANSWER_RANKING must be on or off"):
        answer_ranking()


PASSAGES = [Passage(id=1, source="rentals.md", text=RENTALS)]


def test_answer_focus_follows_the_settings(monkeypatch):
    base = GenerationOptions(temperature=0)
    scorer = _Scorer({"€150 per bike": (-0.3, 3)})
    question = "How much is the deposit?"
    messages = build_messages([], question, "", PASSAGES)
    monkeypatch.setenv("TAILOR_ANSWER_FOCUS", "0")
    monkeypatch.setenv("TAILOR_ANSWER_HINT", "off")
    assert answer_focus(base, scorer, messages, question, PASSAGES) == (messages, base) and not scorer.calls
    monkeypatch.setenv("TAILOR_ANSWER_FOCUS", "4")
    assert focus_bias() == 4
    got_messages, got = answer_focus(base, scorer, messages, question, PASSAGES)
    assert got.focus_bias == 4 and got.focus_text == "€150 per bike" and got_messages == messages
    assert got.as_dict()["focus_text"] == "€150 per bike"  # recorded with the reply
    # the hint names the span between the sources and the question; the rest of the turn stays
    monkeypatch.setenv("TAILOR_ANSWER_HINT", "on")
    hinted, _ = answer_focus(base, scorer, messages, question, PASSAGES)
    assert hinted[-1]["content"] == messages[-1]["content"].replace(
        "\n\nQuestion: ", "\n\nAnswer found in the sources: €150 per bike\n\nQuestion: "
    )
    assert split_grounded_user_message(hinted[-1]["content"])[0] == question
    assert answer_focus(base, scorer, messages, question, None) == (messages, base)  # no sources, no choice
    # an engine that cannot score: the reply is made without the option, not refused
    for exc in (ModelError("no torch here"), ValidationError("scoring is unavailable")):
        assert answer_focus(base, _Scorer({}, fail=exc), messages, question, PASSAGES) == (messages, base)
    for bad, message in (("lots", "must be a number"), ("11", "between 0 and 10")):
        monkeypatch.setenv("TAILOR_ANSWER_FOCUS", bad)
        with pytest.raises(ValidationError, match=message):
            focus_bias()
    monkeypatch.setenv("TAILOR_ANSWER_HINT", "maybe")
    with pytest.raises(ValidationError, match="TAILOR_ANSWER_HINT must be on or off"):
        answer_hint()


def test_span_logprobs_match_a_full_forward_pass(tiny_engine):
    """The shared-prompt cache gives each span the log-probability a plain forward pass of
    prompt + prefix + span gives it, spans of different lengths batched together."""
    messages = build_messages([], "How much is the deposit?", "", PASSAGES)
    spans = ["€150 per bike", "€8", "nineteen euros and a bit"]
    got = tiny_engine.span_logprobs(messages, ANSWER_PREFIX, spans)
    tok = tiny_engine.tokenizer
    prompt = tiny_engine.encode(messages) + tok(ANSWER_PREFIX, add_special_tokens=False)["input_ids"]
    for span, (total, n) in zip(spans, got):
        ids = tok(span, add_special_tokens=False)["input_ids"]
        with tiny_engine._use(None), torch.inference_mode():  # the base, whatever adapters other tests loaded
            logits = tiny_engine.model(input_ids=torch.tensor([prompt + ids])).logits[0].float().log_softmax(-1)
        expected = sum(float(logits[len(prompt) + j - 1, t]) for j, t in enumerate(ids))
        assert n == len(ids) and total == pytest.approx(expected, abs=1e-4)
    assert tiny_engine.span_logprobs(messages, ANSWER_PREFIX, []) == []


def test_a_followed_span_favours_its_next_token_until_written():
    follower = SpanFollower([[5, 6, 7], [9, 6, 7]], 3.0)  # "€275" and " €275", say
    assert follower.biases([]) == {5: 3.0, 9: 3.0}  # either way of starting it
    assert follower.biases([1, 5]) == {6: 3.0, 9: 3.0}  # one started: its next token
    assert follower.biases([1, 5, 6]) == {7: 3.0, 9: 3.0}
    assert follower.biases([1, 5, 4]) == {5: 3.0, 9: 3.0}  # broken off: from the start again
    assert follower.biases([1, 5, 6, 7]) == {} and follower.done  # written in full
    assert follower.biases([1]) == {}  # and never again in this reply
    assert SpanFollower([], 3.0).biases([]) == {} and SpanFollower([[5]], 0.0).biases([]) == {}


def test_a_followed_span_is_written_once_where_a_whole_span_bias_loops(tiny_engine):
    """On the tiny random model, +10 on every token of "€275" all through the reply fills it
    with them; followed, the span is written in full once and the bias is gone after it."""
    messages = build_messages([], "How big is the deposit?", "", PASSAGES)
    whole = GenerationOptions(temperature=0, max_new_tokens=24, focus_bias=10.0, focus_text="€275")
    followed = replace(whole, focus_follow=True)
    assert tiny_engine.logit_biases(followed) == {} and len(tiny_engine.focus_sequences(followed)) == 2
    assert tiny_engine.focus_sequences(whole) == []
    loop = tiny_engine.generate(messages, whole)
    once = tiny_engine.generate(messages, followed)
    assert "€275" in once.text and once.text.count("€275") == 1, once.text
    # the whole-span bias fills the reply with the span's pieces (bytes of "€" come out as U+FFFD)
    assert sum(ch in "€275\ufffd" for ch in loop.text) > len(loop.text) / 2, loop.text
    assert followed.as_dict()["focus_follow"] is True


def test_logit_biases_favour_the_chosen_span_most(tiny_engine):
    options = GenerationOptions(copy_bias=2.0, copy_source=RENTALS, focus_bias=5.0, focus_text="€150 per bike")
    biases = tiny_engine.logit_biases(options)
    span_ids = set(tiny_engine.tokenizer(" €150 per bike", add_special_tokens=False)["input_ids"])
    assert span_ids and all(biases[t] == 5.0 for t in span_ids)
    assert set(tiny_engine.copy_ids(options)) <= set(biases) and 2.0 in biases.values()
    assert tiny_engine.logit_biases(GenerationOptions()) == {}
    with pytest.raises(ValidationError, match="focus_bias"):
        GenerationOptions(focus_bias=11).validate(2048)
