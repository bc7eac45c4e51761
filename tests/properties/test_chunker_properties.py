"""Property-based tests of the chunker (retrieval/chunking.py), with hypothesis.

The chunker's contract, checked on generated documents: nothing is lost, invented or
reordered (with whitespace removed, every chunk is a piece of its section's text and
consecutive pieces overlap or touch until the section is covered); no chunk is empty; each
chunk's heading is its section's heading path; positions count 0, 1, 2, ...; `token_count` is
the count of what gets embedded and stays within the target (or the heading line plus 16 tokens
when the heading alone nearly fills it); the same input gives the same chunks. Markdown files
go through the real parser, so the heading paths are checked against the `#` headings written.

Two cheap token counters stand in for the embedding model's tokenizer (loading MiniLM for
every example would be slow): the chunker's own `approx_tokens`, and `pieces`, which counts
like a word-piece tokenizer does where it matters (one token per CJK character, long words
several tokens, punctuation one each) and so drives the sentence, word and in-word cuts."""

from __future__ import annotations

import bisect
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retrieval.chunking import HEADING_SEP, approx_tokens, chunk_document, context_line, embed_text
from retrieval.documents import Block, DocumentError, ParsedDocument, parse_document

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_CJK = "\u3040-\u30ff\u4e00-\u9fff"
_PIECE = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+|[^\w\s]")
_CJK_STOP = re.compile("[\u3002\uff01\uff1f\uff1b]")


def pieces(text: str) -> int:
    """Word-piece-like count: a CJK character is a token, a word one token per 6 characters,
    each punctuation mark one. Joining texts at whitespace (or gluing word pieces back) never
    counts more than the parts, the assumption the chunker's size bound rests on."""
    return sum(1 + (len(t) - 1) // 6 for t in _PIECE.findall(text))


COUNTERS = {"approx_tokens": approx_tokens, "pieces": pieces}


# ---- generated input -----------------------------------------------------------------------------


def _chars(alphabet: str, lo: int, hi: int):
    return st.text(st.sampled_from(alphabet), min_size=lo, max_size=hi)


_no_space_unicode = st.text(st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1, max_size=12)
words = st.one_of(
    _chars("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789", 1, 12),  # ordinary words
    _chars("中文字本日語かなカナ", 1, 40),  # CJK runs: no spaces between words
    _chars(".,;:!?-/()'\"", 1, 6),  # punctuation
    _no_space_unicode,  # anything else (emoji, combining marks, RTL, ...)
    _chars("abcdef0123456789+/=._~%", 60, 400),  # a very long "word": a URL or a base64 blob
)
separators = st.sampled_from([" ", " ", " ", "\n", "\n\n", ". ", "? ", "。", "\t", "  \n  ", "\u00a0", "\u3000"])


@st.composite
def block_texts(draw):
    parts = draw(st.lists(st.tuples(words, separators), min_size=1, max_size=60))
    return "".join(w + s for w, s in parts)


any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)
heading_names = _chars("abcdefghij XYZ中文0123456789", 1, 20).map(str.strip).filter(bool)
heading_paths = st.lists(heading_names, max_size=3).map(tuple)


@st.composite
def documents(draw):
    blocks = draw(st.lists(st.tuples(heading_paths, st.one_of(block_texts(), any_text)), min_size=1, max_size=8))
    # Runs of blocks under one heading, as the parsers produce them (they often repeat a path).
    title = draw(heading_names)
    return ParsedDocument(title, "md", [Block(h, t) for h, t in blocks])


sizes = st.tuples(st.integers(16, 120), st.integers(0, 60))


# ---- the contract ---------------------------------------------------------------------------------


def _squash(text: str) -> str:
    return "".join(text.split())


