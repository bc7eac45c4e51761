"""Questions from document chunks, without a model: templates over the shapes documents have.

A grounding example needs a question whose answer is a span of one chunk. A 135M model cannot
write such questions, so they come from templates over what the parser makes of documents
(retrieval/documents.py):

- table rows, rendered `Header: value; Header: value` ("Day: Monday; Shop: 10:00–17:30"):
  the first cell names the row, every other short cell is an answer ("What are the shop hours
  on Monday?" → "10:00–17:30"; "How much does the Beacon Shell cost?" → "€74");
- list items `- Key: value` under a heading that names a thing ("## Tidewalker 8 (city bike)",
  "- Price: €689" → "What is the price of the Tidewalker 8?"), and `- Name – description`
  items ("- Dario Lund-Vasquez – head mechanic since 2013" → "Who is Dario Lund-Vasquez?");
- FAQ sections: a heading that is a question, answered by its first sentence;
- sentences, turned into a question about one typed span with do-support and the subject
  kept: a time ("Every Thursday we stay open until 20:00." → "Until what time do you stay
  open every Thursday?"), a date or year, a price ("A flat white is €3.10." → "How much is a
  flat white?"; "a late-change fee of €30" → "How much is the late-change fee?"), a duration
  ("lasts 75 minutes" → "How long does your standard session last?"), a count ("has 28 seats
  inside" → "How many seats does the Salt Kettle have inside?"), a person ("was founded by
  Oriel Pentreath" → "Who was the shop founded by?"). "we"/"our" become "you"/"your": the
  shop's documents speak as the shop, the customer asks the shop.

Each candidate carries its answer type and a short statement that contains the span verbatim
(the clause of the source sentence, or a template sentence for rows and items), from which
the composer writes the answer. `problems()` is the filter: the span must occur verbatim in
the chunk and be 1-12 words (FAQ answers up to 30); the question must be a question of 4-24
words, must not contain its answer, must ask for the span's type ("How much" ↔ a price,
"When" ↔ a time or date, "Who" ↔ a name, "How many" ↔ a number), and a generated question must
not lean on a pronoun (it, they, this, ...) whose referent the reader cannot see.
"""

from __future__ import annotations

import re
import unicodedata
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


def subject_name(heading: str) -> str:
    """What a heading names, if it names one thing: "Tidewalker 8 (city bike)" → "Tidewalker 8".
    Generic headings ("Regular weekly hours", "Our story", "What should I bring?", "FREE
    THINGS") and categories ("Workshop Series bikes") name nothing."""
    last = heading.split(" > ")[-1].strip()
    last = re.sub(r"\s*\([^)]*\)\s*$", "", last).strip()
    if not last or last.endswith("?") or len(last.split()) > 5 or last.isupper():
        return ""
    words = last.split()
    if words[-1][:1].islower() and words[-1].endswith("s"):
        return ""  # a category: "Workshop Series bikes", "Electric bikes"
    if words[0].lower() in FUNCTION_STARTS | PRONOUN_SUBJECTS | set(PERSPECTIVE):
        return ""
    caps = sum(1 for w in words if w[:1].isupper())
    if any(ch.isdigit() for ch in last) and words[0][:1].isupper():
        return last
    return last if len(words) >= 2 and caps >= 2 else ""


def with_article(name: str) -> str:
    """ "the Tidewalker 8"; a day or a phrase in lower case stays bare."""
    if re.fullmatch(r"(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)days?", name):
        return name
    if name[:1].islower() or name.lower().startswith(("the ", "a ", "an ")):
        return name
    return f"the {name}"


def plural_key(key: str) -> bool:
    last = key.split()[-1].lower()
    return last.endswith("s") and not last.endswith(("ss", "us", "is"))


def short_value(value: str, limit: int = 10) -> str | None:
    """The answer part of a cell: the whole value when short, else the part before an
    explanatory continuation (", so ...", "; ..."); None when still too long."""
    value = value.strip().rstrip(".")
    if len(value.split()) <= limit:
        return value
    for cut in (", so ", "; ", " so that "):
        if cut in value:
            head = value.split(cut, 1)[0].strip()
            if 1 <= len(head.split()) <= limit:
                return head
    return None


