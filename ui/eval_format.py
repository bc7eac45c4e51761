"""Gradio-free helpers that turn evaluation data into what the Evaluate tab shows: run lists
and status lines, the classification report, paired tests, the side-by-side table, vote
standings and the metric history."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from evals.reports import METRIC_LABELS, METRICS

# The tables' columns, so that an empty one shows its real headers (not Gradio's "1 2 3").
METRICS_COLUMNS = ["Arm", "n"] + [label for _, label, _ in METRICS]  # a run's table has those with values
WIN_COLUMNS = [
    "player",
    "against",
    "votes",
    "of which open",
    "wins",
    "losses",
    "ties",
    "both bad",
    "win rate",
    "95% low",
    "95% high",
    "wins of decided",
]
RATING_COLUMNS = ["player", "rating", "strength", "games"]
HISTORY_COLUMNS = ["created_at", "run_id", "set_kind", "set_name", "arm", "adapter_version", "mean", "lo", "hi", "n"]

NO_RUNS = (
    "**No evaluation runs yet.** Choose the models, retrieval and set above and press **Start evaluation** "
    "(the test split needs examples in the Dataset tab; the demo at the top of the page brings examples and "
    "fact questions). Each arm's scores with their 95% ranges, a chart, paired tests and blind votes then "
    "appear here."
)
PICK_A_RUN = "Pick a run under *Evaluation runs* to see its metrics, or start a new one above."


def run_hint(run_open: bool, any_runs: bool) -> str:
    """The line above the metrics table: nothing once a run is open; else what to do first."""
    if run_open:
        return ""
    return PICK_A_RUN if any_runs else NO_RUNS


def side_by_side_columns(a: str | None = None, b: str | None = None) -> list[str]:
    """The side-by-side table's columns; the reply columns name the two arms once chosen."""
    return [
        "item",
        "prompt",
        "reference",
        f"A: {a}" if a else "A",
        f"B: {b}" if b else "B",
        "A value",
        "B value",
        "A − B",
    ]


def run_choices(runs: Sequence) -> list[tuple[str, str]]:
    """(label, id) per run, for a dropdown: when, which set, which arms, how far."""
    return [
        (
            f"{r.created_at[:16].replace('T', ' ')} · {r.set_kind}:{r.set_name} · {', '.join(r.arm_keys)} · "
            f"{r.status} {r.done}/{r.total}",
            r.id,
        )
        for r in runs
    ]


def status_line(r) -> str:
    text = f"Run `{r.id}`: **{r.status}**, {r.done}/{r.total} replies"
    if r.dataset_version:
        text += f", dataset version {r.dataset_version}"
    if r.error:
        text += f" — {r.error}"
    return text


def classification_markdown(summary) -> str:
    """Accuracy, macro precision/recall/F1 and the confusion matrix of each arm (for sets
    with labels); empty when there are none."""
    out = ""
    for arm, rep in summary.classification.items():
        cols = list(next(iter(rep.confusion.values())).keys()) if rep.confusion else []
        lines = [
            f"**{arm}** — accuracy {rep.accuracy:.3f}, macro P/R/F1 {rep.macro_precision:.3f} / "
            f"{rep.macro_recall:.3f} / {rep.macro_f1:.3f}",
            "",
            "| gold \\ predicted | " + " | ".join(cols) + " |",
            "|---" * (len(cols) + 1) + "|",
        ]
        lines += [f"| {g} | " + " | ".join(str(row[c]) for c in cols) + " |" for g, row in rep.confusion.items()]
        out += "\n".join(lines) + "\n\n"
    return out


def tests_markdown(tests: Sequence, metric: str) -> str:
    """The paired permutation tests between every two arms, as a table."""
    lines = [
        f"Paired permutation test (random sign flips of per-item differences, 10,000 draws) on "
        f"**{METRIC_LABELS.get(metric, metric)}**; interval: bootstrap 95% of the mean difference.",
        "",
        "| A | B | mean A − B | 95% interval | p | n | |",
        "|---|---|---|---|---|---|---|",
    ]
    for x, y, t in tests:
        if t.n == 0:
            continue
        mark = "significant" if t.significant else ""
        lines.append(
            f"| {x} | {y} | {t.mean_diff:+.3f} | [{t.lo:+.3f}, {t.hi:+.3f}] | {t.p_value:.4f} | {t.n} | {mark} |"
        )
    return "\n".join(lines)


def side_by_side_frame(rows: Sequence, a: str, b: str) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "item": r.item_id,
                "prompt": r.prompt,
                "reference": r.reference,
                f"A: {a}": r.reply_a,
                f"B: {b}": r.reply_b,
                "A value": r.value_a,
                "B value": r.value_b,
                "A − B": r.diff,
            }
            for r in rows
        ]
    )


# Under the win-rate table: what the "of which open" column counts, and why to mind it.
OPEN_VOTES_NOTE = (
    "*of which open*: votes cast in the **Compare** tab, where the voter saw which model wrote which "
    "reply. They are counted with the blind votes here and in the ratings, but they can be biased "
    "(towards the model you expect to be better): trust a lead that the blind votes show too."
)


def win_frame(rates: Sequence) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "player": r.player,
                "against": r.opponent,
                "votes": r.n,
                "of which open": r.open_votes,
                "wins": r.wins,
                "losses": r.losses,
                "ties": r.ties,
                "both bad": r.both_bad,
                "win rate": round(r.win_rate, 3),
                "95% low": round(r.lo, 3),
                "95% high": round(r.hi, 3),
                "wins of decided": None if r.wins + r.losses == 0 else round(r.decisive_rate, 3),
            }
            for r in rates
        ]
    )


def ratings_frame(ratings: Sequence) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"player": r.player, "rating": round(r.elo, 1), "strength": round(r.strength, 4), "games": r.games}
            for r in ratings
        ]
    )


def vote_verdict(out) -> str:
    """The reveal after a vote: which arm wrote which reply, and what the vote said."""
    verdict = {
        "a": f"you preferred **{out.arm_a}**",
        "b": f"you preferred **{out.arm_b}**",
        "tie": "a tie",
        "both_bad": "both bad",
    }[out.choice]
    return f"Reply A was **{out.arm_a}**, reply B was **{out.arm_b}**: {verdict}."


def history_frames(rows: list[dict]) -> tuple[pd.DataFrame | None, pd.DataFrame]:
    """(plot frame or None when empty, table frame) of history_rows(...)."""
    df = pd.DataFrame(rows)
    if df.empty:
        return None, df
    df["time"] = pd.to_datetime(df["created_at"])
    plot = df[["time", "mean", "arm"]]
    table = df[["created_at", "run_id", "set_kind", "set_name", "arm", "adapter_version", "mean", "lo", "hi", "n"]]
    return plot, table
