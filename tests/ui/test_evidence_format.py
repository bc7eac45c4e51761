"""Evidence in the reply (ui/evidence_format.py): the citations under a chat answer and the
Knowledge tab's search rows show the supporting sentence(s) highlighted inside a window of
the cited chunk; document text is escaped so it shows as text; replies stored before evidence
existed render as before."""

from __future__ import annotations

import html
import re

import pytest

from assistant.conversations import StoredMessage
from assistant.evidence import Evidence, select_evidence, sentence_spans
from assistant.prompting import Passage
from ui.chat_display import chat_messages
from ui.evidence_format import ELLIPSIS, escape_markdown, evidence_snippet
from ui.knowledge_format import citations_markdown, search_rows

MARK = re.compile(r"<mark>(.*?)</mark>")

HOURS = (
    "Lantern Bay Bikes is open every day from April to October, and on weekends in winter. "
    "On weekdays the shop opens at 09:00 and closes at 18:00, with the workshop closing an hour "
    "earlier. On Sunday the shop opens at 10:00 and closes at 16:00, and the workshop stays "
    "closed all day. Rentals must be back by closing time; a late return costs 15 euro per "
    "started hour. Bank holidays follow the Sunday hours unless the notice board says otherwise."
)
QUESTION = "What are the opening hours on Sunday?"


def _flat(text: str) -> str:
    return " ".join(text.split())


def _cited(passage: Passage) -> dict:
    """A reply's stored retrieval info, as assistant/chat.py stores it."""
    return {"abstained": False, "declined": False, "reason": "", "passages": [passage.as_dict()]}


def _quoted(line: str) -> str:
    """The snippet of one citation line: what is between “ and ”."""
    return line[line.index("“") + 1 : line.rindex("”")]


def _shown_pieces(shown: str) -> list[str]:
    """The stretches of source text a snippet shows (highlights and context), unescaped."""
    return [html.unescape(s).strip() for s in re.split(r"</?mark>|…", shown) if s.strip()]


def test_the_highlight_is_the_cited_chunk_at_the_evidence_offsets():
    chosen = select_evidence(QUESTION, [Passage(id=7, source="opening_hours.md", text=HOURS, heading="Hours")], 1)
    assert len(chosen) == 1 and len(chosen[0].evidence) == 1
    ev = chosen[0].evidence[0]
    assert "Sunday" in ev.text and HOURS[ev.start : ev.end] == ev.text

    shown = citations_markdown(_cited(chosen[0]))
    line = shown.split("\n\n")[-1]
    assert line.startswith("[1] *opening_hours.md — Hours*: “")  # still points at chunk and document
    snippet = _quoted(line)
    marks = MARK.findall(snippet)
    assert [html.unescape(m) for m in marks] == [_flat(HOURS[ev.start : ev.end])]
    # The highlight sits inside a window of the same chunk, with context either side, and "…"
    # where the chunk was cut.
    assert snippet.startswith(ELLIPSIS + " ") and snippet.endswith(" " + ELLIPSIS)
    before, _, after = snippet.partition(marks[0])
    assert html.unescape(before.removeprefix(ELLIPSIS).removesuffix("<mark>")).strip()
    assert html.unescape(after.removesuffix(ELLIPSIS).removeprefix("</mark>")).strip()
    for piece in _shown_pieces(snippet):
        assert piece in _flat(HOURS), piece
    window = html.unescape(re.sub(r"</?mark>", "", snippet)).strip(ELLIPSIS + " ")
    assert _flat(HOURS[ev.start : ev.end]) in window and window in _flat(HOURS)


def test_several_sentences_in_one_chunk_each_highlighted_in_document_order():
    spans = sentence_spans(HOURS)
    evidence = [Evidence(a, b, HOURS[a:b]) for a, b in (spans[3], spans[1])]  # given out of order
    shown = evidence_snippet(HOURS, evidence, 200)
    assert [html.unescape(m) for m in MARK.findall(shown)] == [_flat(HOURS[a:b]) for a, b in (spans[1], spans[3])]
    # The sentence between them is context, the first and last are left out ("…").
    assert shown.startswith(ELLIPSIS) and shown.endswith(ELLIPSIS)
    for piece in _shown_pieces(shown):
        assert piece in _flat(HOURS), piece


def test_a_sentence_far_into_a_long_chunk_is_shown_with_a_bounded_window():
    text = "Filler words about nothing much. " * 40 + "The deposit is 50 euro per bike. " + "More filler here. " * 40
    start = text.index("The deposit")
    end = start + len("The deposit is 50 euro per bike.")
    shown = evidence_snippet(text, [{"start": start, "end": end, "text": text[start:end]}], 200)
    assert MARK.findall(shown) == ["The deposit is 50 euro per bike."]
    assert shown.startswith(ELLIPSIS + " ") and shown.endswith(" " + ELLIPSIS)
    assert len(html.unescape(shown)) <= 260  # about `limit`, cut at words
    assert not re.search(r"\w…|…\w", shown)  # cut between words, not inside one


EVIL = (
    "Read this first. <script>alert('x')</script> Click [here](http://evil.example/steal) or "
    "<img src=x onerror=alert(1)> now. Visit https://evil.example and www.evil.example today. "
    "Mail pay@evil.example. **Loud** _shout_ `code` ~~gone~~ $$\\frac{1}{0}$$ done."
)


