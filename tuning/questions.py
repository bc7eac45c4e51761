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
the chunk and be 1-12 words (FAQ answers up to 30); the question must be a question of 3-24
words, must not contain its answer, must ask for the span's type ("How much" ↔ a price,
"When" ↔ a time or date, "Who" ↔ a name, "How many" ↔ a number), and a generated question must
not lean on a pronoun (it, they, this, ...) whose referent the reader cannot see.

The parts: question_grammar.py (the candidate, typed spans, the words and verbs the templates
know), structured_questions.py (rows, items, price lists, FAQs), sentence_questions.py
(sentences) and question_filter.py (`problems`, `normalise`, `contains_phrase`). This module
sends each line of a chunk to its template (`candidates`) and re-exports the names other
modules use.
"""

from __future__ import annotations

from .question_filter import MAX_FAQ_SPAN_WORDS, MAX_SPAN_WORDS, contains_phrase, normalise, problems, span_type_ok
from .question_grammar import KINDS, PRONOUN_SUBJECTS, Candidate, as_statement
from .sentence_questions import sentence_candidates, split_sentences
from .structured_questions import (
    _CELL,
    _DASH_ITEM,
    _LEADER,
    attribute_candidates,
    dash_item_candidates,
    faq_candidates,
    leader_candidates,
    row_candidates,
    subject_name,
    table_cells,
)

__all__ = [
    "KINDS",
    "MAX_FAQ_SPAN_WORDS",
    "MAX_SPAN_WORDS",
    "Candidate",
    "candidates",
    "contains_phrase",
    "normalise",
    "problems",
    "span_type_ok",
]


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