def _sections(doc: ParsedDocument) -> list[tuple[str, str]]:
    """(heading path, whitespace-free text) per run of blocks under one path, as the chunker
    groups them; runs with no visible text make no chunks (so the runs around one merge)."""
    out: list[tuple[tuple[str, ...], list[str]]] = []
    for b in doc.blocks:
        if out and out[-1][0] == b.headings:
            out[-1][1].append(b.text)
        else:
            out.append((b.headings, [b.text]))
    merged: list[tuple[str, str]] = []
    for h, texts in out:
        heading, text = HEADING_SEP.join(h), _squash("".join(texts))
        if not text:
            continue
        if merged and merged[-1][0] == heading:  # two runs split by an empty one read as one
            merged[-1] = (heading, merged[-1][1] + text)
        else:
            merged.append((heading, text))
    return merged


def _occurrences(haystack: str, needle: str) -> list[int]:
    found, at = [], haystack.find(needle)
    while at >= 0:
        found.append(at)
        at = haystack.find(needle, at + 1)
    return found


def _covers_in_order(section: str, pieces_: list[str]) -> bool:
    """True if the pieces can be placed in `section` so the first starts it, each next one
    starts after the previous start and no later than its end (overlap or touch), and the last
    ends it. Checked over every placement, so repeated text cannot fool it either way."""
    starts = [0] if section.startswith(pieces_[0]) else []
    for prev, piece in zip(pieces_, pieces_[1:]):
        starts = sorted(
            s
            for s in _occurrences(section, piece)
            if bisect.bisect_left(starts, s) > bisect.bisect_left(starts, s - len(prev))
        )
        if not starts:
            return False
    return any(s + len(pieces_[-1]) == len(section) for s in starts)


