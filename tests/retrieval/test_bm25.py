"""The compact BM25 index (retrieval/bm25.py) scores and ranks exactly as the dict version it
replaced, on the demo documents, through adds, replacements, removals, tail rebuilds and
compaction."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from assistant.terms import tokenize
from retrieval.bm25 import BM25Index
from retrieval.chunking import chunk_document, embed_text
from retrieval.documents import parse_document

DEMO = Path(__file__).resolve().parents[2] / "demo" / "lantern_bay"


class DictBM25:
    """The previous implementation (term -> {chunk id: count} in Python dicts), kept as the
    reference the compact one must match."""

    def __init__(self, k1: float = 1.2, b: float = 0.75):
        self.k1, self.b = k1, b
        self.postings: dict[str, dict[int, int]] = defaultdict(dict)
        self.lengths: dict[int, int] = {}
        self.total_length = 0
        self.terms: dict[int, list[str]] = {}

    def add(self, cid: int, text: str) -> None:
        if cid in self.lengths:
            self.remove([cid])
        tokens = tokenize(text)
        counts = Counter(tokens)
        for term, tf in counts.items():
            self.postings[term][cid] = tf
        self.lengths[cid] = len(tokens)
        self.total_length += len(tokens)
        self.terms[cid] = list(counts)

    def remove(self, cids) -> None:
        for cid in cids:
            if cid not in self.lengths:
                continue
            for term in self.terms.pop(cid):
                self.postings[term].pop(cid, None)
                if not self.postings[term]:
                    del self.postings[term]
            self.total_length -= self.lengths.pop(cid)

    def idf(self, term: str) -> float:
        n, df = len(self.lengths), len(self.postings.get(term, ()))
        return math.log(1 + (n - df + 0.5) / (df + 0.5))

    def scores(self, query: str) -> dict[int, float]:
        avg = self.total_length / len(self.lengths) or 1.0
        out: dict[int, float] = defaultdict(float)
        for term in set(tokenize(query)):
            for cid, tf in self.postings.get(term, {}).items():
                norm = tf + self.k1 * (1 - self.b + self.b * self.lengths[cid] / avg)
                out[cid] += self.idf(term) * tf * (self.k1 + 1) / norm
        return out

    def ranking(self, query: str, k: int) -> list[int]:
        return [c for c, _ in sorted(self.scores(query).items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


@pytest.fixture(scope="module")
def demo_chunks() -> list[str]:
    texts = []
    for path in sorted((DEMO / "docs").iterdir()):
        doc = parse_document(path.name, path.read_bytes())
        texts += [embed_text(doc.title, c.heading, c.text) for c in chunk_document(doc)]
    return texts


@pytest.fixture(scope="module")
def questions() -> list[str]:
    rows = [json.loads(line) for line in (DEMO / "facts.jsonl").read_text().splitlines() if line.strip()]
    return [r["question"] for r in rows]


def assert_same(compact: BM25Index, ref: DictBM25, questions: list[str], k: int = 50) -> None:
    assert len(compact) == len(ref.lengths)
    for q in questions:
        want = ref.scores(q)
        got = compact.scores(q)
        assert got.keys() == want.keys(), q
        assert all(got[c] == pytest.approx(want[c], rel=1e-12) for c in want), q
        assert [c for c, _ in compact.search(q, k)] == ref.ranking(q, k), q
        some = list(want)[:3] + [max(ref.lengths)]
        assert compact.scores_for(q, some) == pytest.approx({c: want.get(c, 0.0) for c in some}, rel=1e-12)
        for c in some:
            present = set(ref.terms[c])
            terms = set(tokenize(q))
            weights = {t: ref.idf(t) for t in terms}
            cov = sum(w for t, w in weights.items() if t in present) / sum(weights.values())
            assert compact.coverage(q, c) == pytest.approx(cov, rel=1e-12), q


def test_demo_rankings_unchanged(demo_chunks, questions):
    """One bulk load (as on start), then one chunk at a time (as ingestion), with a tail small
    enough that the inverted index is rebuilt several times on the way."""
    bulk, ref = BM25Index(), DictBM25()
    bulk.add_many((i + 1, t) for i, t in enumerate(demo_chunks))
    for i, t in enumerate(demo_chunks):
        ref.add(i + 1, t)
    assert_same(bulk, ref, questions)

    one_by_one = BM25Index(tail_postings=500)
    for i, t in enumerate(demo_chunks):
        one_by_one.add(i + 1, t)
    assert one_by_one._sealed_slots > 0 and one_by_one._sealed_slots < len(demo_chunks)  # some in the tail
    assert_same(one_by_one, ref, questions)


def test_removals_replacements_and_compaction(demo_chunks, questions):
    compact, ref = BM25Index(tail_postings=800), DictBM25()
    for i, t in enumerate(demo_chunks):
        compact.add(i + 1, t)
        ref.add(i + 1, t)
    gone = list(range(1, len(demo_chunks) + 1, 3))
    compact.remove(gone + [10_000])  # an unknown id is ignored
    ref.remove(gone)
    compact.add(2, demo_chunks[0])  # a chunk's text replaced by another's
    ref.add(2, demo_chunks[0])
    # a bulk add that replaces a chunk, names one chunk twice (the later text wins) and adds one
    bulk = [(3, demo_chunks[7]), (10_001, demo_chunks[8]), (10_001, demo_chunks[9]), (10_002, demo_chunks[4])]
    compact.add_many(bulk)
    for cid, text in bulk:
        ref.add(cid, text)
    assert compact._dead > 0
    assert_same(compact, ref, questions[:40])
    assert compact.df("bike") == len(ref.postings["bike"])

    compact._compact()  # what happens by itself once a quarter of a large index is removed
    assert compact._dead == 0 and compact._chunk.size == len(ref.lengths)
    assert_same(compact, ref, questions[:40])
    compact.add(5_000, demo_chunks[5])  # adds continue after renumbering
    ref.add(5_000, demo_chunks[5])
    assert_same(compact, ref, questions[:20])


def test_empty_and_unknown():
    bm = BM25Index()
    assert bm.search("anything", 5) == [] and bm.scores("anything") == {}
    bm.add(7, "The ferry leaves at seven.")
    assert bm.search("wetsuit", 5) == [] and bm.scores_for("wetsuit", [7, 8]) == {7: 0.0, 8: 0.0}
    assert bm.coverage("ferry", 8) == 0.0 and bm.coverage("the", 7) == 0.0  # a stopword-only query
    bm.remove([7])
    assert len(bm) == 0 and bm.search("ferry", 5) == []


def test_memoised_tokens_equal_tokenize(demo_chunks):
    from retrieval.bm25 import _Tokens

    tokens = _Tokens(size=50)  # small enough to be cleared on the way
    tricky = [
        "The Breakwater costs €1,349 (form LB-W1); tyres' prices: 14.6 km, bike's",
        "what IS the ferry's... fare?",
    ]
    for text in tricky + demo_chunks:
        assert tokens(text) == tokenize(text), text