# ---- rows, items, price lists, FAQs -----------------------------------------------------------
_CELL = re.compile(r"^\s*([A-Z][^:;]{0,40}?):\s+(.+?)\s*$")
_DASH_ITEM = re.compile(r"^(?P<name>[A-Z][\w'’ .&-]{1,40}?)\s+[–—]\s+(?P<rest>.+)$")
_LEADER = re.compile(rf"^(?P<name>[A-Z][^.]{{2,60}}?)\s*\.{{3}}\s*(?P<price>{_MONEY})$")
_WEEKDAY = re.compile(r"^(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day$")
_WH_KEYS = {"where", "when", "what", "who", "how", "why", "which"}
_FREE_TEXT_KEYS = {"notes", "note", "details", "description", "comment", "comments"}


def table_cells(line: str) -> list[tuple[str, str]] | None:
    parts = line.split("; ")
    if len(parts) < 2:
        return None
    cells = []
    for p in parts:
        m = _CELL.match(p)
        if not m:
            return None
        cells.append((m.group(1).strip(), m.group(2).strip()))
    return cells


def attribute_candidates(subject: str, key: str, value: str, line: str) -> list[Candidate]:
    """Questions about `key` of `subject` (a row's first cell or a heading), answered by `value`."""
    span = short_value(value)
    k = key.lower()
    if span is None or not subject or k in _FREE_TEXT_KEYS or k.split()[0] in _WH_KEYS:
        return []
    the_subject = with_article(subject)
    if MONEY.fullmatch(span) and k in ("price", "cost", "fee", "charge"):
        topic = f"the price of {the_subject}"
        return [
            Candidate(
                f"How much does {the_subject} cost?",
                span,
                "price",
                as_statement(f"{the_subject} costs {span}"),
                topic,
                source_line=line,
            ),
            Candidate(
                f"What is the price of {the_subject}?",
                span,
                "price",
                as_statement(f"the price of {the_subject} is {span}"),
                topic,
                source_line=line,
            ),
        ]
    if k.startswith("best for"):
        statement = as_statement(f"{the_subject} is best for {span}")
        return [
            Candidate(
                f"What is {the_subject} best for?",
                span,
                "attribute",
                statement,
                f"what {the_subject} is best for",
                source_line=line,
            )
        ]
    if k.endswith("ing") and len(k.split()) == 1:  # "Charging: USB-C": what about charging?
        statement = f"{sentence_case(k)} on {the_subject}: {span}."
        topic = f"{k} on {the_subject}"
        return [Candidate(f"What about {k} on {the_subject}?", span, "attribute", statement, topic, source_line=line)]
    verb = "are" if plural_key(key) else "is"
    statement = as_statement(f"the {k} of {the_subject} {verb} {span}")
    return [
        Candidate(
            f"What {verb} the {k} of {the_subject}?",
            span,
            "attribute",
            statement,
            f"the {k} of {the_subject}",
            source_line=line,
        )
    ]


def row_candidates(cells: list[tuple[str, str]], line: str) -> list[Candidate]:
    (key0, name), rest = cells[0], cells[1:]
    if not (_WEEKDAY.fullmatch(name) or key0.lower() == "day"):
        return [c for key, value in rest for c in attribute_candidates(name, key, value, line)]
    out: list[Candidate] = []
    for key, value in rest:  # "Day: Monday; Shop: 10:00–17:30; Workshop: Closed"
        span = short_value(value, 8)
        if span is None:
            continue
        k = key.lower()
        timed = bool(TIME.search(span))
        statement = f"On {name} the {k} is open {span}" if timed else f"On {name} the {k} is {span}"
        out.append(
            Candidate(
                f"What are the {k} hours on {name}?",
                span,
                "time" if timed else "attribute",
                as_statement(statement),
                f"the {k} hours on {name}",
                source_line=line,
            )
        )
    return out