def assert_contract(doc: ParsedDocument, chunks, count, target: int) -> None:
    assert [c.position for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.text.strip(), f"empty chunk {c}"
        assert c.token_count == count(embed_text(doc.title, c.heading, c.text))
        assert c.token_count <= max(target, count(context_line(doc.title, c.heading)) + 16), c
    # Group the chunks as runs of one heading and match them with the sections, in order.
    runs: list[tuple[str, list[str]]] = []
    for c in chunks:
        if runs and runs[-1][0] == c.heading:
            runs[-1][1].append(_squash(c.text))
        else:
            runs.append((c.heading, [_squash(c.text)]))
    sections = _sections(doc)
    assert [h for h, _ in runs] == [h for h, _ in sections]
    for (heading, text), (_, chunk_texts) in zip(sections, runs):
        assert _covers_in_order(text, chunk_texts), (heading, text, chunk_texts)
    # Every word that fits in a chunk is whole in one of its section's chunks. (A CJK full stop
    # inside a "word" ends a sentence: those scripts put no spaces between words or sentences.)
    by_heading: dict[str, list[str]] = {}
    for c in chunks:
        by_heading.setdefault(c.heading, []).append(c.text)
    for b in doc.blocks:
        for w in b.text.split():
            if count(w) <= 16 and not _CJK_STOP.search(w[:-1]):
                assert any(w in t for t in by_heading[HEADING_SEP.join(b.headings)]), w


# ---- properties ---------------------------------------------------------------------------------


@SETTINGS
@given(documents(), sizes, st.sampled_from(sorted(COUNTERS)))
def test_chunks_keep_all_text_in_order_within_size_and_heading(doc, size, counter):
    target, overlap = size
    count = COUNTERS[counter]
    chunks = chunk_document(doc, count, target_tokens=target, overlap_tokens=overlap)
    assert_contract(doc, chunks, count, target)


@SETTINGS
@given(documents(), sizes)
def test_same_input_same_chunks(doc, size):
    first = chunk_document(doc, pieces, *size)
    again = chunk_document(
        ParsedDocument(doc.title, doc.kind, [Block(b.headings, b.text) for b in doc.blocks]), pieces, *size
    )
    assert first == again


_md_words = _chars("abcdefghijklmnopqrstuvwxyz0123456789中文字", 1, 14)
_md_lines = st.lists(_md_words, min_size=1, max_size=25).map(" ".join)
_md_items = st.one_of(
    st.tuples(st.just("heading"), st.integers(1, 6), heading_names),
    st.tuples(st.just("para"), st.just(0), st.lists(_md_lines, min_size=1, max_size=4).map("\n".join)),
)


@SETTINGS
@given(st.lists(_md_items, min_size=1, max_size=14), sizes, st.sampled_from(sorted(COUNTERS)))
def test_markdown_heading_paths_follow_the_hash_headings(items, size, counter):
    count = COUNTERS[counter]
    lines, expected, stack, title = [], [], [], None
    for kind, level, text in items:
        if kind == "heading":
            lines.append("#" * level + " " + text)
            title = title or (text if level == 1 else None)
            # What a reader sees: a heading replaces its level and everything below it.
            del stack[level - 1 :]
            stack += [""] * (level - 1 - len(stack)) + [text]
        else:
            lines.append(text)
            expected.append((HEADING_SEP.join(h for h in stack if h), text))
        lines.append("")
    source = "\n".join(lines)
    if not expected:
        with pytest.raises(DocumentError, match="notes.md: no text found"):
            parse_document("notes.md", source.encode())
        return
    doc = parse_document("notes.md", source.encode())
    assert doc.title == (title or "notes")
    chunks = chunk_document(doc, count, target_tokens=size[0], overlap_tokens=size[1])
    assert_contract(doc, chunks, count, size[0])
    for heading, text in expected:
        mine = [c.text for c in chunks if c.heading == heading]
        for w in text.split():
            assert any(w in t for t in mine), (w, heading, [c.heading for c in chunks])


@SETTINGS
@given(any_text, st.sampled_from(["page.md", "page.txt", "page.html"]), sizes)
def test_any_text_file_chunks_or_is_refused_by_name(text, name, size):
    try:
        doc = parse_document(name, text.encode("utf-8"))
    except DocumentError as exc:
        assert str(exc).startswith(f"{name}: ")
        return
    assert_contract(doc, chunk_document(doc, pieces, *size), pieces, size[0])


# ---- the examples hypothesis found, kept as plain regression tests ------------------------------


def _one_block(text: str) -> ParsedDocument:
    return ParsedDocument("Guide", "md", [Block(("Guide",), text)])


def test_cjk_paragraph_without_spaces_is_cut_to_the_target():
    # Before the fix: one 901-token chunk (MiniLM would have read its first 256 tokens only).
    doc = _one_block("中文字" * 300)
    chunks = chunk_document(doc, pieces, target_tokens=64, overlap_tokens=16)
    assert len(chunks) >= 14 and all(c.token_count <= 64 for c in chunks)
    assert "".join(c.text for c in chunks) == "中文字" * 300  # the pieces glue back to the text
    assert_contract(doc, chunks, pieces, 64)


def test_cjk_sentences_are_cut_at_the_full_stop():
    doc = _one_block("今日本日文字字文。" * 30)
    chunks = chunk_document(doc, pieces, target_tokens=40, overlap_tokens=0)
    assert all(c.text.endswith("。") for c in chunks)
    assert_contract(doc, chunks, pieces, 40)


def test_one_long_punctuation_word_among_short_ones():
    # Before the fix: the even word windows put the 500-dot word in a 552-token chunk.
    doc = _one_block("a b c d e f g h i j k " + "." * 500 + " x y z")
    chunks = chunk_document(doc, approx_tokens, target_tokens=64, overlap_tokens=16)
    assert max(c.token_count for c in chunks) <= 64
    assert_contract(doc, chunks, approx_tokens, 64)


def test_a_block_of_only_whitespace_makes_no_chunk():
    # Before the fix: a chunk with empty text.
    doc = ParsedDocument("Guide", "md", [Block(("Guide",), " \n\t "), Block(("Guide", "B"), "beta")])
    assert [(c.heading, c.text) for c in chunk_document(doc)] == [("Guide > B", "beta")]


def test_long_heading_still_leaves_sixteen_tokens_of_text():
    doc = ParsedDocument("T", "md", [Block(("word " * 100,), "hello " * 40)])
    chunks = chunk_document(doc, approx_tokens, target_tokens=64, overlap_tokens=0)
    assert_contract(doc, chunks, approx_tokens, 64)
    assert all(approx_tokens(c.text) <= 16 for c in chunks)
