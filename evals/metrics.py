"""Per-item text metrics and classification metrics.

Every function here scores one reply against one reference (or a list of labels) and is
pure Python, so each is checked against hand-computed values in tests/evals. Aggregation
over items, with intervals, lives in stats.py.

Normalisation follows the SQuAD v1.1 evaluation script: lower-case, drop punctuation, drop
the articles a/an/the, collapse whitespace. Token F1 and exact match use it; ROUGE-L uses
the same tokens so the three metrics agree on what a word is."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

_ARTICLES = re.compile(r"\b(a|an|the)\b")
# SQuAD strips ASCII punctuation; typographic quotes, dashes and the euro sign's neighbours
# are common in real replies, so Unicode punctuation goes too (currency symbols stay: "€45").
_PUNCT = set(string.punctuation) | set("‘’“”–—…«»¿¡·")


def normalize_answer(text: str) -> str:
    text = (text or "").lower()
    text = "".join(" " if ch in _PUNCT else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def tokens(text: str) -> list[str]:
    return normalize_answer(text).split()


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)  # both empty: a match; one empty: nothing in common
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, O(len(a)·len(b)) time, O(len(b)) memory."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            cur[j] = prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1])
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str, beta: float = 1.0) -> float:
    """ROUGE-L F-measure over normalised tokens (Lin 2004; beta=1 weighs precision and
    recall equally, as most reports do)."""
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    lcs = lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


def fact_found(prediction: str, answers: Iterable[str]) -> float:
    """1.0 when any normalised gold answer (or alias) occurs in the normalised reply as a
    whole-word run, e.g. "46 bikes" in "We have 46 bikes to rent" but "46" not in "1460"."""
    reply = f" {normalize_answer(prediction)} "
    for answer in answers:
        norm = normalize_answer(answer)
        if norm and f" {norm} " in reply:
            return 1.0
    return 0.0


# A sentence ends at . ! or ? followed by white space, or at a line break (so in "Fair winds!
# — Lantern Bay Bikes" the dash starts a sentence of its own).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def sentences(text: str, min_words: int = 3) -> list[str]:
    """The reply's normalised sentences of at least `min_words` words (shorter ones, such as
    "Yes." or "Thanks!", are left out: repeating those is not a loop)."""
    out = []
    for part in _SENTENCE_END.split(text or ""):
        norm = normalize_answer(part)
        if len(norm.split()) >= min_words:
            out.append(norm)
    return out


def repeats(prediction: str, min_words: int = 3) -> float:
    """1.0 when some sentence of at least `min_words` words occurs twice or more in the reply
    (after normalisation), else 0.0. It catches a model that loops ("Fair winds! Fair winds!
    ...") or restates itself, a flaw a tuned small model picks up from a fixed sign-off."""
    found = sentences(prediction, min_words)
    return float(len(found) != len(set(found)))


def cosine(a, b) -> float:
    """Cosine similarity of two vectors (embedders here return unit vectors, but do not rely on it)."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / denom) if denom > 0 else 0.0


# ---- classification --------------------------------------------------------------------------

NO_LABEL = "(none)"


def predict_label(reply: str, labels: Sequence[str]) -> str:
    """The class a free-text reply names: the label equal to the whole normalised reply, else
    the label mentioned earliest in it (longest first on a tie, so "very good" beats "good"),
    else NO_LABEL. Chat models answer in sentences, so an exact-match-only rule would score
    "It is positive." as wrong."""
    reply = normalize_answer(reply)
    norm = {label: normalize_answer(label) for label in labels}
    for label, n in norm.items():
        if n and n == reply:
            return label
    padded = f" {reply} "
    best: tuple[int, int, str] | None = None
    for label, n in norm.items():
        if not n:
            continue
        pos = padded.find(f" {n} ")
        if pos >= 0 and (best is None or (pos, -len(n)) < best[:2]):
            best = (pos, -len(n), label)
    return best[2] if best else NO_LABEL


@dataclass
class ClassificationReport:
    labels: list[str]  # the gold classes, sorted; the confusion matrix's rows
    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    per_label: dict[str, dict[str, float]] = field(default_factory=dict)  # label -> precision/recall/f1/support
    # confusion[gold][predicted] = count; predicted also includes NO_LABEL when replies named none
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)
    n: int = 0


def classification_report(gold: Sequence[str], predicted: Sequence[str]) -> ClassificationReport:
    """Accuracy, macro precision/recall/F1 over the gold classes (a class never predicted has
    precision 0, the scikit-learn convention with zero_division=0), and the confusion matrix."""
    if len(gold) != len(predicted):
        raise ValueError("gold and predicted labels differ in length")
    labels = sorted(set(gold))
    columns = labels + sorted(set(predicted) - set(labels))
    confusion = {g: {p: 0 for p in columns} for g in labels}
    for g, p in zip(gold, predicted):
        confusion[g][p] += 1
    per_label = {}
    for label in labels:
        tp = confusion[label][label]
        predicted_as = sum(confusion[g][label] for g in labels)
        support = sum(confusion[label].values())
        precision = tp / predicted_as if predicted_as else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    n = len(gold)
    k = len(labels) or 1
    return ClassificationReport(
        labels=labels,
        accuracy=sum(g == p for g, p in zip(gold, predicted)) / n if n else 0.0,
        macro_precision=sum(v["precision"] for v in per_label.values()) / k,
        macro_recall=sum(v["recall"] for v in per_label.values()) / k,
        macro_f1=sum(v["f1"] for v in per_label.values()) / k,
        per_label=per_label,
        confusion=confusion,
        n=n,
    )
