"""Answer candidates: the spans of the evidence sentences that could answer a question.

The reading benchmark showed where facts are lost on the default model: the answer is in the
sentences the model reads for 90% of demo facts, yet its reply holds it for under half. It names
a neighbouring figure from the same table row or restates the question. An extractive step
separates the two jobs: these functions list the spans of the right shape (a price for "how
much", a time for "what time", a name for "who", ...), and a scorer (assistant/answer_choice.py)
picks one by the model's own likelihood, which the reply is then steered to state.

Pure functions of the question and the texts, so every answering path gets the same spans."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .evidence import answer_type
from .terms import tokenize

_MONTHS = "january|february|march|april|may|june|july|august|september|october|november|december"
_RANGE = r"(?:\s?(?:–|-|to)\s?"  # "10:00–17:30", "48–54 cm", "115 to 135 cm"
_NUM = r"\d[\d,]*(?:\.\d+)?"
# A number with nothing around it ("15", "1,200", "2.5"); answer_choice lets it yield to spans
# that say what they count.
BARE_NUMBER = re.compile(_NUM)
_UNITS = (
    r"kg|g|km|m|cm|mm|mph|km/h|l|ml|wh|kwh|w|v|inch(?:es)?|%|percent|minutes?|hours?|days?|working days?|weeks?|"
    r"months?|years?|miles?|metres?|meters?|people|riders?|bikes?|seats?|points?|bonus points|passengers?|"
    r"trains?|carriages?|stops?|stations?|times|tickets?|charge cycles|full charge cycles"
)
_NUMBER_WORDS = (
    "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|forty|fifty|hundred"
)

# Each shape: a pattern that matches a whole answer span. Order matters only for overlaps:
# the longer span wins (see `candidates`).
SHAPES: dict[str, re.Pattern] = {
    "money": re.compile(
        rf"(?:[€£$]|\b(?:EUR|GBP|USD)\s?){_NUM}(?:\s?/\s?\w+|\s(?:per|a|an)\s\w+)?|\b{_NUM}\s?(?:euros?|pounds?|dollars?|p)\b",
        re.I,
    ),
    "time": re.compile(
        rf"\b\d{{1,2}}[:.]\d{{2}}(?:{_RANGE}\d{{1,2}}[:.]\d{{2}}))?\b|\b\d{{1,2}}(?:[:.]\d{{2}})?\s?(?:am|pm)\b|"
        r"\bnoon\b|\bmidnight\b",
        re.I,
    ),
    "date": re.compile(
        rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:{_MONTHS})(?:\s+\d{{4}})?\b|\b(?:{_MONTHS})\s+\d{{1,2}}(?:,\s*\d{{4}})?\b|"
        rf"\b(?:1[6-9]\d\d|20\d\d)\b|\b(?:first|second|third|fourth|last)\s+\w+day\s+of\s+(?:each\s+month|{_MONTHS})\b|"
        r"\b(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)s?\b",
        re.I,
    ),
    "quantity": re.compile(
        rf"\b{_NUM}(?:\s?×\s?{_NUM})*(?:{_RANGE}{_NUM}))?\s?(?:{_UNITS})\b|\b{_NUM}%|"
        rf"\b(?:{_NUMBER_WORDS})(?:\s|-)(?:{_UNITS})\b(?:\s+per\s+\w+)?|\b{_NUM}\b",
        re.I,
    ),
    "contact": re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+|\(?\+?\d[\d() ]{6,}\d\b|(?:https?://|www\.)\S+[\w/]"),
    # a postcode ("PW3 7LB"), a form or model code ("LB-W1", "RX450")
    "code": re.compile(
        r"\b[A-Z]{1,4}\d{1,3}\s\d[A-Z]{2}\b|\b[A-Z]{1,4}-?[A-Z]?\d+[A-Z0-9-]*\b|\b[A-Z0-9]{2,}-[A-Z0-9]+\b"
    ),
    # Two or more capitalised words ("Oriel Pentreath", "Netmender's Lane", "Same Tide"),
    # allowing one lower-case link word ("Port of Call") but not at either end.
    "name": re.compile(r"\b[A-Z][\w'’]*(?:[ -](?:of|the|and|de|on)?\s?[A-Z][\w'’]*)+\b"),
}

# What each kind of question can be answered by, most specific first.
ACCEPTS: dict[str, tuple[str, ...]] = {
    "money": ("money",),
    "time": ("time",),
    "date": ("date", "time"),
    "quantity": ("quantity", "money"),
    "contact": ("contact",),
    "code": ("code",),
    "place": ("name", "code"),
    "name": ("name",),
}
UNTYPED = ("money", "quantity", "name", "code", "time", "date", "contact")


@dataclass(frozen=True)
class Candidate:
    """A span that could answer: `text` is `source[start:end]` of source number `source`."""

    text: str
    kind: str
    source: int
    start: int
    end: int


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def candidates(question: str, sources: list[str], limit: int = 24) -> list[Candidate]:
    """The spans of `sources` (the texts the model is shown, in the order given) whose shape
    answers `question`, in order of appearance, without duplicates of the same text. Spans
    that only repeat the question ("Lamproom 900" for a question about the Lamproom 900)
    are left out, and where two spans overlap the longer one is kept."""
    kind = answer_type(question)
    kinds = ACCEPTS.get(kind, UNTYPED) if kind else UNTYPED
    q_terms = set(tokenize(question))
    out: list[Candidate] = []
    seen: set[str] = set()
    for si, text in enumerate(sources):
        spans: list[tuple[int, int, str]] = []
        for k in kinds:
            for m in SHAPES[k].finditer(text):
                a, b = m.start(), m.end()
                while b > a and text[b - 1] in ".,;:":
                    b -= 1
                if b > a:
                    spans.append((a, b, k))
        spans.sort(key=lambda s: (-(s[1] - s[0]), s[0]))
        kept: list[tuple[int, int, str]] = []
        for a, b, k in spans:
            if not any(_overlaps((a, b), (c, d)) for c, d, _ in kept):
                kept.append((a, b, k))
        for a, b, k in sorted(kept):
            span = text[a:b].strip()
            terms = set(tokenize(span))
            if not span or (terms and terms <= q_terms) or span.lower() in seen:
                continue
            seen.add(span.lower())
            out.append(Candidate(span, k, si, a, b))
    return out[:limit]
