"""Chunking that follows the document's structure.

Blocks (paragraphs, lists, tables) under the same heading path are packed into chunks of
about `target_tokens` tokens of the embedding model; a chunk never spans two sections, so its
heading path says exactly where it came from. A block larger than the target is split at
line, then sentence, then word boundaries, and a single word longer than the target (a URL, a
base64 blob, a run of Chinese or Japanese text, which has no spaces) at character boundaries.
Consecutive chunks of one section share about `overlap_tokens` of text, so a fact cut at a
boundary is still whole in one of them.

The contract (tests/properties/test_chunker_properties.py checks it on generated documents):
nothing is lost or reordered (with whitespace removed, each chunk is a piece of its section's
text, and consecutive pieces overlap or touch until the section is covered); no chunk is empty;
`token_count` is at most `target_tokens`, or, when the heading line alone leaves less than 16
tokens, that line plus 16; the same input gives the same chunks. Sizes assume `count_tokens`
does not count a text joined at whitespace as more than its parts (true of word-piece
tokenizers up to a token or two at a cut inside a word).

Sizes: all-MiniLM-L6-v2 reads at most 256 word pieces (it was trained on 128) and truncates
the rest, so the default target of 160 (including the heading line that is embedded with the
chunk) keeps every chunk fully seen; three such chunks fit a small chat model's prompt."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from .documents import ParsedDocument

DEFAULT_TARGET_TOKENS = 160
DEFAULT_OVERLAP_TOKENS = 32
HEADING_SEP = " > "


@dataclass
class Chunk:
    position: int  # 0-based order in the document
    heading: str  # heading path, e.g. "Opening Hours > Late Lantern Thursdays"
    text: str
    token_count: int  # tokens of embed_text(), in the embedding model's tokenizer


def context_line(title: str, heading: str) -> str:
    """The line that says where a chunk comes from; embedded and indexed with the chunk so a
    question naming the section ("warranty on frames") finds chunks that do not repeat it."""
    if not heading:
        return title
    if heading == title or heading.startswith(title + HEADING_SEP):
        return heading
    return f"{title}{HEADING_SEP}{heading}"


def embed_text(title: str, heading: str, text: str) -> str:
    return f"{context_line(title, heading)}\n{text}"


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate (word pieces run ~1.3 per word) for callers without a model."""
    return int(len(re.findall(r"\w+|[^\w\s]", text)) * 1.1) + 1


@dataclass
class _Unit:
    text: str
    sep: str  # what joins it to the unit before it: "\n\n" between blocks, "\n" lines, " " words
    tokens: int


# Sentence ends: ". " in most scripts; the CJK full stops need no space after them.
_SENTENCE = re.compile(r"(?<=[.!?;:])\s+(?=\S)|(?<=[\u3002\uff01\uff1f\uff1b])\s*(?=\S)")


def _split(text: str, count: Callable[[str], int], limit: int) -> list[_Unit]:
    """Units of at most `limit` tokens: lines, else sentences, else word windows, else pieces
    of one word. Empty when `text` is only whitespace."""
    n = count(text)
    if n <= limit:
        return [_Unit(text, "\n\n", n)] if text.strip() else []
    out: list[_Unit] = []
    for level, parts in (("\n", [(p, "\n") for p in text.split("\n")]), (" ", _sentences(text))):
        parts = [(p.strip(), sep) for p, sep in parts if p.strip()]
        if len(parts) > 1:
            for p, sep in parts:
                units = _split(p, count, limit)
                for i, u in enumerate(units):
                    out.append(_Unit(u.text, sep if i == 0 else level if u.sep == "\n\n" else u.sep, u.tokens))
            return out
    words = text.split()
    # Windows sized from the average tokens per word; one that still counts too many (its words
    # are longer than average) is halved until it fits.
    step = max(1, int(len(words) * limit / max(n, 1)))
    for start in range(0, len(words), step):
        out += _word_window(words[start : start + step], count, limit)
    return out


def _sentences(text: str) -> list[tuple[str, str]]:
    """(sentence, what joins it to the one before): " ", or "" where no space was there (after
    a CJK full stop), so a chunk shows the text as it was written."""
    out, start, sep = [], 0, " "
    for m in _SENTENCE.finditer(text):
        out.append((text[start : m.start()], sep))
        sep, start = (" " if m.group() else ""), m.end()
    out.append((text[start:], sep))
    return out


def _word_window(words: list[str], count: Callable[[str], int], limit: int) -> list[_Unit]:
    piece = " ".join(words)
    n = count(piece)
    if n <= limit:
        return [_Unit(piece, " ", n)]
    if len(words) > 1:
        half = len(words) // 2
        return _word_window(words[:half], count, limit) + _word_window(words[half:], count, limit)
    return _word_pieces(piece, count, limit)


def _word_pieces(word: str, count: Callable[[str], int], limit: int) -> list[_Unit]:
    """One word of more than `limit` tokens, cut into the longest prefixes that fit. The pieces
    after the first join with "" so those that land in one chunk read as the word again."""
    out: list[_Unit] = []
    rest = word
    while rest:
        # The longest prefix rest[:k] that fits (at least 1 character), by bisection. The search
        # stops at 16 characters per token, so a 20 MB blob is not re-tokenized whole each time.
        lo, hi = 1, min(len(rest), 16 * limit)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count(rest[:mid]) <= limit:
                lo = mid
            else:
                hi = mid - 1
        out.append(_Unit(rest[:lo], "" if out else " ", count(rest[:lo])))
        rest = rest[lo:]
    return out


def chunk_document(
    doc: ParsedDocument,
    count_tokens: Callable[[str], int] = approx_tokens,
    target_tokens: int = DEFAULT_TARGET_TOKENS,
    overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
) -> list[Chunk]:
    if target_tokens < 16:
        raise ValueError("target_tokens must be at least 16")
    overlap_tokens = max(0, min(overlap_tokens, target_tokens // 3))
    sections: list[tuple[tuple[str, ...], list[str]]] = []
    for block in doc.blocks:
        if sections and sections[-1][0] == block.headings:
            sections[-1][1].append(block.text)
        else:
            sections.append((block.headings, [block.text]))

    chunks: list[Chunk] = []
    for headings, texts in sections:
        heading = HEADING_SEP.join(headings)
        budget = max(16, target_tokens - count_tokens(context_line(doc.title, heading)) - 1)
        units: list[_Unit] = []
        for t in texts:
            split = _split(t.strip(), count_tokens, budget)
            if split:  # a block of only whitespace adds nothing (never an empty chunk)
                split[0].sep = "\n\n"
                units += split
        current: list[_Unit] = []
        size = 0
        fresh = 0  # units in `current` that are not overlap from the previous chunk

        def emit():  # called only within this section's loop, so its variables are the current ones
            body = current[0].text + "".join(u.sep + u.text for u in current[1:])  # noqa: B023
            full = embed_text(doc.title, heading, body)  # noqa: B023
            chunks.append(Chunk(len(chunks), heading, body, count_tokens(full)))  # noqa: B023

        for unit in units:
            if current and fresh and size + unit.tokens > budget:
                emit()
                tail: list[_Unit] = []
                tail_size = 0
                for u in reversed(current):
                    if tail_size + u.tokens > overlap_tokens or len(tail) + 1 >= len(current):
                        break
                    tail.insert(0, u)
                    tail_size += u.tokens
                if tail_size + unit.tokens > budget:
                    tail, tail_size = [], 0
                current, size, fresh = tail, tail_size, 0
            current.append(unit)
            size += unit.tokens
            fresh += 1
        if current and fresh:
            emit()
    return chunks
