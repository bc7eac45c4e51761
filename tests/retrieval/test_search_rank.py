"""retrieval/search.py's `rank` on a large index runs its dense half on a second thread while
BM25 runs on the caller's: the result must be the same as one thread gives."""

import numpy as np

import retrieval.search as search
from retrieval.index import FLAT, BM25Index, VectorIndex


def test_rank_with_the_dense_half_on_a_second_thread_equals_one_thread(monkeypatch):
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    texts = {cid: " ".join(rng.choice(words, 30)) for cid in range(1, 2001)}
    x = rng.standard_normal((2000, 24)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index, bm25 = VectorIndex(24, FLAT), BM25Index()
    index.add(np.arange(1, 2001), x)
    bm25.add_many(texts.items())
    queries = [
        (" ".join(rng.choice(words, 4)), x[i] + 0.1 * rng.standard_normal(24).astype(np.float32)) for i in range(20)
    ]

    def ranked(threshold):
        monkeypatch.setattr(search, "PARALLEL_FROM", threshold)
        return [search.rank(index, bm25, q, qv, 10, 50, "hybrid") for q, qv in queries]

    threads = []
    real_submit = search._dense_pool().submit

    def counting_submit(fn, *args):
        threads.append(fn)
        return real_submit(fn, *args)

    monkeypatch.setattr(search._dense_pool(), "submit", counting_submit)
    one, two = ranked(10**9), ranked(0)
    assert len(threads) == len(queries)  # the second run did hand every dense half over
    for a, b in zip(one, two):
        assert a.top == b.top and a.dense == b.dense and a.bm25 == b.bm25 and a.fused == b.fused
        assert a.dense_rank == b.dense_rank and a.bm25_rank == b.bm25_rank and a.best_dense == b.best_dense
