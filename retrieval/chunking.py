"""Chunking that follows the document's structure.

Blocks (paragraphs, lists, tables) under the same heading path are packed into chunks of
about `target_tokens` tokens of the embedding model; a chunk never spans two sections, so its
heading path says exactly where it came from. A block larger than the target is split at
line, then sentence, then word boundaries. Consecutive chunks of one section share about
`overlap_tokens` of text, so a fact cut at a boundary is still whole in one of them.

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


_SENTENCE = re.compile(r"(?<=[.!?;:])\s+(?=\S)")


def _split(text: str, count: Callable[[str], int], limit: int) -> list[_Unit]:
    """Units of at most `limit` tokens: lines, else sentences, else word windows."""
    n = count(text)
    if n <= limit:
        return [_Unit(text, "\n\n", n)]
    out: list[_Unit] = []
    for level, parts in (("\n", text.split("\n")), (" ", _SENTENCE.split(text))):
        parts = [p.strip() for p in parts if p.strip()]
        if len(parts) > 1:
            for p in parts:
                for u in _split(p, count, limit):
                    out.append(_Unit(u.text, level if u.sep == "\n\n" else u.sep, u.tokens))
            return out
    words = text.split()
    step = max(1, int(len(words) * limit / max(n, 1)))
    for start in range(0, len(words), step):
        piece = " ".join(words[start:start + step])
        out.append(_Unit(piece, " ", count(piece)))
    return out


def chunk_document(doc: ParsedDocument, count_tokens: Callable[[str], int] = approx_tokens,
                   target_tokens: int = DEFAULT_TARGET_TOKENS,
                   overlap_tokens: int = DEFAULT_OVERLAP_TOKENS) -> list[Chunk]:
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
            split[0].sep = "\n\n"
            units += split
        current: list[_Unit] = []
        size = 0
        fresh = 0  # units in `current` that are not overlap from the previous chunk

        def emit():
            body = current[0].text + "".join(u.sep + u.text for u in current[1:])
            full = embed_text(doc.title, heading, body)
            chunks.append(Chunk(len(chunks), heading, body, count_tokens(full)))

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
