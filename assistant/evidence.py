"""Evidence selection: the few sentences of the retrieved passages that answer the question.

A 135M model reads two or three sentences far better than four 160-token chunks: with whole
chunks it copies the wrong entity from the right passage or restates the question. So the
prompt shows, for each passage that holds one, only its best sentences (and, with
`neighbours`, the sentence before and after each, which often holds the subject a pronoun
refers to). The passage itself stays what is cited: evidence is a list of character spans
into `Passage.text`, so the chat can highlight the supporting sentence inside its source.

This is a pure function of the question and the passages' texts (no model, no index), so the
chat, the API, the evaluation runner and the trainer's rendering of saved examples all select
the same sentences from the same passages. How a sentence scores (measured on the demo facts;
see README "Evidence selection"):

    score = coverage + TYPE_BONUS * answer_type_match + RANK_BONUS / passage_rank

- coverage: the idf-weighted share of the question's terms the sentence contains, the idf
  counted over all sentences of the passages given (a term every sentence has says nothing);
- answer_type_match: the question asks for a price, a time, a date, a number, a name, a
  place or a code ("how much", "what time", "when", "how many", "who", "where", "which code")
  and the sentence holds something of that shape. Cheap and the classic lift of QA systems:
  "How big is the deposit?" is answered by the sentence with a euro amount, not the one that
  repeats "deposit" twice;
- the passage's rank breaks ties toward what retrieval ranked first."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

from .errors import ValidationError
from .settings import env_number
from .terms import tokenize

TYPE_BONUS = 0.35
RANK_BONUS = 0.10
DEFAULT_MAX_SENTENCES = 3
DEFAULT_NEIGHBOURS = 0

# Sentence ends: ". " (or ! ? ;) before a capital, digit or quote, and every line break (list
# items, table rows and headings are units of their own). Abbreviations such as "e.g. the"
# stay whole because a lower-case word follows.
_BREAK = re.compile(r"(?<=[.!?])[\"'”’)]*\s+(?=[A-Z0-9€£$\"'“‘(])|\s*\n+\s*")

_MONEY = re.compile(r"[€£$]\s?\d|\b\d+(?:[.,]\d+)?\s?(?:eur|euro|euros|pounds?|dollars?|usd|gbp|p)\b|\bEUR\s?\d", re.I)
_TIME = re.compile(r"\b\d{1,2}[:.]\d{2}\b|\b\d{1,2}\s?(?:am|pm)\b|\bnoon\b|\bmidnight\b", re.I)
_MONTHS = "january|february|march|april|may|june|july|august|september|october|november|december"
_DATE = re.compile(
    rf"\b(?:1[89]\d\d|20\d\d)\b|\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:{_MONTHS})\b|\b(?:{_MONTHS})\s+\d{{1,2}}\b|"
    r"\b(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)s?\b",
    re.I,
)
_NUMBER = re.compile(r"\b\d+(?:[.,]\d+)?\b|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|twelve)\b", re.I)
_UNIT = re.compile(
    r"\b\d+(?:[.,]\d+)?\s?(?:kg|g|km|m|cm|mm|mph|km/h|kmh|l|ml|wh|kwh|w|v|inch|inches|%|percent|minutes?|hours?|days?|"
    r"weeks?|months?|years?|miles?|people|riders?|bikes?|seats?)\b",
    re.I,
)
_NAME = re.compile(r"\b[A-Z][a-z]+(?:[ -][A-Z][a-z]+)+\b")
_CODE = re.compile(r"\b[A-Z]{1,4}-?\d+[A-Z0-9-]*\b|\b[A-Z0-9]{2,}-[A-Z0-9]+\b")
_CONTACT = re.compile(r"@|\b\+?\d[\d ]{6,}\d\b|www\.|https?://")


# What the question asks for -> the shapes that can answer it. Checked in this order, the
# more specific cues first ("how far ... on one charge" asks for a distance, not a price;
# "where can I park when I visit" for a place, not a date).
def _cues(*phrases: str) -> re.Pattern:
    return re.compile("|".join(rf"\b{p}\b" for p in phrases), re.I)


_ASKS = (
    (
        "time",
        _cues(
            "what time",
            "hours",
            "until when",
            "latest",
            "earliest",
            r"how (?:late|early)",
            r"when do(?:es)? (?:\w+ ){0,3}(?:open|close|leave|depart|arrive|start|finish)",
        ),
        (_TIME,),
    ),
    (
        "quantity",
        _cues(
            r"how (?:many|long|far|heavy|big|old|tall|wide|often|fast|soon)",
            r"weigh\w*",
            "size",
            "height",
            "range",
            "capacity",
            r"percent\w*",
            "distance",
        ),
        (_UNIT, _NUMBER),
    ),
    (
        "money",
        _cues("how much", "price", "cost", "fees?", "deposit", "pay", "fares?", "charge (?:for|me)", "do you charge"),
        (_MONEY,),
    ),
    ("contact", _cues("phone", "e-?mail", "number (?:to|for)", "website", "contact", "call"), (_CONTACT,)),
    ("code", _cues("code", "postcode", "reference", "model number", "voucher"), (_CODE,)),
    ("place", _cues("where", "which (?:street|town|city|station|platform|road)", "address"), (_NAME, _CODE, _NUMBER)),
    ("name", _cues("who", "whose", "name", "called", "named"), (_NAME,)),
    ("date", _cues("when", "what year", "which year", "what date", "which day", "what day"), (_DATE, _TIME)),
)


@dataclass
class Evidence:
    """A sentence of a passage chosen as support: `text` is `passage.text[start:end]`."""

    start: int
    end: int
    text: str
    score: float = 0.0

    @classmethod
    def from_dict(cls, d: dict) -> Evidence:
        return cls(int(d["start"]), int(d["end"]), str(d["text"]), float(d.get("score", 0.0)))


class HasText(Protocol):
    """What evidence selection needs of a passage (assistant.prompting.Passage is one)."""

    text: str
    heading: str
    evidence: list[Evidence]


P = TypeVar("P", bound=HasText)


@dataclass(frozen=True)
class _Sentence:
    passage: int  # index into the passages given
    index: int  # sentence number within its passage
    start: int
    end: int
    terms: frozenset[str]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the sentences of `text`, stripped, in order; every
    non-blank character is in exactly one span."""
    spans, pos = [], 0
    for m in _BREAK.finditer(text):
        if text[pos : m.start()].strip():
            spans.append(_strip(text, pos, m.start()))
        pos = m.end()
    if text[pos:].strip():
        spans.append(_strip(text, pos, len(text)))
    return spans


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def answer_type(question: str) -> str | None:
    """The kind of answer the question asks for ("money", "time", "date", "quantity",
    "contact", "code", "name", "place"), or None."""
    for kind, cue, _ in _ASKS:
        if cue.search(question):
            return kind
    return None


