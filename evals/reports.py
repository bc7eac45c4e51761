"""What a stored run says: per-arm metrics with bootstrap intervals, classification scores
for labelled items, paired tests between arms, the per-item side-by-side table, and the
data behind the charts. Everything is computed from the stored per-item results, so a run
re-opened later (or still in progress) reads the same way."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import metrics as M
from .stats import Estimate, PairedTest, bootstrap_ci, paired_test
from .store import EvalStore, ItemResult

# (key, label, higher is better); the order is the table's column order.
METRICS: list[tuple[str, str, bool]] = [
    ("semantic", "Tone (semantic sim.)", True),
    ("fact", "Fact accuracy", True),
    ("rouge_l", "ROUGE-L", True),
    ("f1", "Token F1", True),
    ("exact_match", "Exact match", True),
    ("ref_loss", "Ref. loss (nats/tok)", False),
    ("perplexity", "Ref. perplexity", False),
    ("abstained", "No-source rate", False),
    # share of replies that repeat a sentence (a loop); the demo's preference pairs teach against it
    ("repeats", "Repeats itself", False),
    # lower is better where a reply should be short; for most sets it is a description, read
    # with the references' own lengths in mind
    ("words", "Reply length (words)", False),
    ("latency_s", "Latency (s)", False),
    ("tokens_per_s", "Tokens/s", True),
]
METRIC_LABELS = {k: label for k, label, _ in METRICS}
HIGHER_IS_BETTER = {k: h for k, _, h in METRICS}
PER_ITEM = [k for k, _, _ in METRICS if k != "perplexity"]  # perplexity is derived from ref_loss


@dataclass
class RunSummary:
    run_id: str
    arms: list[str]
    metrics: dict[str, dict[str, Estimate]]  # arm -> metric -> estimate (metrics with no values left out)
    classification: dict[str, M.ClassificationReport] = field(default_factory=dict)  # arm -> report
    n_results: int = 0


def aggregate_results(
    results: list[ItemResult], arms: list[str], gold_labels: dict[str, str] | None = None, seed: int = 0
) -> RunSummary:
    gold_labels = gold_labels or {}
    by_arm: dict[str, list[ItemResult]] = {a: [] for a in arms}
    for r in results:
        by_arm.setdefault(r.arm, []).append(r)
    out: dict[str, dict[str, Estimate]] = {}
    cls: dict[str, M.ClassificationReport] = {}
    label_set = sorted(set(gold_labels.values()))
    for arm, rows in by_arm.items():
        per: dict[str, Estimate] = {}
        for key in PER_ITEM:
            values: list[float] = [r.metrics[key] for r in rows if r.metrics.get(key) is not None]
            if values:
                per[key] = bootstrap_ci(values, seed=seed)
        if "ref_loss" in per:  # exp is monotone, so the interval maps through it
            loss = per["ref_loss"]
            per["perplexity"] = Estimate(math.exp(loss.mean), math.exp(loss.lo), math.exp(loss.hi), loss.n)
        labelled = [r for r in rows if r.item_id in gold_labels]
        if labelled:
            gold = [gold_labels[r.item_id] for r in labelled]
            pred = [M.predict_label(r.reply, label_set) for r in labelled]
            report = M.classification_report(gold, pred)
            cls[arm] = report
            per["accuracy"] = bootstrap_ci([float(g == p) for g, p in zip(gold, pred)], seed=seed)
            per["macro_f1"] = Estimate(report.macro_f1, *_macro_f1_ci(gold, pred, seed), report.n)
        out[arm] = per
    return RunSummary("", list(by_arm), out, cls, len(results))


def _macro_f1_ci(gold: list[str], pred: list[str], seed: int, resamples: int = 1000) -> tuple[float, float]:
    """Macro F1 is not a mean over items, so bootstrap it directly: resample items, recompute."""
    import numpy as np

    n = len(gold)
    if n < 2:
        f = M.classification_report(gold, pred).macro_f1
        return f, f
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(resamples):
        idx = rng.integers(0, n, size=n)
        scores.append(M.classification_report([gold[i] for i in idx], [pred[i] for i in idx]).macro_f1)
    lo, hi = np.quantile(scores, [0.025, 0.975])
    return float(lo), float(hi)


def aggregate_run(store: EvalStore, run_id: str) -> RunSummary:
    run = store.get_run(run_id)
    gold = {i.id: i.label for i in store.items(run_id) if i.label is not None}
    summary = aggregate_results(store.results(run_id), run.arm_keys, gold)
    summary.run_id = run_id
    return summary


def metrics_table(summary: RunSummary, metrics: list[str] | None = None) -> tuple[list[str], list[list]]:
    """(header, rows) with one row per arm and "mean [lo, hi]" cells, for the UI and the CLI."""
    keys = metrics or [
        k
        for k in [m[0] for m in METRICS] + ["accuracy", "macro_f1"]
        if any(k in per for per in summary.metrics.values())
    ]
    header = ["Arm", "n"] + [METRIC_LABELS.get(k, k.replace("_", " ").title()) for k in keys]
    rows = []
    for arm in summary.arms:
        per = summary.metrics.get(arm, {})
        n = max((e.n for e in per.values()), default=0)
        rows.append([arm, n] + [format_estimate(per[k]) if k in per else "" for k in keys])
    return header, rows


def format_estimate(e: Estimate) -> str:
    if e is None or math.isnan(e.mean):
        return ""
    digits = 3 if abs(e.mean) < 10 else 1
    return f"{e.mean:.{digits}f} [{e.lo:.{digits}f}, {e.hi:.{digits}f}]"


def summary_json(summary: RunSummary) -> dict:
    return {
        "run_id": summary.run_id,
        "arms": {arm: {k: e.as_dict() for k, e in per.items()} for arm, per in summary.metrics.items()},
        "classification": {
            arm: {
                "labels": r.labels,
                "accuracy": r.accuracy,
                "macro_precision": r.macro_precision,
                "macro_recall": r.macro_recall,
                "macro_f1": r.macro_f1,
                "confusion": r.confusion,
            }
            for arm, r in summary.classification.items()
        },
    }


def _values(results: list[ItemResult], arm: str, metric: str) -> dict[str, float]:
    return {r.item_id: r.metrics[metric] for r in results if r.arm == arm and r.metrics.get(metric) is not None}


def compare(store: EvalStore, run_id: str, arm_a: str, arm_b: str, metric: str = "semantic") -> PairedTest:
    """Paired test of arm A against arm B on `metric`, over the items both have a value for."""
    from assistant.errors import ValidationError

    run = store.get_run(run_id)
    for arm in (arm_a, arm_b):
        if arm not in run.arm_keys:
            raise ValidationError(f"run {run_id} has no arm {arm!r} (it has {', '.join(run.arm_keys)})")
    if metric not in PER_ITEM:
        raise ValidationError(f"cannot test {metric!r}; choose one of {', '.join(PER_ITEM)}")
    results = store.results(run_id)
    a, b = _values(results, arm_a, metric), _values(results, arm_b, metric)
    common = [i for i in a if i in b]
    return paired_test([a[i] for i in common], [b[i] for i in common])


def all_comparisons(store: EvalStore, run_id: str, metric: str) -> list[tuple[str, str, PairedTest]]:
    run = store.get_run(run_id)
    keys = run.arm_keys
    return [(x, y, compare(store, run_id, x, y, metric)) for i, x in enumerate(keys) for y in keys[i + 1 :]]


@dataclass
class SideBySideRow:
    item_id: str
    prompt: str
    reference: str
    reply_a: str
    reply_b: str
    value_a: float | None
    value_b: float | None

    @property
    def diff(self) -> float | None:
        if self.value_a is None or self.value_b is None:
            return None
        return self.value_a - self.value_b


def side_by_side(
    store: EvalStore, run_id: str, arm_a: str, arm_b: str, metric: str = "semantic", order: str = "a_worse"
) -> list[SideBySideRow]:
    """Items with both arms' replies and `metric` values, sorted by the difference A − B:
    "a_worse" puts the items where A lost most first (regressions of A), "a_better" the
    reverse, "position" keeps the set's order."""
    from assistant.errors import ValidationError

    run = store.get_run(run_id)
    for arm in (arm_a, arm_b):
        if arm not in run.arm_keys:
            raise ValidationError(f"run {run_id} has no arm {arm!r} (it has {', '.join(run.arm_keys)})")
    if order not in ("a_worse", "a_better", "position"):
        raise ValidationError("order must be a_worse, a_better or position")
    results = {(r.arm, r.item_id): r for r in store.results(run_id)}
    rows = []
    for item in store.items(run_id):
        ra, rb = results.get((arm_a, item.id)), results.get((arm_b, item.id))
        if ra is None or rb is None:
            continue
        rows.append(
            SideBySideRow(
                item.id,
                item.question,
                item.reference,
                ra.reply,
                rb.reply,
                ra.metrics.get(metric),
                rb.metrics.get(metric),
            )
        )
    if order != "position":
        sign = 1 if order == "a_worse" else -1
        # lower-is-better metrics (loss, latency) flip, so "A worse" still means A did worse
        if not HIGHER_IS_BETTER.get(metric, True):
            sign = -sign
        rows.sort(key=lambda r: (r.diff is None, sign * (r.diff or 0.0)))
    return rows


def training_example(store: EvalStore, run_id: str, arm: str, item_id: str) -> tuple[list[dict], str]:
    """The conversation and reply to save as a training example from the side-by-side table:
    the item's messages as the user asked them (without retrieved passages, like a chat
    saved without retrieval) and the arm's reply."""
    items = {i.id: i for i in store.items(run_id)}
    if item_id not in items:
        from assistant.errors import NotFoundError

        raise NotFoundError(f"run {run_id} has no item {item_id!r}")
    result = store.result(run_id, arm, item_id)
    return list(items[item_id].messages), result.reply


def history_rows(store: EvalStore, metric: str, set_kind: str | None = None) -> list[dict]:
    """One row per (finished run, arm) with the metric's mean and interval, oldest first, for
    the chart of a metric across adapter versions over time."""
    rows = store.metric_history(metric)
    if set_kind:
        rows = [r for r in rows if r["set_kind"] == set_kind]
    for r in rows:
        version = (r["adapter_version"] or "")[-6:]
        r["series"] = r["arm"]
        r["label"] = f"{r['arm']}@{version}" if version else r["arm"]
    return rows
