"""The filter on template questions (`problems`: why a candidate is not a good example), and
how questions and answers are compared (`normalise`, `contains_phrase`), which the grounding
mix's exclusion list and its distractor choice use too.

The templates write their candidates unfiltered; whatever they write, only a candidate this
filter finds nothing wrong with becomes an example (the checks are listed in
tuning/questions.py).
"""

from __future__ import annotations

import re
import unicodedata

from .question_grammar import _SPACES, DATE, MONEY, NAME, NUMBER, TIME, UNRESOLVED, Candidate, words_of


# ---- the filter -------------------------------------------------------------------------------
def normalise(text: str) -> str:
    """Lower case, letters, digits and currency signs only, single spaces: how questions and
    answers are compared (for the exclusion list and for "the question contains its answer")."""
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    text = re.sub(r"[^\w€£$]+", " ", text)
    return _SPACES.sub(" ", text).strip()


def contains_phrase(haystack: str, needle: str) -> bool:
    """`needle` occurs in `haystack` as whole words, after `normalise` ("12" is not in "120")."""
    h, n = normalise(haystack), normalise(needle)
    return bool(n) and f" {n} " in f" {h} "


_WH_TYPES = (
    ("how much", "price"),
    ("until what time", "time"),
    ("what time", "time"),
    ("how many", "count"),
    ("how long", "duration"),
    ("within how many", "duration"),
    ("who is the", "person"),
    ("who was", "person"),
    ("who are", "person"),
    ("who were", "person"),
)


def span_type_ok(question: str, span: str) -> bool:
    """Does the span have the shape the question asks for ("How much" ↔ a price, ...)?"""
    q = question.lower()
    for wh, need in _WH_TYPES:
        if q.startswith(wh):
            if need == "price":
                return bool(MONEY.search(span))
            if need == "time":
                return bool(TIME.search(span))
            if need in ("count", "duration"):
                return bool(NUMBER.search(span))
            return bool(NAME.fullmatch(span))  # a person
    if q.startswith("when"):
        return bool(TIME.search(span) or DATE.search(span) or re.search(r"day\b", span))
    return True


MAX_SPAN_WORDS = 12
MAX_FAQ_SPAN_WORDS = 30


def problems(candidate: Candidate, chunk_text: str) -> list[str]:
    """Why a candidate is not a good example (empty: it is)."""
    q, span = candidate.question, candidate.span
    found = []
    if not span.strip() or span not in chunk_text:
        found.append("span not verbatim in the chunk")
    if span not in candidate.statement:
        found.append("statement lacks the span")
    limit = MAX_FAQ_SPAN_WORDS if candidate.kind == "faq" else MAX_SPAN_WORDS
    if not 1 <= len(span.split()) <= limit or len(span) > 15 * limit:
        found.append("span too long or short")
    if not q.endswith("?") or (candidate.generated and q.count("?") != 1):
        found.append("not a question")
    if not 3 <= len(q.split()) <= 24 or len(normalise(q).split()) < 3:
        found.append("question too short or long")
    if contains_phrase(q, span):
        found.append("question contains the answer")
    if candidate.generated:
        qwords = {w.lower() for w in words_of(q)[1:]}
        if UNRESOLVED & qwords:
            found.append("pronoun without a referent")
        if re.search(r"\b(\w+) \1\b", q, re.I):
            found.append("repeated word")
        if re.search(r"\b(?:a|an|the|of|and|or|to|my|your|their|its)\?$", q, re.I):
            found.append("dangling word")
        if re.search(r"[:;()]", q.replace("(front)", "").replace("(rear)", "")) and candidate.kind != "price":
            found.append("stray punctuation")
    if not span_type_ok(q, span):
        found.append("answer type does not fit the question")
    if len(candidate.statement.split()) > 40:
        found.append("statement too long")
    return found
