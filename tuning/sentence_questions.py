"""Questions from sentences: each clause with a subject and a verb the templates know becomes a
question about one typed span of it, with do-support and the subject kept ("Every Thursday we
stay open until 20:00." → "Until what time do you stay open every Thursday?"); priced nouns
("a late-change fee of €30") and "there are N things" are asked about wherever they are.

Precision over recall: a word is only a verb when its base is listed (question_grammar.py), so
a sentence the templates do not understand gives no question rather than a bad one. The shop's
"we"/"our" become the customer's "you"/"your" (`shift`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .question_grammar import (
    _COUNT,
    _DURATION_UNITS,
    _MONEY,
    _MONTHS,
    _TIME,
    _TIME_RANGE,
    DETERMINERS,
    FUNCTION_STARTS,
    MONEY,
    PARTICIPLES,
    PERSPECTIVE,
    PRONOUN_SUBJECTS,
    SUBORDINATE_STARTS,
    TIME,
    Candidate,
    Verb,
    as_statement,
    question_text,
    tidy,
    verb_base,
)

# ---- sentences --------------------------------------------------------------------------------
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9€£$\"'“(])")
# Where one clause ends and the next begins: ", and", "; ", ", which", " because", ...
_CLAUSE_BREAK = re.compile(r"(?:, (?:and|but|so|while|whereas|because|which|who|where|whichever)|;| because| so that) ")


def split_sentences(text: str) -> list[str]:
    out = []
    for line in text.split("\n"):
        line = line.strip()
        if line:
            out += [s.strip() for s in _SENTENCE_END.split(line) if s.strip()]
    return out


@dataclass
class Clause:
    subject: list[str]
    verb: Verb
    rest: str  # what follows the verb up to the end of the clause, cut at its first comma
    adverbial: list[str]  # a fronted phrase, moved to the end of the question ("every Thursday")
    text: str  # the clause as a statement, with its subject (inherited by "... and costs €95")


def _plural_subject(subject: list[str]) -> bool:
    last = subject[-1].lower().strip(",")
    return last in ("we", "you", "they", "i") or (last.endswith("s") and not last.endswith("ss"))


def _find_verb(words: list[str], start: int = 1) -> Verb | None:
    for i in range(start, len(words)):
        word = words[i].strip(",;:")
        found = verb_base(word)
        if found is None:
            continue
        prev = words[i - 1].lower().strip(",") if i > 0 else ""
        if prev in DETERMINERS:  # "the last rental bike", "a ride": a noun, not a verb
            continue
        if prev == "not":  # "Bikes not collected within 14 days ... are charged": a participle
            return None
        base, tense = found
        if tense == "past" and re.search(
            r"\b(?:can|must|will|may|should|is|are|was|were)\b", " ".join(words[i + 1 :]).split(", ")[0]
        ):
            return None  # "Gifts bought in December can still be returned": "bought" is a participle
        if tense == "plural" and i > 0 and not _plural_subject(words[:i]):
            continue  # "A relaxed group ride ... leaves": "ride" is a noun here
        return Verb(i, word, base, tense)
    return None


# "... lasts 75 minutes and costs €95": where a second verb of the same subject starts
_SECOND_VERB = re.compile(
    r" and (?=(?:costs|lasts|takes|includes|opens|closes|runs|leaves|gets|has|is|was|were|cost|had)\b)"
)


def clauses(sentence: str) -> list[Clause]:
    """The clauses of a sentence with a subject and a known verb. A clause that continues with
    "... and <verb>" keeps the subject of the one before."""
    out: list[Clause] = []
    body = sentence.rstrip(".!?")
    parts = [p.strip() for p in _CLAUSE_BREAK.split(body) if p.strip()]
    for part in parts:
        # "lasts 75 minutes and costs €95": a second verb of the same subject
        pieces = _SECOND_VERB.split(part)
        subject: list[str] | None = None
        adverbial: list[str] = []
        for n, piece in enumerate(pieces):
            words = piece.split()
            if not words:
                continue
            if n > 0 and subject is not None:
                found = verb_base(words[0])
                if found is None:
                    break
                verb = Verb(len(subject), words[0], found[0], found[1])
                words = subject + words
            else:
                if words[0].lower().strip(",") in SUBORDINATE_STARTS:
                    break
                found_verb = _find_verb(words)
                if found_verb is None or found_verb.index > 9:
                    break
                verb = found_verb
                subject = words[: verb.index]
                adverbial = []
                if len(subject) > 1 and subject[-1].lower() in PRONOUN_SUBJECTS:
                    adverbial = [w.strip(",") for w in subject[:-1]]
                    subject = subject[-1:]
                elif any(w.endswith((",", ":", ";")) for w in subject) or "(" in " ".join(subject):
                    break
            rest = " ".join(words[verb.index + 1 :]).split(", ")[0]
            out.append(Clause(list(subject), verb, rest, list(adverbial), " ".join(words)))
    return out


def shift(words: list[str], role: str) -> list[str]:
    """The customer's side of the shop's words: we → you, our → your, and you → I (a
    subject) or me (an object), your → my."""
    table = dict(PERSPECTIVE)
    if role == "object":
        table["you"] = "me"
    out = []
    for w in words:
        core = w.strip(",.;:")
        swapped = table.get(core.lower())
        out.append(w if swapped is None or not core else w.replace(core, swapped))
    return out


def lower_first(words: list[str], context: str) -> list[str]:
    """The first word of a subject that moves after the auxiliary loses its capital unless it
    is a name. Not a name: a function word, a word found in lower case elsewhere in the text,
    a word followed by a lower-case one ("Rental bookings", "Breakfast at the ..."; names run
    on in capitals: "Lantern Bay Bikes") and a lone plural ("Repairs", "Parcels")."""
    if not words or words[0] == "I" or not words[0][:1].isupper():
        return words
    first, low = words[0], words[0].lower()
    common = (
        low in FUNCTION_STARTS | PRONOUN_SUBJECTS | set(PERSPECTIVE)
        or re.search(rf"\b{re.escape(low)}\b", context) is not None
        or (len(words) > 1 and words[1][:1].islower())
        or (len(words) == 1 and low.endswith("s") and not low.endswith("ss"))
    )
    acronym = len(first) > 1 and first.isupper()
    return [low] + words[1:] if common and not acronym else words


def _ask(c: Clause, wh: str, rest: str, context: str) -> str:
    """`wh` + auxiliary + subject + verb + rest with do-support: "When does the shop open",
    "When is breakfast served", "Who was the shop founded by", "How soon can I return it"."""
    subject = lower_first(shift(c.subject, "subject"), context)
    rest_words = shift(rest.split(), "object")
    adverbial = lower_first(shift(c.adverbial, "object"), context) if c.adverbial else []
    head = subject[0] if subject else ""
    if c.verb.tense == "be":
        be = c.verb.word.lower()
        if head == "you":
            be = {"is": "are", "was": "were"}.get(be, be)
        elif head == "I":
            be = {"is": "am", "are": "am", "were": "was"}.get(be, be)
        return question_text(wh, be, *subject, *rest_words, *adverbial)
    if c.verb.tense == "modal":
        return question_text(wh, c.verb.word.lower(), *subject, *rest_words, *adverbial)
    aux = c.verb.aux
    if head in ("you", "I") and aux == "does":
        aux = "do"
    return question_text(wh, aux, *subject, c.verb.base, *rest_words, *adverbial)


def _without(rest: str, phrase: str) -> str:
    """`rest` without the phrase asked about (and an "of ..." that hangs on it: "within 35
    days of receiving them")."""
    out = tidy(re.sub(re.escape(phrase) + r"(?: of [^,]*)?", " ", rest, count=1))
    out = re.sub(r"\s+(?:and|or|but|of)\s*$", "", out)
    return tidy(out)


def _unit_plural(span: str) -> str:
    unit = re.sub(rf"^(?:about |around |up to )?{_COUNT} ", "", span, flags=re.I)
    return unit if unit.endswith("s") else unit + "s"


def statement_for(text: str, span: str) -> str:
    """`text` up to the first comma after `span` (an appositive or an aside is not the answer),
    as a sentence: "The shop was founded by Oriel Pentreath, a former ferry engineer ..." →
    "The shop was founded by Oriel Pentreath."."""
    at = text.find(span)
    if at >= 0:
        cut = text.find(", ", at + len(span))
        if cut > 0:
            text = text[:cut]
        start = text.rfind(", ", 0, at)
        if start > 0 and len(text[start + 2 :].split()) >= 4 and text[:start].split()[0].lower() in SUBORDINATE_STARTS:
            text = text[start + 2 :]  # "If you cancel later, we charge a fee of €30" → the main clause
    return as_statement(text)


def clause_candidates(c: Clause, context: str, source: str) -> list[Candidate]:
    rest = c.rest
    out: list[Candidate] = []

    def add(question: str, span: str, kind: str, topic: str = "the answer to that") -> None:
        out.append(Candidate(question, span, kind, statement_for(c.text, span), topic, source_line=source))

    # times: "until 20:00", "at 18:45", "from 07:30 until 11:30"
    m = re.search(rf"\bfrom ({_TIME} (?:until|to|till) {_TIME})\b", rest) or re.search(rf"\b({_TIME_RANGE})\b", rest)
    if m:
        add(_ask(c, "When", _without(rest, m.group(0)), context), m.group(1), "time")
    else:
        m = re.search(rf"\b(?:until|till) ({_TIME})\b", rest)
        if m:
            add(_ask(c, "Until what time", _without(rest, m.group(0)), context), m.group(1), "time")
        m = re.search(rf"\bat ({_TIME})\b", rest)
        if m:
            add(_ask(c, "What time", _without(rest, m.group(0)), context), m.group(1), "time")
    # dates: "on 3 May 2011", "in 1894", "in January", "on the first Sunday of each month"
    m = re.search(
        rf"\b(?:on|in) ((?:\d{{1,2}} )?(?:{_MONTHS})(?: \d{{1,2}})?(?:,? \d{{4}})?|(?:1[89]|20)\d\d)\b", rest
    ) or re.search(r"\bon (the (?:first|second|third|fourth|last) \w+day of (?:each|every|the) \w+)\b", rest)
    if m and not TIME.search(rest):
        add(_ask(c, "When", _without(rest, m.group(0)), context), m.group(1), "date")
    # prices: "is €3.10", "costs €95"
    m = re.match(rf"({_MONEY})\b", rest)
    if m and c.verb.base in ("be", "cost"):
        add(_ask(c, "How much", _without(rest, m.group(0)), context), m.group(1), "price")
    # durations: "lasts 75 minutes", "within 35 days"
    m = re.match(rf"((?:about |around |up to )?{_COUNT} {_DURATION_UNITS})\b", rest, re.I)
    if m and c.verb.base in ("last", "take"):
        add(_ask(c, "How long", _without(rest, m.group(0)), context), m.group(1), "duration")
    m = re.search(rf"\bwithin ({_COUNT} {_DURATION_UNITS})\b", rest, re.I)
    if m:
        add(
            _ask(c, f"Within how many {_unit_plural(m.group(1))}", _without(rest, m.group(0)), context),
            m.group(1),
            "duration",
        )
    # counts: "has 28 seats inside"
    m = re.match(rf"({_COUNT}) ((?:[a-z-]+ ){{0,2}}[a-z-]+s)\b(.*)$", rest)
    if m and c.verb.base == "have" and not MONEY.search(m.group(0)):
        tail = re.split(r" and | but | which ", m.group(3))[0]
        add(_ask(c, f"How many {m.group(2)}", tail, context), m.group(1), "count")
    # people: "was founded by Oriel Pentreath", "are done by Kwame Ashby"
    if c.verb.tense == "be":
        m = re.match(
            r"((?:[a-z]+ )?(?:[a-z]+ed|"
            + "|".join(sorted(PARTICIPLES))
            + r")) by ([A-Z][\w'’-]+(?: [A-Z][\w'’-]+){0,2})",
            rest,
        )
        if m:
            add(_ask(c, "Who", f"{m.group(1)} by", context), m.group(2), "person")
    return out


_THERE_ARE = re.compile(rf"(?i:there) (are|were|is) ({_COUNT}) ((?:[a-z-]+ ){{0,3}}[a-z-]+s)\b([^,]*)")
_PRICED_NOUN = re.compile(
    rf"\b(?:a|an|the) ((?:[\w-]+ ){{0,3}}(?:fee|charge|deposit|price|cost|discount|refund|surcharge)) of ({_MONEY})"
)


def sentence_candidates(sentence: str, context: str = "") -> list[Candidate]:
    if len(sentence.split()) > 45 or sentence.startswith("- "):
        return []
    out: list[Candidate] = []
    for c in clauses(sentence):
        out += clause_candidates(c, context or sentence, sentence)
    # "a late-change fee of €30", "a deposit of €150": wherever they are in the sentence
    for m in _PRICED_NOUN.finditer(sentence):
        statement = next((c.text for c in clauses(sentence) if m.group(2) in c.text), sentence)
        statement = statement_for(statement, m.group(2))
        out.append(
            Candidate(
                f"How much is the {m.group(1)}?",
                m.group(2),
                "price",
                statement,
                f"the {m.group(1)}",
                source_line=sentence,
            )
        )
    # "there are ten covered bike stands in the courtyard"
    there = _THERE_ARE.match(sentence.rstrip("."))
    if there:
        out.append(
            Candidate(
                question_text(f"How many {there.group(3)}", there.group(1), "there", there.group(4)),
                there.group(2),
                "count",
                as_statement(there.group(0)),
                f"how many {there.group(3)} there are",
                source_line=sentence,
            )
        )
    return out
