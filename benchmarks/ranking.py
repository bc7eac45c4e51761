"""Ranking at 1: how often the passage the model reads first (rank 1), any of the top k, and the
evidence sentences it is finally shown hold the gold answer, for variants of the hybrid fusion.
No generation: retrieval only, so every variant is cheap and they all run in one go.

    .venv/bin/python benchmarks/ranking.py --workspace WS [--facts FILE] [--heldout WS2]

WS holds the demo documents (`tailor demo load`); FILE defaults to the demo's facts. With
--heldout, WS2 is a workspace holding benchmarks/heldout/kestrel_rail/docs (benchmarks/reading.py
makes one): its rows are printed beside the demo's and are never used to choose.

Variants: the reciprocal-rank-fusion constant (RRF_K; 60 is Cormack et al.'s and today's),
the BM25 ranking's weight in the fusion, each ranking alone, how many passages the evidence is
picked from (k), and a re-rank of the top k by their best evidence sentence's score. Each
ranking is computed once per question (50 candidates, as the search does) and the variants fuse
them offline. "answer" = the gold answer or an alias is in the text (evals/metrics.py)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from assistant.evidence import score_sentences, select_evidence  # noqa: E402
from assistant.prompting import Passage  # noqa: E402
from assistant.workspace import Workspace  # noqa: E402
from benchmarks.tables import load_jsonl, table  # noqa: E402
from evals.metrics import fact_found  # noqa: E402
from retrieval.chunking import context_line  # noqa: E402
from retrieval.index import RRF_K  # noqa: E402
from retrieval.search import MIN_CANDIDATES  # noqa: E402
from retrieval.service import open_knowledge  # noqa: E402

HELDOUT_FACTS = ROOT / "benchmarks" / "heldout" / "kestrel_rail" / "facts.jsonl"
DEMO_FACTS = ROOT / "demo" / "lantern_bay" / "facts.jsonl"


def fuse(dense: list[int], bm25: list[int], k_rrf: float, w_bm25: float) -> list[int]:
    score: dict[int, float] = {}
    for weight, ranking in ((1.0, dense), (w_bm25, bm25)):
        for rank, cid in enumerate(ranking, start=1):
            score[cid] = score.get(cid, 0.0) + weight / (k_rrf + rank)
    return sorted(score, key=lambda c: (-score[c], c))


def evidence_rerank(question: str, passages: list[Passage]) -> list[Passage]:
    """The top passages ordered by their best sentence's evidence score (rank bonus included)."""
    best: dict[int, float] = {}
    for sc, s in score_sentences(question, passages):
        best.setdefault(s.passage, sc)
    order = sorted(range(len(passages)), key=lambda i: (-best.get(i, 0.0), i))
    return [passages[i] for i in order]


# name -> (how the chunk ids are ranked, k passages, re-rank by evidence)
Variant = tuple[Callable[[list[int], list[int]], list[int]], int, bool]
VARIANTS: dict[str, Variant] = {
    f"rrf k={RRF_K}, bm25 x1 (today)": (lambda d, b: fuse(d, b, RRF_K, 1.0), 4, False),
    "rrf k=10": (lambda d, b: fuse(d, b, 10, 1.0), 4, False),
    "rrf k=30": (lambda d, b: fuse(d, b, 30, 1.0), 4, False),
    "bm25 x0.5": (lambda d, b: fuse(d, b, RRF_K, 0.5), 4, False),
    "bm25 x2": (lambda d, b: fuse(d, b, RRF_K, 2.0), 4, False),
    "dense only": (lambda d, b: d, 4, False),
    "bm25 only": (lambda d, b: b, 4, False),
    "today, evidence re-rank": (lambda d, b: fuse(d, b, RRF_K, 1.0), 4, True),
    "today, k=6": (lambda d, b: fuse(d, b, RRF_K, 1.0), 6, False),
    "today, k=8": (lambda d, b: fuse(d, b, RRF_K, 1.0), 8, False),
}


def rankings(workspace: Path, questions: list[str]) -> tuple[list[tuple[list[int], list[int]]], Callable]:
    kn = open_knowledge(Workspace(workspace))
    out = []
    for q in questions:
        dense, _ = kn._search(q, MIN_CANDIDATES, "dense")
        bm25, _ = kn._search(q, MIN_CANDIDATES, "bm25")
        out.append(([int(p.id) for p in dense], [int(p.id) for p in bm25]))

    def passages(ids: list[int]) -> list[Passage]:
        rows = kn.store.chunks(ids)
        return [
            Passage(
                id=c, source=rows[c].document, text=rows[c].text, heading=context_line(rows[c].title, rows[c].heading)
            )
            for c in ids
            if c in rows
        ]

    return out, passages


def measure(workspace: Path, facts_file: Path) -> dict[str, dict[str, float]]:
    facts = load_jsonl(facts_file)
    ranked, passages = rankings(workspace, [f["question"] for f in facts])
    results: dict[str, dict[str, float]] = {}
    for name, (rank, k, rerank) in VARIANTS.items():
        at1 = atk = sent1 = sent3 = 0
        for fact, (dense, bm25) in zip(facts, ranked):
            gold = [fact["answer"], *fact.get("aliases", [])]
            top = passages(rank(dense, bm25)[:k])
            if rerank:
                top = evidence_rerank(fact["question"], top)
            at1 += bool(top) and fact_found(top[0].text, gold)
            atk += fact_found(" ".join(p.text for p in top), gold)
            for m in (1, 3):
                shown = " ".join(p.shown_text for p in select_evidence(fact["question"], top, m, 0))
                hit = fact_found(shown, gold)
                sent1 += m == 1 and hit
                sent3 += m == 3 and hit
        n = len(facts)
        results[name] = {"n": n, "at1": at1 / n, "atk": atk / n, "k": k, "sent1": sent1 / n, "sent3": sent3 / n}
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", type=Path, required=True, help="workspace with the demo documents")
    ap.add_argument("--facts", type=Path, default=DEMO_FACTS)
    ap.add_argument("--heldout", type=Path, help="workspace with the held-out documents (reported, never chosen on)")
    args = ap.parse_args()
    sets = [("demo", measure(args.workspace, args.facts))]
    if args.heldout:
        sets.append(("held-out", measure(args.heldout, HELDOUT_FACTS)))
    header = ["variant"] + [f"{s} {m}" for s, _ in sets for m in ("@1", "@k", "1 sent", "3 sent")]
    rows = []
    for name in VARIANTS:
        row = [name]
        for _, res in sets:
            r = res[name]
            row += [f"{r['at1']:.3f}", f"{r['atk']:.3f}", f"{r['sent1']:.3f}", f"{r['sent3']:.3f}"]
        rows.append(row)
    sizes = ", ".join(f"{name} {next(iter(res.values()))['n']}" for name, res in sets)
    table(
        f"Answer found at rank 1, in the top k passages (k=4 unless named), in the 1 or 3 evidence sentences ({sizes})",
        header,
        rows,
    )


if __name__ == "__main__":
    main()