def _render(markdown: str) -> str:
    """CommonMark with raw HTML on (the chatbot renders Markdown that way, then sanitizes)."""
    markdown_it = pytest.importorskip("markdown_it")
    return markdown_it.MarkdownIt("commonmark").enable("strikethrough").render(markdown)


@pytest.mark.parametrize("with_evidence", [True, False])
def test_document_text_and_labels_are_shown_inert(with_evidence):
    start, end = EVIL.index("<script>"), len(EVIL)  # everything after the first sentence
    evidence = [{"start": start, "end": end, "text": EVIL[start:end], "score": 1.0}] if with_evidence else []
    retrieval = {
        "abstained": False,
        "passages": [
            {
                "id": 1,
                "source": "[evil](http://evil.example).md",
                "heading": "<b>Head</b> *x*",
                "text": EVIL,
                "evidence": evidence,
            }
        ],
    }
    shown = citations_markdown(retrieval)
    assert "$$" not in shown  # Gradio renders $$…$$ as LaTeX before Markdown
    assert "://" not in shown and "www." not in shown and "@" not in shown  # nothing to auto-link (GFM)
    rendered = _render(shown)
    tags = set(re.findall(r"</?([a-zA-Z]+)", rendered))
    assert tags <= {"p", "em", "strong", "mark"}, rendered  # no a, script, img, code, del, b
    assert rendered.count("<mark>") == (1 if with_evidence else 0)
    assert rendered.count("<strong>") == 1 and rendered.count("<em>") == 1  # ours: **Sources**, *label*
    text = html.unescape(re.sub(r"<[^>]+>", "", rendered))
    assert "<script>alert('x')</script>" in text and "[here](http://evil.example/steal)" in text
    assert "[evil](http://evil.example).md — <b>Head</b> *x*" in text
    if with_evidence:
        assert html.unescape(MARK.findall(shown)[0]) == EVIL[start:end]


def test_escaping_leaves_plain_text_and_file_names_alone():
    plain = "Open 09:00-18:00, closed on Sundays (except in July). Ask at desk 3; it's 50% off?"
    assert escape_markdown(plain) == plain
    assert escape_markdown("opening_hours.md") == "opening_hours.md"
    assert _render(escape_markdown("- not a list")) == "<p>- not a list</p>\n"
    assert _render(escape_markdown("1. not a list")) == "<p>1. not a list</p>\n"
    assert _render(escape_markdown("# not a heading")) == "<p># not a heading</p>\n"


def _old_citations(retrieval: dict) -> str:
    """How citations rendered before evidence (for plain document text)."""
    lines = ["**Sources**"]
    for i, p in enumerate(retrieval["passages"], start=1):
        where = p.get("source", "?") + (f" — {p['heading']}" if p.get("heading") else "")
        flat = " ".join(p["text"].split())
        cut = flat if len(flat) <= 200 else flat[:199].rstrip() + "…"
        lines.append(f"[{i}] *{where}*: “{cut}”")
    return "\n\n".join(lines)


def test_replies_stored_before_evidence_render_as_before():
    old = {
        "abstained": False,
        "declined": False,
        "reason": "",
        "passages": [
            {"id": 3, "source": "opening_hours.md", "heading": "Hours", "text": HOURS, "score": 0.8, "scores": {}},
            {"id": 4, "source": "about.md", "heading": "", "text": "We rent bikes.\nSince 1998.", "score": 0.5},
        ],
    }
    assert citations_markdown(old) == _old_citations(old)
    # the chat shows them folded under the reply's label, the reply's text untouched
    msgs = [
        StoredMessage(1, "c", "user", "When?", ""),
        StoredMessage(2, "c", "assistant", "At ten.", "", retrieval=old),
    ]
    history = chat_messages(msgs)
    assert history[1]["content"] == _old_citations(old) and history[2]["content"] == "At ten."


@pytest.mark.parametrize(
    "evidence",
    [
        [{"start": 5, "end": 2, "text": ""}],  # backwards
        [{"start": 0, "end": 10_000, "text": HOURS}],  # past the end
        [{"start": 0, "end": 10, "text": "something else"}],  # does not match the chunk
        [{"start": "0", "end": "10"}],  # not numbers
        [{"text": "no offsets"}],
        None,
    ],
)
def test_unusable_stored_evidence_falls_back_to_the_start_of_the_chunk(evidence):
    passage = {"source": "opening_hours.md", "heading": "Hours", "text": HOURS, "evidence": evidence}
    retrieval = {"abstained": False, "passages": [passage]}
    assert citations_markdown(retrieval) == _old_citations(retrieval)


def test_search_rows_highlight_evidence_and_escape_text():
    chosen = select_evidence(QUESTION, [Passage(id=1, source="opening_hours.md", text=HOURS, heading="Hours")], 1)[0]
    plain = Passage(id=2, source="x.md", text="Use <b>tags</b> [x](http://y)", heading="")
    rows = search_rows([chosen, plain])
    assert [html.unescape(m) for m in MARK.findall(rows[0][6])] == [chosen.evidence[0].text]
    assert rows[1][6] == escape_markdown(plain.text) and "<b>" not in rows[1][6]
