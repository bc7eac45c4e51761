"""Reader signals for the abstention benchmark (`benchmarks/abstention.py --reader`): what the
chat model itself makes of a question and the evidence it would read, as candidates for telling
answerable from unanswerable questions. The model's own likelihood of the answer span is the
obvious one; these are that and four relatives:

- span_likelihood: the mean log-probability per token of the span the chat would steer its
  reply to (assistant.answer_choice.choose_answer, ranking included), after "The answer is ";
- span_pmi: how much the question itself raises that span's likelihood, against the same
  prompt asking only the question's opening words ("How much?", "Who?"). A price is likely
  after any "how much" question; an answer should be likelier after its own question;
- span_sentence: the evidence score (assistant/evidence.py) of the sentence the span is in. The
  best sentence's score is the gate's own signal; an unanswerable question about a neighbouring
  detail may have a good best sentence while the span the model picks sits in a weak one;
- decline_likelihood: the mean log-probability of "not in the sources." in the same place;
- verify: log P("Yes") - log P("No") when the same prompt ends with "Do the sources above
  answer this question? Reply yes or no."

A question without a typed candidate span (assistant.answer_spans) gets NO_SPAN for the
likelihood and 0 for the gain and the sentence score, since the chat then has nothing to steer to.

They run the default model on torch (greedy scoring, no sampling): one prefill per question for
each prompt, about 3 s per question on 2 cores, so the benchmark's 378 questions take about 20
minutes with them."""

from __future__ import annotations

import re
from collections.abc import Sequence

from assistant.evidence import score_sentences
from benchmarks.tables import model_cache

READER_SIGNALS = {
    "span_likelihood": "model: mean log-prob of the span it would state",
    "span_pmi": "model: that span's log-prob gain from the question",
    "span_sentence": "model: evidence score of the span's sentence",
    "decline_likelihood": "model: mean log-prob of 'not in the sources.'",
    "verify": "model: log P(Yes) - log P(No), asked if the sources answer",
}
# A question without a span counts as one whose span is very unlikely: about the lowest mean
# log-probability of a stated span on the demo questions (-10.6; -18.8 on kestrel_rail).
NO_SPAN = -10.0
DECLINE = "not in the sources."
VERIFY = "Do the sources above answer this question? Reply yes or no."
# The question's opening words, kept for the prompt that measures what the question adds.
_OPENING = re.compile(
    r"^\s*((?:how (?:much|many|long|old|big|far|often|early|late)|what|which|who|whose|when|where|why|how"
    r"|do|does|did|is|are|can|could|will|would)\b)",
    re.I,
)


def opening_only(question: str) -> str:
    """ "How much does the deposit cost?" -> "How much?"; "What?" when no opening word is known."""
    m = _OPENING.match(question)
    return f"{m.group(1).capitalize()}?" if m else "What?"


def span_sentence_score(question: str, shown: Sequence, source: int, span: str) -> float:
    """The evidence score of the first sentence the model was shown of `shown[source]` that
    holds `span`, scored among the shown passages' sentences as the evidence selection scores
    them."""
    passage = shown[source]
    seen = {(e.start, e.end) for e in passage.evidence}
    for score, sentence in sorted(score_sentences(question, shown), key=lambda x: (x[1].passage, x[1].index)):
        if sentence.passage != source or (seen and (sentence.start, sentence.end) not in seen):
            continue
        if span in passage.text[sentence.start : sentence.end]:
            return score
    return 0.0


class Reader:
    """Computes the reader signals of one question and its retrieved passages on `engine` (a
    torch engine of the default model, no adapter)."""

    def __init__(self, engine):
        self.engine = engine

    def __call__(self, question: str, passages: Sequence) -> dict[str, float]:
        from assistant.answer_choice import ANSWER_PREFIX, choose_answer
        from assistant.evidence import choose_evidence
        from assistant.prompting import build_messages

        shown = choose_evidence(question, list(passages))
        sources = [p.shown_text for p in shown]
        messages = build_messages([], question, "", shown)
        f: dict[str, float] = {}
        choice = choose_answer(self.engine, messages, question, sources, score_all=True)
        if choice is None:
            f["span_likelihood"], f["span_pmi"], f["span_sentence"] = NO_SPAN, 0.0, 0.0
        else:
            span = choice.candidate.text
            bare = build_messages([], opening_only(question), "", shown)
            total, n = self.engine.span_logprobs(bare, ANSWER_PREFIX, [span])[0]
            f["span_likelihood"] = choice.score
            f["span_pmi"] = choice.score - total / max(n, 1)
            f["span_sentence"] = span_sentence_score(question, shown, choice.candidate.source, span)
        total, n = self.engine.span_logprobs(messages, ANSWER_PREFIX, [DECLINE])[0]
        f["decline_likelihood"] = total / max(n, 1)
        asked = [*messages[:-1], {"role": "user", "content": f"{messages[-1]['content']}\n\n{VERIFY}"}]
        (yes, _), (no, _) = self.engine.span_logprobs(asked, "", ["Yes", "No"])
        f["verify"] = yes - no
        return f


def load_reader() -> Reader:
    """The default model on torch, from the embedded file (converted once into a cache)."""
    import sys

    from assistant.hardware import pick_hardware
    from assistant.models import resolve_model
    from assistant.torch_engine import TorchEngine

    cache = model_cache()
    resolved = resolve_model(None, cache, progress=lambda m: print(m, file=sys.stderr))
    return Reader(TorchEngine.load(resolved, pick_hardware("cpu")))