def _shapes(kind: str | None) -> tuple[re.Pattern, ...]:
    for name, _, shapes in _ASKS:
        if name == kind:
            return shapes
    return ()


HEADING_WEIGHT = 0.5  # a question term found only in the passage's heading counts half
PREVIOUS_WEIGHT = 0.25  # ... only in the sentence before: a list item's subject is often there


def score_sentences(question: str, passages: Sequence[HasText]) -> list[tuple[float, _Sentence]]:
    """Every sentence of every passage with its score (see the module notes), best first."""
    sentences: list[_Sentence] = []
    for pi, p in enumerate(passages):
        for si, (a, b) in enumerate(sentence_spans(p.text)):
            sentences.append(_Sentence(pi, si, a, b, frozenset(tokenize(p.text[a:b]))))
    if not sentences:
        return []
    q_terms = set(tokenize(question))
    df = Counter(t for s in sentences for t in s.terms & q_terms)
    n = len(sentences)
    idf = {t: math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)) for t in q_terms}
    total = sum(idf.values())
    shapes = _shapes(answer_type(question))
    headings = [frozenset(tokenize(getattr(p, "heading", "") or "")) for p in passages]
    scored = []
    previous: _Sentence | None = None
    for s in sentences:
        text = passages[s.passage].text[s.start : s.end]
        before = previous.terms if previous is not None and previous.passage == s.passage else frozenset()
        here = q_terms & s.terms
        weight = sum(idf[t] for t in here)
        weight += HEADING_WEIGHT * sum(idf[t] for t in (q_terms & headings[s.passage]) - here)
        weight += PREVIOUS_WEIGHT * sum(idf[t] for t in (q_terms & before) - here - headings[s.passage])
        coverage = weight / total if total > 0 else 0.0
        typed = 1.0 if shapes and any(p.search(text) for p in shapes) else 0.0
        scored.append((coverage + TYPE_BONUS * typed + RANK_BONUS / (s.passage + 1), s))
        previous = s
    scored.sort(key=lambda x: (-x[0], x[1].passage, x[1].index))
    return scored


