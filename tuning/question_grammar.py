"""What every question template shares: the candidate a template makes, the typed spans its
answers are (prices, times, dates, counts, names), the words and verbs the templates know, and
the helpers that write a question or a statement.

The two template families (structured_questions.py: rows, items, price lists, FAQs;
sentence_questions.py: sentences) and the filter (question_filter.py) all read these, so they
live below all three; tuning/questions.py describes the whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# ---- typed spans ------------------------------------------------------------------------------
_MONEY = r"(?:[€£$]\s?|EUR )\d(?:[\d,]*\d)?(?:\.\d+)?"
_TIME = r"\d{1,2}[:.]\d{2}"
_TIME_RANGE = rf"{_TIME}\s*(?:–|-|to|until)\s*{_TIME}"
_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_NUMBER_WORDS = (
    "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|forty|fifty|a hundred"
)
_COUNT = rf"(?:\d[\d,.]*|{_NUMBER_WORDS})"
_DURATION_UNITS = r"(?:minutes?|hours?|days?|working days?|weeks?|months?|years?)"

MONEY = re.compile(_MONEY)
TIME = re.compile(rf"\b{_TIME}\b")
DATE = re.compile(rf"\b(?:{_MONTHS})\b|\b(?:1[89]|20)\d\d\b")
NUMBER = re.compile(rf"\b{_COUNT}\b", re.I)
NAME = re.compile(r"^(?:[A-Z][\w'’-]+)(?: (?:[A-Z][\w'’-]+|de|van|von|of))*$")

KINDS = ("price", "time", "date", "duration", "count", "person", "attribute", "faq")

# ---- words ------------------------------------------------------------------------------------
# Pronouns a generated question cannot lean on: the reader of "When did Oriel buy it?" cannot
# see "it". (Possessives stay: "its doors" is the subject's own.)
UNRESOLVED = {"it", "they", "them", "this", "that", "these", "those", "he", "him", "she", "which", "whom"}
# The documents speak as the shop; the customer asks the shop (and the shop addresses "you").
PERSPECTIVE = {
    "we": "you",
    "our": "your",
    "us": "you",
    "ours": "yours",
    "ourselves": "yourselves",
    "you": "I",
    "your": "my",
    "yours": "mine",
}
PRONOUN_SUBJECTS = {"we", "you", "i", "they", "he", "she", "it"}
DETERMINERS = {"a", "an", "the", "our", "your", "my", "this", "that", "every", "each", "its", "their", "of", "for"}
# Words that lose their capital when a subject moves after the auxiliary.
FUNCTION_STARTS = {"the", "a", "an", "our", "your", "every", "each", "all", "some", "most", "many", "any"}
SUBORDINATE_STARTS = {"if", "when", "as", "because", "although", "unless", "while", "since", "once", "after", "before"}
MODALS = {"can", "must", "will", "may", "should", "could", "would"}

# Verbs the sentence templates know, in their base form. A word is only taken for a verb when
# its base is listed: precision over recall (an unknown verb means no question, not a bad one).
BASE_VERBS = set(
    """open close stay leave start run take get give offer include serve sell ship charge pay earn
    expire return go come buy make need keep hold hang cover last arrive depart finish begin end
    stop accept apply ride meet deliver send replace repair fix fit use work live sleep light require
    cost answer reply book found rebuild build launch join reach receive collect drop bake reopen
    refund issue post process check clean service lend rent hire visit cross""".split()
)
IRREGULAR_PAST = {
    "was": "be",
    "were": "be",
    "had": "have",
    "bought": "buy",
    "came": "come",
    "gave": "give",
    "went": "go",
    "took": "take",
    "made": "make",
    "kept": "keep",
    "held": "hold",
    "hung": "hang",
    "left": "leave",
    "ran": "run",
    "began": "begin",
    "sold": "sell",
    "sent": "send",
    "paid": "pay",
    "built": "build",
    "rebuilt": "rebuild",
    "got": "get",
    "rode": "ride",
    "met": "meet",
    "lent": "lend",
}
# Participles of a passive "was founded by", "are done by" besides the regular "-ed" ones.
PARTICIPLES = {"done", "made", "run", "built", "led", "sent", "given", "taken", "kept", "held"}


@dataclass
class Verb:
    index: int
    word: str
    base: str
    tense: str  # "be" (is/are/was/were), "3sg" (present, -s), "plural" (present), "past", "modal"

    @property
    def aux(self) -> str:
        return {"3sg": "does", "plural": "do", "past": "did"}.get(self.tense, "")


def verb_base(word: str) -> tuple[str, str] | None:
    """(base, tense) of a verb the templates know, or None."""
    w = word.lower()
    if w in ("is", "are", "was", "were"):
        return "be", "be"
    if w in MODALS:
        return w, "modal"
    if w in IRREGULAR_PAST:
        return IRREGULAR_PAST[w], "past"
    if w == "has":
        return "have", "3sg"
    if w == "have":
        return "have", "plural"
    if w in BASE_VERBS:
        return w, "plural"
    if w.endswith("ies") and w[:-3] + "y" in BASE_VERBS:
        return w[:-3] + "y", "3sg"
    if w.endswith("es") and w[:-2] in BASE_VERBS and w[:-2].endswith(("ch", "sh", "ss", "x", "z", "o")):
        return w[:-2], "3sg"
    if w.endswith("s") and w[:-1] in BASE_VERBS:
        return w[:-1], "3sg"
    if w.endswith("ied") and w[:-3] + "y" in BASE_VERBS:
        return w[:-3] + "y", "past"
    if w.endswith("ed"):
        for stem in (w[:-2], w[:-1], w[:-3] if len(w) > 4 and w[-3] == w[-4] else ""):
            if stem in BASE_VERBS:
                return stem, "past"
    return None


# ---- the candidate ----------------------------------------------------------------------------
@dataclass
class Candidate:
    question: str
    span: str  # the answer, verbatim from the chunk
    kind: str  # one of KINDS
    statement: str  # a short sentence holding `span` verbatim: the core of the answer
    topic: str = "the answer to that"  # what is asked about, for "not in the sources" answers
    generated: bool = True  # False: the question is the document's own (an FAQ heading)
    source_line: str = ""  # the line or sentence it came from


# ---- helpers ----------------------------------------------------------------------------------
_SPACES = re.compile(r"\s+")


def words_of(text: str) -> list[str]:
    return [w.strip(".,;:!?()\"'") for w in text.split() if w.strip(".,;:!?()\"'")]


def tidy(text: str) -> str:
    text = _SPACES.sub(" ", text).strip()
    text = re.sub(r"\s+([,.;:?!])", r"\1", text)
    text = re.sub(r",\s*,", ",", text)
    return text.strip(" ,;:")


def sentence_case(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def as_statement(text: str) -> str:
    text = tidy(text)
    if not text:
        return text
    text = sentence_case(text)
    return text if text[-1] in ".!?" else text + "."


def question_text(*parts: str) -> str:
    text = tidy(" ".join(p for p in parts if p))
    return sentence_case(text.rstrip(".!?,;:")) + "?"
