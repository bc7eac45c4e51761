"""The Activity tab: conversations and messages per day, thumbs-up rate per adapter over
time, reply latency percentiles, and hints on when to curate and re-tune.

A chart with nothing to draw is hidden, and the summary says what will appear there and how
(issue #18): `refresh` also returns which charts have data, as a gr.State that API callers do
not see; when it changes, one small event shows or hides the two charts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from evals.activity import Activity, ActivityReport

from .errors import shows_errors
from .formatting import plot_value


@dataclass
class ActivityTab:
    refresh: Callable  # (days, bucket) -> the values of `outputs`
    inputs: list
    outputs: list


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v / 1000:.2f} s"


def summary_markdown(r: ActivityReport) -> str:
    t = r.totals
    lat = r.latency
    lines = [
        f"**{r.since} → {r.until}** · {t['conversations']} conversations · {t['messages']} messages "
        # Two trailing spaces: a Markdown line break (the two lines ran together as one).
        f"({t['api_messages']} through /v1) · 👍 {t['thumbs_up']} · 👎 {t['thumbs_down']}  ",
        f"Reply time p50 {_ms(lat.p50_ms)} · p95 {_ms(lat.p95_ms)} · first token p50 {_ms(lat.ttft_p50_ms)} · "
        f"p95 {_ms(lat.ttft_p95_ms)} ({lat.replies} replies)",
        "",
    ]
    lines += [f"- {h}" for h in r.hints]
    if not has_chats(r):
        lines += ["", NO_CHARTS]
    elif not r.ratings:
        lines += ["", NO_RATINGS]
    return "\n".join(lines)


NO_CHARTS = (
    "*Charts appear here once there are chats in this period: conversations and messages per day, and the "
    "thumbs-up rate per adapter once replies are rated (👍 / 👎 under a reply in the Chat tab).*"
)
NO_RATINGS = "*The thumbs-up rate per adapter appears here once replies are rated (👍 / 👎 under a reply in the chat).*"


def has_chats(r: ActivityReport) -> bool:
    """Anything to draw per day: a conversation or a message in the period."""
    return any(d.conversations or d.user_messages or d.assistant_messages for d in r.days)


def charts_shown(r: ActivityReport) -> dict:
    """Which charts have something to draw (the others are hidden)."""
    return {"per_day": has_chats(r), "ratings": bool(r.ratings)}


RATING_COLUMNS = ["period", "adapter", "thumbs-up rate", "rated"]
LATENCY_COLUMNS = ["day", "replies", "p50 (s)", "p95 (s)", "first token p50 (s)", "first token p95 (s)"]


def frames(r: ActivityReport) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    per_day = pd.DataFrame(
        [{"day": d.day, "kind": "conversations", "count": d.conversations} for d in r.days]
        + [{"day": d.day, "kind": "messages", "count": d.user_messages + d.assistant_messages} for d in r.days]
    )
    ratings = pd.DataFrame(
        [
            {"period": p.period, "adapter": p.adapter, "thumbs-up rate": round(p.up_rate, 3), "rated": p.rated}
            for p in r.ratings
        ],
        columns=RATING_COLUMNS,
    )
    latency = pd.DataFrame(
        [
            {
                "day": s.label,
                "replies": s.replies,
                "p50 (s)": _round(s.p50_ms),
                "p95 (s)": _round(s.p95_ms),
                "first token p50 (s)": _round(s.ttft_p50_ms),
                "first token p95 (s)": _round(s.ttft_p95_ms),
            }
            for s in [r.latency, *reversed(r.latency_by_day)]
        ],
        columns=LATENCY_COLUMNS,
    )
    return per_day, ratings, latency


def _round(v: float | None) -> float | None:
    return None if v is None else round(v / 1000, 3)


def build_activity_tab(activity: Activity) -> ActivityTab:
    with gr.Row():
        days = gr.Slider(7, 365, value=30, step=1, label="Days", scale=3)
        bucket = gr.Radio(["day", "week"], value="day", label="Thumbs-up rate per", scale=1)
        refresh_btn = gr.Button("Refresh", scale=1)
    summary = gr.Markdown("")
    # Both charts start hidden: `shown` shows each once it has something to draw.
    # Slanted day labels: level ones ran into each other from about 20 days up.
    per_day_plot = gr.BarPlot(
        x="day",
        y="count",
        color="kind",
        title="Conversations and messages per day",
        height=260,
        x_label_angle=-45,
        visible=False,
        elem_id="activity-per-day-chart",
    )
    # Points, not lines: a line needs two periods, so on a first day (or a first week of
    # votes) a line plot stayed empty. The top of the scale leaves room for a 100% point.
    rating_plot = gr.ScatterPlot(
        x="period",
        y="thumbs-up rate",
        color="adapter",
        title="Thumbs-up rate per adapter",
        y_lim=[0, 1.05],
        height=260,
        visible=False,
        elem_id="activity-rating-chart",
    )
    with gr.Accordion("Numbers", open=False):
        rating_table = gr.Dataframe(headers=RATING_COLUMNS, label="Thumbs-up rate per adapter", interactive=False)
        latency_table = gr.Dataframe(
            headers=LATENCY_COLUMNS, label="Reply latency (all, then per day, newest first)", interactive=False
        )
    shown = gr.State({"per_day": False, "ratings": False})  # which charts are on show

    @shows_errors
    def refresh(n_days, per):
        report = activity.report(days=int(n_days), bucket=per)
        per_day, ratings, latency = frames(report)
        on = charts_shown(report)
        return (
            summary_markdown(report),
            plot_value(per_day) if on["per_day"] else None,
            plot_value(ratings),
            ratings,
            latency,
            on,
        )

    def show(on):
        on = on or {}
        return gr.update(visible=bool(on.get("per_day"))), gr.update(visible=bool(on.get("ratings")))

    # `shown` is a gr.State: API callers see the same outputs as before it existed.
    outputs = [summary, per_day_plot, rating_plot, rating_table, latency_table, shown]
    refresh_btn.click(refresh, [days, bucket], outputs, api_name="activity_refresh")
    bucket.change(refresh, [days, bucket], outputs, api_name="activity_bucket")
    shown.change(show, [shown], [per_day_plot, rating_plot], api_name="activity_charts", show_progress="hidden")
    return ActivityTab(refresh=refresh, inputs=[days, bucket], outputs=outputs)