def dash_item_candidates(name: str, rest: str, line: str) -> list[Candidate]:
    """ "- Foghorn Bell – €9.50. A solid brass bell", "- Ines Halloran – rentals manager, ..." """
    first = re.split(r"(?<=[.!?])\s+", rest.strip(), maxsplit=1)[0].rstrip(".")
    if MONEY.fullmatch(first):
        the_name = with_article(name)
        return [
            Candidate(
                f"How much is {the_name}?",
                first,
                "price",
                as_statement(f"{the_name} costs {first}"),
                f"the price of {the_name}",
                source_line=line,
            )
        ]
    if not NAME.fullmatch(name) or not first[:1].islower():
        return []
    words = first.split()
    if verb_base(words[0]) is not None:  # "runs the online store and answers most of the email"
        clause = re.split(r" and | but |, ", first)[0]
        if not 2 <= len(clause.split()) <= 10:
            return []
        return [
            Candidate(
                f"What does {name} do?",
                clause,
                "attribute",
                as_statement(f"{name} {clause}"),
                f"what {name} does",
                source_line=line,
            )
        ]
    role = first if len(words) <= 10 else re.split(r", | who | and ", first)[0]
    if not 1 <= len(role.split()) <= 10:
        return []
    article = "" if role.split()[0] in ("a", "an", "the", "our") else "the "
    out = [
        Candidate(
            f"Who is {name}?",
            role,
            "attribute",
            as_statement(f"{name} is {article}{role}"),
            f"who {name} is",
            source_line=line,
        )
    ]
    core = re.split(r",| who | and | since | for | at ", role)[0].strip()
    if article and 1 <= len(core.split()) <= 4 and not any(ch.isdigit() for ch in core):
        out.append(
            Candidate(
                f"Who is the {core}?",
                name,
                "person",
                as_statement(f"the {core} is {name}"),
                f"who the {core} is",
                source_line=line,
            )
        )
    return out


def leader_candidates(name: str, price: str, line: str) -> list[Candidate]:
    """A price list line: "Harbour Check (basic service) ... EUR 45"."""
    bare = re.sub(r"\s*\([^)]*\)", "", name).strip()
    if not bare or len(name.split()) > 10:
        return []
    proper = all(w[:1].isupper() for w in bare.split() if w[:1].isalpha())
    thing = with_article(bare) if proper else name[:1].lower() + name[1:]
    found = verb_base(thing.split()[0])
    if found is not None and found[1] == "plural":  # "Build a bike bought elsewhere" → "the price to build ..."
        topic = f"the price to {thing}"
        statement = as_statement(f"the price to {thing} is {price}")
        return [Candidate(f"What is the price to {thing}?", price, "price", statement, topic, source_line=line)]
    topic = f"the price of {thing}"
    return [
        Candidate(
            f"What is the price of {thing}?",
            price,
            "price",
            as_statement(f"the price of {thing} is {price}"),
            topic,
            source_line=line,
        )
    ]


def faq_candidates(heading: str, text: str) -> list[Candidate]:
    """An FAQ section: the heading is the question, its first sentence the answer."""
    question = heading.split(" > ")[-1].strip()
    if not question.endswith("?") or not 3 <= len(question.split()) <= 20:
        return []
    first_block = text.strip().split("\n")[0]
    if first_block.startswith(("- ", "* ", "• ")):
        return []
    sentences = split_sentences(first_block)
    if not sentences:
        return []
    span = sentences[0]
    if len(span.split()) <= 2:
        if span.rstrip(".!").lower() not in ("yes", "no") or len(sentences) < 2:
            return []
        span = f"{span} {sentences[1]}"  # "Yes." / "No." and the reason
    return [Candidate(question, span, "faq", span, generated=False, source_line=first_block)]


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


# ---- a chunk ----------------------------------------------------------------------------------
def candidates(heading: str, text: str) -> list[Candidate]:
    """Every question the templates make of one chunk (unfiltered: see `problems`)."""
    out = faq_candidates(heading, text)
    subject = subject_name(heading)
    for line in text.split("\n"):
        line = line.strip()
        if not line:
            continue
        cells = table_cells(line)
        if cells:
            out += row_candidates(cells, line)
            continue
        m = _LEADER.match(line)
        if m:
            out += leader_candidates(m.group("name").strip(), m.group("price"), line)
            continue
        if line.startswith(("- ", "* ", "• ")):
            item = line[2:].strip()
            m = _CELL.match(item)
            if m and subject and len(m.group(1).split()) <= 4 and not m.group(1)[:1].isdigit():
                out += attribute_candidates(subject, m.group(1), m.group(2), line)
                continue
            if m:
                # "Lost lock key: replacing a lost lock key costs €35.": the value may be a
                # sentence of its own; one whose subject is a pronoun leans on the key, so no.
                value = m.group(2)
                if value.split()[0].lower() not in PRONOUN_SUBJECTS:
                    out += sentence_candidates(as_statement(value), text)
                continue
            m = _DASH_ITEM.match(item)
            if m:
                out += dash_item_candidates(m.group("name").strip(), m.group("rest"), line)
                continue
            if item[:1].isupper():
                out += sentence_candidates(as_statement(item), text)
            continue
        for sentence in split_sentences(line):
            out += sentence_candidates(sentence, text)
    return out


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
