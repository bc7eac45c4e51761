"""Curation benchmarks: import throughput for 100,000 lines and near-duplicate detection
for 10,000 examples, each against a baseline measured in the same run.

    .venv/bin/python benchmarks/curation.py [--lines 100000] [--examples 10000] [--embed-sample 256]

Import: `import_file` (streaming, batched transactions of 2,000 rows) vs the same records
committed one row per transaction (measured on the first 5,000 lines).
Near-duplicates: the cleaning report's check over cached embeddings (one FAISS range search
on a flat inner-product index) vs two plain-numpy versions (a per-example loop, and the full
similarity matrix). Computing the embeddings the first time is the dominant cost on a CPU: it
is measured on a sample of distinct texts and extrapolated to the whole set (afterwards they
are cached in SQLite by text hash, so only new or edited examples are embedded). The 10,000
vectors searched are built from the sample's embeddings: perturbed so they are distinct, and
2% of them near-copies of another example (the planted near-duplicates).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from assistant.workspace import Workspace
from tuning import open_curation
from tuning.cleaning import build_report
from tuning.dataset_import import import_file
from tuning.example import chat_example
from tuning.near_duplicates import near_duplicate_pairs
from tuning.near_duplicates import near_duplicate_text as _example_text
from tuning.records import record_to_example

REPO = Path(__file__).resolve().parent.parent
PAIRS = REPO / "demo" / "lantern_bay" / "pairs.jsonl"


def synthetic_records(n: int, seed: int = 0):
    base = [json.loads(line) for line in PAIRS.read_text(encoding="utf-8").splitlines() if line.strip()]
    rnd = random.Random(seed)
    words = "please quickly today again really also maybe honestly".split()
    for i in range(n):
        r = base[i % len(base)]
        yield {"prompt": f"{r['prompt']} ({rnd.choice(words)} #{i})", "completion": r["completion"]}


def bench_import(lines: int, tmp: Path) -> list[tuple]:
    path = tmp / "big.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for rec in synthetic_records(lines):
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    cur = open_curation(Workspace(tmp / "ws-import"))
    marks = []
    t = time.perf_counter()
    result = import_file(cur.store, path, progress=lambda d, total: marks.append(d))
    ours = time.perf_counter() - t
    assert result.imported == lines, result.summary()

    base_n = min(5000, lines)
    store = open_curation(Workspace(tmp / "ws-baseline")).store
    t = time.perf_counter()
    with open(path, encoding="utf-8") as fh:
        for _, line in zip(range(base_n), fh):
            store.add_many([record_to_example(json.loads(line))[1]], assign_splits=False)  # a commit per row
    base = time.perf_counter() - t
    return [
        (
            "import: batched (ours)",
            f"{lines:,} lines",
            f"{ours:.2f} s",
            f"{lines / ours:,.0f} rows/s",
            f"{(lines / ours) / (base_n / base):.1f}x",
            f"{len(marks)} progress updates",
        ),
        (
            "import: one commit per row",
            f"{base_n:,} lines",
            f"{base:.2f} s",
            f"{base_n / base:,.0f} rows/s",
            "1.0x",
            "baseline",
        ),
    ]


def bench_near_duplicates(n: int, sample: int, tmp: Path) -> list[tuple]:
    from assistant.embeddings import get_embedder

    embedder = get_embedder()
    cur = open_curation(Workspace(tmp / "ws-near"))
    store = cur.store
    recs = list(synthetic_records(n, seed=1))
    store.add_many([chat_example(r["prompt"], r["completion"]) for r in recs])
    examples = store.list()
    texts = [_example_text(e) for e in examples]

    # Cold: embedding distinct texts (measured on a sample, extrapolated to n).
    t = time.perf_counter()
    sample_vecs = embedder.encode(sorted(texts[:sample], key=len), batch_size=64)
    per_text = (time.perf_counter() - t) / sample

    # Fill the cache for all n texts: each a sample vector moved well away from it (cosine
    # ~0.6, so distinct), then 2% made near-copies of another example (cosine ~0.99).
    rng = np.random.default_rng(0)
    vecs = sample_vecs[np.arange(n) % sample] + rng.normal(0, 0.06, (n, embedder.dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    copies = rng.choice(n, size=n // 50, replace=False)
    vecs[copies] = vecs[rng.integers(0, n, size=len(copies))] + rng.normal(0, 0.004, (len(copies), embedder.dim))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    import hashlib

    with store.db.transaction() as conn:
        conn.executemany(
            "INSERT OR REPLACE INTO example_embeddings(text_hash, model, vector) VALUES (?,?,?)",
            [(hashlib.sha256(tx.encode()).hexdigest(), embedder.name, v.tobytes()) for tx, v in zip(texts, vecs)],
        )

    t = time.perf_counter()
    report = build_report(store, embedder=embedder, checks=["near_duplicate"], near_threshold=0.95)
    warm = time.perf_counter() - t
    found = len(report.of("near_duplicate"))
    t = time.perf_counter()
    faiss_pairs = near_duplicate_pairs(vecs, 0.95)
    search = time.perf_counter() - t

    t = time.perf_counter()  # baseline 1: a numpy loop, one example against all later ones
    loop_pairs = 0
    for i in range(n - 1):
        sims = vecs[i + 1 :] @ vecs[i]
        loop_pairs += int((sims >= 0.95).sum())
    loop = time.perf_counter() - t
    t = time.perf_counter()  # baseline 2: the full similarity matrix in blocks of 2,000 rows
    mat_pairs = 0
    for start in range(0, n, 2000):
        block = vecs[start : start + 2000] @ vecs.T
        rows, cols = np.nonzero(block >= 0.95)
        mat_pairs += int((cols > rows + start).sum())
    matrix = time.perf_counter() - t
    assert loop_pairs == mat_pairs, (loop_pairs, mat_pairs)
    assert abs(len(faiss_pairs) - loop_pairs) <= max(3, loop_pairs // 1000), (len(faiss_pairs), loop_pairs)
    return [
        (
            "near-dups: whole check, cached embeddings (ours)",
            f"{n:,} examples",
            f"{warm:.2f} s",
            f"{found:,} pairs",
            f"{loop / warm:.1f}x",
            "loads vectors from SQLite + FAISS range search",
        ),
        (
            "near-dups: FAISS range search alone",
            f"{n:,} vectors",
            f"{search:.2f} s",
            f"{len(faiss_pairs):,} pairs",
            f"{loop / search:.1f}x",
            "IndexFlatIP, exact",
        ),
        (
            "near-dups: numpy loop per example",
            f"{n:,} vectors",
            f"{loop:.2f} s",
            f"{loop_pairs:,} pairs",
            "1.0x",
            "baseline",
        ),
        (
            "near-dups: numpy full matrix (blocks)",
            f"{n:,} vectors",
            f"{matrix:.2f} s",
            f"{mat_pairs:,} pairs",
            f"{loop / matrix:.1f}x",
            "baseline",
        ),
        (
            "embedding (first run), extrapolated",
            f"{n:,} texts",
            f"{per_text * n:.0f} s",
            f"{1 / per_text:.1f} texts/s",
            "",
            f"measured on {sample} texts; cached afterwards",
        ),
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--examples", type=int, default=10_000)
    ap.add_argument("--embed-sample", type=int, default=256)
    args = ap.parse_args(argv)
    import torch

    with tempfile.TemporaryDirectory(prefix="tailor-bench-") as tmp:
        tmp = Path(tmp)
        rows = bench_import(args.lines, tmp) + bench_near_duplicates(args.examples, args.embed_sample, tmp)
    print(f"Curation benchmark · {os.cpu_count()} CPUs · torch threads {torch.get_num_threads()}")
    headers = ("what", "size", "time", "rate / result", "vs baseline", "note")
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