def select_evidence(
    question: str,
    passages: Sequence[P],
    max_sentences: int = DEFAULT_MAX_SENTENCES,
    neighbours: int = DEFAULT_NEIGHBOURS,
) -> list[P]:
    """The passages that hold one of the `max_sentences` best sentences, best first, each a
    copy with `evidence` set to its chosen sentences (plus `neighbours` sentences either side),
    in document order. Passages with no chosen sentence are left out: they are not shown to
    the model. Without question terms or sentences, the passages come back unchanged."""
    scored = score_sentences(question, passages)
    if not scored or max_sentences <= 0:
        return list(passages)
    chosen = scored[:max_sentences]
    best: dict[int, float] = {}
    for score, s in chosen:
        best.setdefault(s.passage, score)
    # every sentence of the passages, as scored: (passage, index) -> (score, sentence)
    by_position = {(s.passage, s.index): (sc, s) for sc, s in scored}
    count = Counter(s.passage for _, s in scored)
    picked: dict[int, set[int]] = {}
    for _, s in chosen:
        lo, hi = max(0, s.index - neighbours), min(count[s.passage] - 1, s.index + neighbours)
        picked.setdefault(s.passage, set()).update(range(lo, hi + 1))
    out = []
    for pi in sorted(best, key=lambda i: (-best[i], i)):
        text = passages[pi].text
        evidence = []
        for i in sorted(picked[pi]):
            sc, s = by_position[(pi, i)]
            evidence.append(Evidence(start=s.start, end=s.end, text=text[s.start : s.end], score=round(sc, 4)))
        out.append(replace(passages[pi], evidence=evidence))  # type: ignore[type-var]
    return out


def evidence_sentences() -> int:
    """How many sentences the prompt shows (TAILOR_EVIDENCE_SENTENCES; 0: whole passages)."""
    try:
        n = env_number("TAILOR_EVIDENCE_SENTENCES", DEFAULT_MAX_SENTENCES)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    if n < 0 or n != int(n):
        raise ValidationError(f"TAILOR_EVIDENCE_SENTENCES must be a whole number, 0 or more, not {n:g}")
    return int(n)


def choose_evidence(question: str, passages: Sequence[P]) -> list[P]:
    """What every answering path calls (the retriever for the chat, the API and evaluations;
    the prompt builder for saved examples whose passages carry no evidence yet): the passages
    with their evidence selected at the configured size, or unchanged when that is 0 or they
    already carry evidence."""
    n = evidence_sentences()
    if n <= 0 or not passages or any(p.evidence for p in passages):
        return list(passages)
    return select_evidence(question, passages, n, DEFAULT_NEIGHBOURS)
