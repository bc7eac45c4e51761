"""Knowledge at team scale (issue 17): the hybrid search the app runs (retrieval/search.py's
`rank`: dense IVF + compact BM25 + reciprocal rank fusion) over N synthetic chunks, against exact
search, with build time and resident memory; and the embedding model's throughput per backend.
Called by benchmarks/retrieval.py (`--sizes 1000000`).

Synthetic chunks:
- texts: words drawn from a Zipf (Mandelbrot) distribution over a 300k-word vocabulary whose
  most frequent ranks are the tokenizer's stop words, so that ~40% of the words are dropped as in
  English; each chunk's word count is drawn from the demo chunks' (median 58 words), so BM25
  sees real lengths and real posting-list lengths.
- vectors: 384-d unit vectors around 2,000 random centres (clustered like sentence embeddings).
  Embedding a million real texts on 2 cores takes hours (see the embedding table), so the dense
  side is synthetic; texts and vectors are independent.
- queries: a noisy copy of one chunk's vector, and 3-7 of that chunk's words after "what is the"
  (a question about a passage uses some of its words).
The build runs in a fresh process so that its resident memory is the index's, not this
script's (the embedding model, the demo knowledge base)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DIM = 384
VOCAB = 300_000
BLOCK = 50_000  # chunks generated at a time: the texts and vectors of 1M never exist at once
QUERY_PREFIX = "what is the"


def demo_word_counts(demo_docs: Path) -> np.ndarray:
    from retrieval.chunking import chunk_document, embed_text
    from retrieval.documents import parse_document

    counts = []
    for path in sorted(demo_docs.iterdir()):
        doc = parse_document(path.name, path.read_bytes())
        counts += [len(embed_text(doc.title, c.heading, c.text).split()) for c in chunk_document(doc)]
    return np.array(counts)


def vocabulary() -> list[str]:
    """Stop words first (the most frequent ranks), then made-up words of 1-3 syllables."""
    from assistant.terms import STOPWORDS

    syllables = [c + v for c in "bcdfghjklmnprtvwz" for v in "aeiou"] + ["ar", "en", "ol", "ur"]
    words = sorted(STOPWORDS)
    seen = set(words)
    n = len(syllables)
    i = 0
    while len(words) < VOCAB:
        parts, x = [], i
        while True:
            parts.append(syllables[x % n])
            x //= n
            if not x:
                break
        w = "".join(parts) + ("" if i % 3 else "n")  # some words end in a consonant
        if w not in seen:
            words.append(w)
            seen.add(w)
        i += 1
    return words


class Corpus:
    """Deterministic synthetic chunks, generated block by block from a seed."""

    def __init__(self, n: int, word_counts: np.ndarray, seed: int = 0):
        self.n = n
        self.words = np.array(vocabulary(), dtype=object)
        ranks = np.arange(1, VOCAB + 1)
        p = 1.0 / (ranks + 2.7)  # Zipf-Mandelbrot, exponent 1
        self.cdf = np.cumsum(p / p.sum())
        self.word_counts = word_counts
        self.seed = seed
        self.centers = np.random.default_rng(seed).standard_normal((2000, DIM)).astype(np.float32)

    def block_words(self, start: int) -> list[np.ndarray]:
        rng = np.random.default_rng((self.seed, 1, start))
        m = min(BLOCK, self.n - start)
        lengths = rng.choice(self.word_counts, m)
        flat = np.searchsorted(self.cdf, rng.random(int(lengths.sum())))
        flat = np.minimum(flat, VOCAB - 1)
        return np.split(flat, np.cumsum(lengths)[:-1])

    def block_vectors(self, start: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, 2, start))
        m = min(BLOCK, self.n - start)
        x = self.centers[rng.integers(0, len(self.centers), m)] + 0.6 * rng.standard_normal((m, DIM)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def text(self, word_ids: np.ndarray) -> str:
        return " ".join(self.words[word_ids])

    def queries(self, n_queries: int) -> tuple[list[str], np.ndarray]:
        rng = np.random.default_rng((self.seed, 3))
        targets = np.sort(rng.choice(self.n, n_queries, replace=False))
        texts, vecs = [], []
        block: tuple[int, list[np.ndarray], np.ndarray] | None = None
        for t in targets:  # sorted: each block is generated once
            start = (t // BLOCK) * BLOCK
            if block is None or block[0] != start:
                block = (start, self.block_words(start), self.block_vectors(start))
            words = block[1][t - start]
            content = [w for w in words if w >= 100] or list(words)  # skip the stop-word ranks
            pick = rng.choice(content, min(len(content), int(rng.integers(3, 8))), replace=False)
            texts.append(f"{QUERY_PREFIX} {self.text(pick)}")
            q = block[2][t - start] + 0.05 * rng.standard_normal(DIM).astype(np.float32)
            vecs.append(q / np.linalg.norm(q))
        return texts, np.array(vecs, dtype=np.float32)


def rss_mb() -> tuple[float, float]:
    """(resident now, peak resident) of this process in MB, from /proc."""
    now = peak = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            now = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return now, peak


@dataclass
class ScaleResult:
    n: int
    kind: str
    n_lists: int
    codes: str  # how the IVF lists store the vectors: 8-bit or float32
    bm25_seconds: float
    dense_seconds: float
    rss_before_mb: float
    rss_after_mb: float
    rss_peak_mb: float
    bm25_array_mb: float
    p50_ms: float
    p95_ms: float
    serial_p50_ms: float  # the same search with both halves on one thread
    bm25_p50_ms: float
    dense_p50_ms: float
    recall_hybrid: float
    recall_dense: float
    exact_queries: int
    load_start: float
    load_end: float
    mean_words: float
    max_df: int
    add_doc_ms: float  # one 10-chunk document into both indexes, incrementally
    save_seconds: float  # writing the vector index file (the app rewrites it after every change)
    save_gb: float
    bm25_save_seconds: float  # BM25's snapshot (written when the knowledge base loads)
    bm25_save_gb: float
    bm25_load_seconds: float  # what a start pays instead of bm25_seconds


def run_scale(n: int, n_queries: int, n_exact: int, demo_docs: str, build_threads: int, kind: str) -> ScaleResult:
    """Build the indexes over n synthetic chunks and time queries (runs in a fresh process)."""
    import faiss

    from retrieval.bm25 import BM25Index
    from retrieval.index import VectorIndex
    from retrieval.search import MIN_CANDIDATES, rank

    load_start = os.getloadavg()[0]
    corpus = Corpus(n, demo_word_counts(Path(demo_docs)))
    rss_before, _ = rss_mb()
    faiss.omp_set_num_threads(build_threads)

    # BM25 from the texts, generated block by block (as the app streams them from SQLite)
    started = time.perf_counter()
    bm25 = BM25Index()
    words_total = 0

    def texts():
        nonlocal words_total
        for start in range(0, n, BLOCK):
            for i, w in enumerate(corpus.block_words(start)):
                words_total += len(w)
                yield start + i + 1, corpus.text(w)  # chunk ids start at 1, like SQLite rows

    bm25.add_many(texts())
    bm25_seconds = time.perf_counter() - started

    # the vector index: trained on the first block's sample, then filled block by block
    started = time.perf_counter()
    index = VectorIndex(DIM, kind)
    if kind == "ivf":
        # train on a sample drawn from the whole corpus, as a rebuild from the stored vectors does
        sample = np.concatenate([corpus.block_vectors(s)[:: max(1, n // 100_000)] for s in range(0, n, BLOCK)])
        index._train_ivf(sample, n)
        del sample
    for start in range(0, n, BLOCK):
        x = corpus.block_vectors(start)
        index.add(np.arange(start + 1, start + 1 + len(x)), x)
    dense_seconds = time.perf_counter() - started
    rss_after, rss_peak = rss_mb()

    q_texts, q_vecs = corpus.queries(n_queries)
    faiss.omp_set_num_threads(1)  # one query uses one core, as in the app
    n_cand = MIN_CANDIDATES
    # three passes, so that no timing profits from the previous call having read the same
    # inverted lists into the CPU cache (one query scans ~3% of the vectors, ~45 MB at 1M)
    # the app's search (its dense half on a second thread) and the same search on one thread,
    # alternating query by query so that a burst of other work on the machine hits both alike
    import retrieval.search as search_module

    times, serial_times, bm25_times, dense_times, got = [], [], [], [], []
    parallel_from = search_module.PARALLEL_FROM
    for text, qv in zip(q_texts, q_vecs):
        t0 = time.perf_counter()
        ranked = rank(index, bm25, text, qv, 10, n_cand, "hybrid")
        bm25.coverage_many(text, ranked.top)  # what the passages carry besides the ranking
        times.append((time.perf_counter() - t0) * 1000)
        got.append(ranked.top)
        search_module.PARALLEL_FROM = n + 1
        t0 = time.perf_counter()
        serial = rank(index, bm25, text, qv, 10, n_cand, "hybrid")
        bm25.coverage_many(text, serial.top)
        serial_times.append((time.perf_counter() - t0) * 1000)
        search_module.PARALLEL_FROM = parallel_from
        assert serial.top == ranked.top
    for text in q_texts:
        t0 = time.perf_counter()
        bm25.search(text, n_cand)
        bm25_times.append((time.perf_counter() - t0) * 1000)
    for qv in q_vecs:
        t0 = time.perf_counter()
        index.search(qv[None, :], n_cand)
        dense_times.append((time.perf_counter() - t0) * 1000)

    # exact search for the first n_exact queries: brute-force cosine over every vector (block by
    # block), the exact BM25 top n (the compact index is exact: tests/retrieval/test_bm25.py), fused
    from retrieval.index import reciprocal_rank_fusion

    faiss.omp_set_num_threads(build_threads)
    qs = q_vecs[:n_exact]
    best_s = np.full((len(qs), n_cand), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(qs), n_cand), dtype=np.int64)
    for start in range(0, n, BLOCK):
        s = qs @ corpus.block_vectors(start).T
        s_all = np.concatenate([best_s, s], axis=1)
        i_all = np.concatenate([best_i, np.broadcast_to(np.arange(start + 1, start + 1 + s.shape[1]), s.shape)], axis=1)
        top = np.argsort(-s_all, axis=1, kind="stable")[:, :n_cand]
        best_s, best_i = np.take_along_axis(s_all, top, 1), np.take_along_axis(i_all, top, 1)
    rec_h, rec_d = [], []
    for j in range(len(qs)):
        exact_dense = best_i[j].tolist()
        fused = reciprocal_rank_fusion([exact_dense, [c for c, _ in bm25.search(q_texts[j], n_cand)]])
        exact_top = sorted(fused, key=lambda c: (-fused[c], c))[:10]
        rec_h.append(len(set(exact_top) & set(got[j])) / 10)
        _, approx_ids = index.search(qs[j][None, :], 10)
        rec_d.append(len(set(exact_dense[:10]) & set(approx_ids[0].tolist())) / 10)
    # one more document (10 chunks), as ingestion adds it: no rebuild of either index
    doc_words = corpus.block_words(0)[:10]
    doc_vecs = corpus.block_vectors(0)[:10]
    t0 = time.perf_counter()
    for i, w in enumerate(doc_words):
        bm25.add(n + 1 + i, corpus.text(w))
    index.add(np.arange(n + 1, n + 11), doc_vecs)
    add_doc_ms = (time.perf_counter() - t0) * 1000
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tailor-scale-") as tmp:
        t0 = time.perf_counter()
        index.write(Path(tmp) / "knowledge.faiss")
        save_seconds = time.perf_counter() - t0
        save_gb = (Path(tmp) / "knowledge.faiss").stat().st_size / 2**30
        # BM25's snapshot, which a start reads instead of tokenizing every chunk text again
        snapshot = Path(tmp) / "knowledge.bm25.npz"
        t0 = time.perf_counter()
        bm25.save(snapshot)
        bm25_save_seconds = time.perf_counter() - t0
        bm25_save_gb = snapshot.stat().st_size / 2**30
        t0 = time.perf_counter()
        loaded = BM25Index.load(snapshot)
        bm25_load_seconds = time.perf_counter() - t0
        assert all(loaded.search(t, n_cand) == bm25.search(t, n_cand) for t in q_texts[:20])
        del loaded
    n_lists = int(index.index.nlist) if kind == "ivf" else 0
    codes = "8-bit" if isinstance(index.index, faiss.IndexIVFScalarQuantizer) else "float32"
    max_df = int(bm25._df.view().max()) if len(bm25) else 0
    return ScaleResult(
        n=n,
        kind=kind,
        n_lists=n_lists,
        codes=codes,
        bm25_seconds=bm25_seconds,
        dense_seconds=dense_seconds,
        rss_before_mb=rss_before,
        rss_after_mb=rss_after,
        rss_peak_mb=rss_peak,
        bm25_array_mb=bm25.nbytes() / 2**20,
        p50_ms=float(np.percentile(times, 50)),
        p95_ms=float(np.percentile(times, 95)),
        serial_p50_ms=float(np.percentile(serial_times, 50)),
        bm25_p50_ms=float(np.percentile(bm25_times, 50)),
        dense_p50_ms=float(np.percentile(dense_times, 50)),
        recall_hybrid=float(np.mean(rec_h)),
        recall_dense=float(np.mean(rec_d)),
        exact_queries=len(qs),
        load_start=load_start,
        load_end=os.getloadavg()[0],
        mean_words=words_total / n,
        max_df=max_df,
        add_doc_ms=add_doc_ms,
        save_seconds=save_seconds,
        save_gb=save_gb,
        bm25_save_seconds=bm25_save_seconds,
        bm25_save_gb=bm25_save_gb,
        bm25_load_seconds=bm25_load_seconds,
    )


def scale_in_subprocess(n: int, n_queries: int, n_exact: int, demo_docs: Path, build_threads: int, kind: str):
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(run_scale, (n, n_queries, n_exact, str(demo_docs), build_threads, kind))


# ---- embedding throughput --------------------------------------------------------------------


@dataclass
class EmbedResult:
    label: str
    batch: int
    chunks_per_s: float
    max_abs_diff: float  # against today's vectors
    min_cosine: float
    same_top10: float  # share of demo questions whose dense top 10 is unchanged
    load: float
    query_ms: float = float("nan")  # p50 of embedding one question (batch 1)


def _top10(vectors: np.ndarray, questions: np.ndarray) -> list[list[int]]:
    s = questions @ vectors.T
    return [list(np.lexsort((np.arange(len(r)), -r))[:10]) for r in s]


def bench_embedding(texts: list[str], questions: list[str], threads: int, onnx_dir: Path | None) -> list[EmbedResult]:
    """chunks/s of today's path (Embedder.encode, batches of 16 as retrieval/encoder.py) against
    one sentence-transformers call per text list (it sorts by length, so batches pad less) at
    several batch sizes, and ONNX Runtime on the same model when installed. Each variant's
    vectors are compared with today's: the largest difference, the lowest cosine, and whether
    the demo questions' top 10 chunks stay the same. Interleaved twice, best kept, because other
    work on the machine moves single timings."""
    import torch

    from assistant.embeddings import get_embedder

    torch.set_num_threads(threads)
    emb = get_embedder()
    emb.encode(texts[:8])
    ref = emb.encode(texts, batch_size=16)
    q_ref = emb.encode(questions, batch_size=16)
    ref_top = _top10(ref, q_ref)

    variants = [("today: Embedder.encode (torch)", 16, lambda bs: emb.encode(texts, batch_size=bs))]
    for bs in (16, 32, 64):
        variants.append(
            (
                "torch, one sorted call",
                bs,
                lambda bs: emb.model.encode(texts, batch_size=bs, normalize_embeddings=True, convert_to_numpy=True),
            )
        )
    onnx = _onnx_encoder(onnx_dir, emb, threads) if onnx_dir else None
    if onnx is not None:
        for bs in (16, 32, 64):
            variants.append(("onnxruntime (exported here)", bs, lambda bs: onnx(texts, bs)))
    best: dict[tuple[str, int], tuple[float, np.ndarray, float]] = {}
    for _ in range(2):
        for label, bs, fn in variants:
            t0 = time.perf_counter()
            out = fn(bs)
            speed = len(texts) / (time.perf_counter() - t0)
            if (label, bs) not in best or speed > best[(label, bs)][0]:
                best[(label, bs)] = (speed, out, os.getloadavg()[0])

    # one question at a time (what a search embeds), the backends alternating question by
    # question so that a burst of other work on the machine hits both alike
    runners = {"torch": lambda t, bs: emb.encode(t, batch_size=bs)}
    if onnx is not None:
        runners["onnx"] = onnx
    query_times: dict[str, list[float]] = {name: [] for name in runners}
    for q in questions[:40]:
        for name, fn in runners.items():
            t0 = time.perf_counter()
            fn([q], 1)
            query_times[name].append((time.perf_counter() - t0) * 1000)
    query_ms = {name: float(np.percentile(t, 50)) for name, t in query_times.items()}
    results = []
    for label, bs, _ in variants:
        speed, out, load = best[(label, bs)]
        q = q_ref if label.startswith(("today", "torch")) else onnx(questions, 16)  # type: ignore[misc]
        same = np.mean([a == b for a, b in zip(_top10(out, q), ref_top)])
        results.append(
            EmbedResult(
                label,
                bs,
                speed,
                float(np.abs(out - ref).max()),
                float((out * ref).sum(1).min()),
                float(same),
                load,
                query_ms["onnx" if label.startswith("onnx") else "torch"],
            )
        )
    return results


def _onnx_encoder(onnx_dir: Path, emb, threads: int):
    """The app's ONNX runner (retrieval/onnx_encoder.py), exported into `onnx_dir`;
    None when onnxruntime or onnx is not installed."""
    from retrieval.onnx_encoder import OnnxEmbedder, onnx_installed

    if not onnx_installed():
        return None
    runner = OnnxEmbedder(emb, onnx_dir, threads)
    return lambda texts, batch: runner.encode(texts, batch_size=batch)


def hours(n: int, per_s: float) -> str:
    return f"{n / per_s / 3600:.1f} h" if per_s > 0 else "-"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"
