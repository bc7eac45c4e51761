"""The chunks shown beside a grounding question: from other sections (other documents first)
and none holding its answer; one is chosen for sharing words with the question (what a
retriever would put beside it: another bike's price list), the others at random, all drawn with
the tune's seeded generator. `Library` computes the chunks' normalised texts and terms once: a
tune draws a hundred distractor sets from them.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from .grounding_exclusions import _STOP
from .grounding_pool import DocChunk
from .question_filter import contains_phrase, normalise

_WORD = re.compile(r"[a-z0-9€]+")


def _terms(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in _STOP}


def holds(text: str, span: str) -> bool:
    return span in text or contains_phrase(text, span)


class Library:
    """The chunks distractors are drawn from, with their normalised texts and terms computed
    once (a tune draws a hundred distractor sets from them)."""

    def __init__(self, docs: Sequence[DocChunk]):
        self.docs = list(docs)
        self.norm = [f" {normalise(c.text)} " for c in self.docs]
        self.terms = [_terms(c.heading + " " + c.text) for c in self.docs]

    def without(self, gold: DocChunk, span: str) -> list[int]:
        """Chunks of other sections that do not hold `span` (verbatim or normalised)."""
        norm = f" {normalise(span)} "
        return [
            i
            for i, c in enumerate(self.docs)
            if c.section != gold.section and span not in c.text and norm not in self.norm[i]
        ]


def pick_distractors(
    rng: random.Random, library: Library, gold: DocChunk, question: str, span: str, n: int
) -> list[DocChunk]:
    """`n` chunks from other sections that do not hold `span`: one sharing words with the
    question (a retriever's near miss), the rest at random, other documents first."""
    pool = library.without(gold, span)
    if not pool or n <= 0:
        return []
    q = _terms(question)
    scored = sorted(((len(q & library.terms[i]), rng.random(), i) for i in pool), reverse=True)
    near = [i for score, _, i in scored[:5] if score > 0]
    chosen = [rng.choice(near)] if near else []
    others = [i for i in pool if library.docs[i].source != gold.source and i not in chosen]
    same = [i for i in pool if library.docs[i].source == gold.source and i not in chosen]
    rng.shuffle(others)
    rng.shuffle(same)
    for i in others + same:
        if len(chosen) >= n:
            break
        if all(library.docs[i].section != library.docs[j].section for j in chosen):
            chosen.append(i)
    return [library.docs[i] for i in chosen[:n]]
