"""Evidence selection: the answering sentence of a planted document is what the model reads."""

import pytest

from assistant.errors import ValidationError
from assistant.evidence import answer_type, choose_evidence, select_evidence, sentence_spans
from assistant.prompting import Passage, build_messages

PLANTED = (
    "The Gull Rock ferry has sailed from the old pier since 1931. Its skipper, Maren Tolley, "
    "has worked the crossing for twenty years. The crossing takes forty minutes in calm weather. "
    "A return ticket costs €14.50 for adults and €7 for children. Dogs travel free."
)
DISTRACTOR = (
    "The island café opens at 09:30. It serves soup, sandwiches and cake. The café is run by the "
    "harbour trust, and the profits pay for the lifeboat station."
)
TABLE = "Model: Heron 3; Price: €540\nModel: Heron 5; Price: €710\nModel: Kite 2; Price: €395"


def passages():
    return [
        Passage(id=7, source="cafe.md", text=DISTRACTOR, heading="Island café"),
        Passage(id=3, source="ferry.md", text=PLANTED, heading="Gull Rock ferry"),
    ]


def test_sentence_spans_cover_the_text_in_order():
    spans = sentence_spans(PLANTED)
    assert [PLANTED[a:b] for a, b in spans][1].startswith("Its skipper, Maren Tolley")
    assert len(spans) == 5
    assert all(b1 <= a2 for (_, b1), (a2, _) in zip(spans, spans[1:]))
    # every non-blank character is inside a span
    covered = set().union(*(range(a, b) for a, b in spans))
    assert all(i in covered for i, ch in enumerate(PLANTED) if not ch.isspace())
    # a line break separates units: list items and table rows stand alone
    assert len(sentence_spans(TABLE)) == 3


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("How much is a return ticket for an adult?", "€14.50"),
        ("Who skippers the ferry?", "Maren Tolley"),
        ("How long does the crossing take?", "forty minutes"),
        ("When did the ferry start sailing?", "1931"),
        ("What time does the island café open?", "09:30"),
    ],
)
def test_the_best_sentence_holds_the_answer(question, expected):
    chosen = select_evidence(question, passages(), max_sentences=1)
    assert len(chosen) == 1 and len(chosen[0].evidence) == 1
    ev = chosen[0].evidence[0]
    assert expected in ev.text
    # spans point into the cited chunk, which is kept whole
    assert chosen[0].text[ev.start : ev.end] == ev.text
    assert chosen[0].text in (PLANTED, DISTRACTOR)


def test_a_table_row_is_found_by_its_subject():
    table = Passage(id=1, source="prices.md", text=TABLE, heading="Bikes > Prices")
    chosen = select_evidence("What does the Heron 5 cost?", [table], max_sentences=1)
    assert chosen[0].evidence[0].text == "Model: Heron 5; Price: €710"


def test_passages_without_a_chosen_sentence_are_left_out_and_order_follows_the_best():
    chosen = select_evidence("How much is a return ticket?", passages(), max_sentences=2)
    assert [p.id for p in chosen][0] == 3
    assert all(p.evidence for p in chosen)


def test_neighbours_add_the_sentences_around():
    chosen = select_evidence("How much is a return ticket?", passages()[1:], max_sentences=1, neighbours=1)
    texts = [e.text for e in chosen[0].evidence]
    assert texts[1].startswith("A return ticket") and len(texts) == 3


def test_the_prompt_shows_only_the_evidence_and_keeps_the_citation(monkeypatch):
    monkeypatch.setenv("TAILOR_EVIDENCE_SENTENCES", "1")
    msgs = build_messages([], "Who skippers the ferry?", "", passages())
    user = msgs[-1]["content"]
    assert "Maren Tolley" in user and "island café opens" not in user and "Dogs travel free" not in user
    assert "ferry.md — Gull Rock ferry" in user
    monkeypatch.setenv("TAILOR_EVIDENCE_SENTENCES", "0")  # whole passages, as before
    user = build_messages([], "Who skippers the ferry?", "", passages())[-1]["content"]
    assert "Dogs travel free" in user and "island café opens" in user


def test_evidence_already_chosen_is_kept(monkeypatch):
    monkeypatch.setenv("TAILOR_EVIDENCE_SENTENCES", "3")
    chosen = select_evidence("Who skippers the ferry?", passages(), max_sentences=1)
    assert choose_evidence("something else entirely", chosen) == chosen


def test_a_bad_setting_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TAILOR_EVIDENCE_SENTENCES", "two")
    with pytest.raises(ValidationError, match="TAILOR_EVIDENCE_SENTENCES"):
        choose_evidence("q", passages())


def test_answer_types():
    assert answer_type("How far can it go on one charge?") == "quantity"
    assert answer_type("Where can I park when I visit?") == "place"
    assert answer_type("What are your hours on Monday?") == "time"
    assert answer_type("Tell me about the shop") is None
