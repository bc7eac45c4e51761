"""The Activity tab: conversations and messages per day, thumbs-up rate per adapter over
time, reply latency percentiles, and hints on when to curate and re-tune."""

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
    return "\n".join(lines)


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
        columns=["period", "adapter", "thumbs-up rate", "rated"],
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
        ]
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
    # Slanted day labels: level ones ran into each other from about 20 days up.
    per_day_plot = gr.BarPlot(
        x="day", y="count", color="kind", title="Conversations and messages per day", height=260, x_label_angle=-45
    )
    # Points, not lines: a line needs two periods, so on a first day (or a first week of
    # votes) a line plot stayed empty. The top of the scale leaves room for a 100% point.
    rating_plot = gr.ScatterPlot(
        x="period", y="thumbs-up rate", color="adapter", title="Thumbs-up rate per adapter", y_lim=[0, 1.05], height=260
    )
    with gr.Accordion("Numbers", open=False):
        rating_table = gr.Dataframe(label="Thumbs-up rate per adapter", interactive=False)
        latency_table = gr.Dataframe(label="Reply latency (all, then per day, newest first)", interactive=False)

    @shows_errors
    def refresh(n_days, per):
        report = activity.report(days=int(n_days), bucket=per)
        per_day, ratings, latency = frames(report)
        return summary_markdown(report), plot_value(per_day), plot_value(ratings), ratings, latency

    outputs = [summary, per_day_plot, rating_plot, rating_table, latency_table]
    refresh_btn.click(refresh, [days, bucket], outputs, api_name="activity_refresh")
    bucket.change(refresh, [days, bucket], outputs, api_name="activity_bucket")
    return ActivityTab(refresh=refresh, inputs=[days, bucket], outputs=outputs)
