"""The questions a tune's grounding examples are drawn from: the knowledge base's chunks in a
canonical order (`as_doc_chunks`), every well-formed, non-excluded question the templates
(tuning/questions.py) make of them, each question once (`candidate_pool`), and a seeded order
over them that takes one question per chunk before a second from any (`_diversified`).

The canonical order is what makes a mix reproducible: the same chunks and seed give the same
examples whatever order the store returned them in.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .grounding_exclusions import Exclusions
from .grounding_voice import Voice
from .question_filter import normalise, problems
from .question_grammar import Candidate
from .questions import candidates

# Rows of a chunk source: dicts or objects with these fields (retrieval's ChunkRow has
# `document`; a dict may say `source`). tuning never imports retrieval: the composer passes them.
ChunkSource = Callable[[], Iterable[Any]]


@dataclass(frozen=True)
class DocChunk:
    source: str  # the document's name, as the chat cites it
    heading: str
    text: str
    position: int = 0
    id: int | str | None = None

    @property
    def section(self) -> tuple[str, str]:
        return (self.source, self.heading)

    def passage(self) -> dict:
        return {"id": self.id, "source": self.source, "heading": self.heading, "text": self.text}


def as_doc_chunks(rows: Iterable[Any]) -> list[DocChunk]:
    """Chunks from dicts or objects (`source` or `document`, `heading`, `text`, `position`,
    `id`), in a canonical order, so the same chunks give the same examples whatever order the
    store returned them in."""
    out = []
    for row in rows:
        get = row.get if isinstance(row, Mapping) else lambda k, d=None, r=row: getattr(r, k, d)
        text = str(get("text", "") or "")
        if not text.strip():
            continue
        out.append(
            DocChunk(
                source=str(get("source", None) or get("document", "") or ""),
                heading=str(get("heading", "") or ""),
                text=text,
                position=int(get("position", 0) or 0),
                id=get("id", None),
            )
        )
    return sorted(out, key=lambda c: (c.source, c.position, c.heading, c.text))


@dataclass
class Pooled:
    chunk: DocChunk
    candidate: Candidate


@dataclass
class PoolStats:
    generated: int = 0
    well_formed: int = 0
    duplicates: int = 0
    excluded_questions: int = 0
    excluded_answers: int = 0
    kept: int = 0
    chunks_read: int = 0
    rejected: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {
            "generated": self.generated,
            "well_formed": self.well_formed,
            "duplicates": self.duplicates,
            "excluded_question": self.excluded_questions,
            "excluded_answer": self.excluded_answers,
            "kept": self.kept,
        }


def candidate_pool(
    chunks: Sequence[DocChunk],
    voice: Voice = Voice(),
    exclusions: Exclusions | None = None,
    enough: int | None = None,
    max_read: int | None = None,
) -> tuple[list[Pooled], PoolStats]:
    """Every well-formed, non-excluded candidate of the chunks, each question once (reading
    chunks in their order only until there are `enough`, and at most `max_read` chunks)."""
    stats, pool, seen = PoolStats(), list[Pooled](), set[str]()
    for chunk in chunks:
        if (enough is not None and len(pool) >= enough) or (max_read is not None and stats.chunks_read >= max_read):
            break
        stats.chunks_read += 1
        for cand in candidates(chunk.heading, chunk.text):
            stats.generated += 1
            found = problems(cand, chunk.text)
            if found:
                stats.rejected.update(found)
                continue
            stats.well_formed += 1
            key = normalise(cand.question)
            if key in seen:
                stats.duplicates += 1
                continue
            seen.add(key)
            if exclusions is not None and exclusions.excludes_question(cand.question):
                stats.excluded_questions += 1
                continue
            if exclusions is not None and exclusions.excludes_answer(voice.wrap(cand.statement), cand.span):
                stats.excluded_answers += 1
                continue
            pool.append(Pooled(chunk, cand))
    stats.kept = len(pool)
    return pool, stats


def _diversified(pool: list[Pooled], rng: random.Random) -> list[Pooled]:
    """The pool in a seeded order that takes one question per chunk (chunks shuffled) before a
    second from any, so that no table dominates."""
    by_chunk: dict[tuple, list[Pooled]] = {}
    for p in pool:
        by_chunk.setdefault((p.chunk.source, p.chunk.position, p.chunk.text), []).append(p)
    groups = list(by_chunk.values())
    rng.shuffle(groups)
    for g in groups:
        rng.shuffle(g)
    out: list[Pooled] = []
    depth = 0
    while len(out) < len(pool):
        for g in groups:
            if depth < len(g):
                out.append(g[depth])
        depth += 1
    return out
