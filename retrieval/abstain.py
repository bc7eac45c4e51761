"""Abstention: the chat answers only when the retrieved passages support the question well
enough.

support = (cosine similarity of the best dense hit + the best idf-weighted share of the
question's terms found in one of the k passages) / 2. Cosine alone separates poorly: "How much
is the Tidewalker 10?" (not in the documents) scores as high as real catalogue questions, but
its distinctive term "10" is absent. Calibrated with benchmarks/retrieval.py on
demo/lantern_bay (114 answerable facts, 32 unanswerable questions, all-MiniLM-L6-v2,
160-token chunks, k=4): at 0.40 it answered 100/114 answerable (87.7%) and declined 26/32
unanswerable (81.3%); cosine alone at its best threshold managed 68% / 78%."""

from __future__ import annotations

from collections.abc import Sequence

from assistant.prompting import Passage, Retrieval

DEFAULT_MIN_SCORE = 0.40


def support(passages: Sequence[Passage], best_dense: float) -> float:
    """How well the passages support answering (0 without passages; see the module notes)."""
    if not passages:
        return 0.0
    return (best_dense + max(p.scores.get("coverage", 0.0) for p in passages)) / 2


def decide(passages: list[Passage], best_dense: float, min_score: float) -> Retrieval:
    """Answer or abstain. Abstaining still returns the closest passages, so the user sees what
    was found."""
    if not passages:
        return Retrieval([], abstain=True, reason="the knowledge base is empty: add documents first")
    score = support(passages, best_dense)
    if score < min_score:
        return Retrieval(
            passages,
            abstain=True,
            reason=f"no passage supports an answer well enough (support {score:.2f}, needed {min_score:.2f})",
        )
    return Retrieval(passages, abstain=False, reason=f"support {score:.2f}")
