"""Questions from the lines a document's structure makes: table rows rendered
`Header: value; Header: value`, `- Key: value` list items under a heading that names a thing,
`- Name – description` items, price-list lines ("Harbour Check (basic service) ... EUR 45") and
FAQ sections (a heading that is a question, answered by its first sentence).

The structure says what is asked about (a row's first cell, the heading, the item's name) and
what answers it (a cell, a value), so these templates need no parse of a sentence:
sentence_questions.py does that for prose. `candidates` (tuning/questions.py) decides which
line goes to which template.
"""

from __future__ import annotations

import re

from .question_grammar import (
    _MONEY,
    FUNCTION_STARTS,
    MONEY,
    NAME,
    PERSPECTIVE,
    PRONOUN_SUBJECTS,
    TIME,
    Candidate,
    as_statement,
    sentence_case,
    verb_base,
)
from .sentence_questions import split_sentences


# ---- what a heading names, what a cell answers ------------------------------------------------
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
