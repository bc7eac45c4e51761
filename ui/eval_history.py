"""The Evaluate tab's "Metrics over time" panel: a metric's mean per arm in every finished run
(a table), and a chart of it over time once there are two runs to draw a line through (hidden
until then, issue #18: `shown` is a gr.State that API callers do not see)."""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from evals.reports import METRICS, history_rows
from evals.store import EvalStore

from .eval_format import HISTORY_COLUMNS, history_frames

_METRIC_CHOICES = [(label, key) for key, label, _ in METRICS]


def build_history_panel(store: EvalStore) -> Callable:
    """Build the panel inside the current gr.Blocks; returns its handler (metric, set) ->
    (chart frame or None, table frame)."""

    def history(m, kind):
        return history_frames(history_rows(store, m or "semantic", None if kind in (None, "all") else kind))

    def history_and_chart(m, kind):
        plot, table = history(m, kind)
        # The last: whether the chart has anything to draw (a line needs two runs: with one,
        # the chart showed empty axes; the table lists it).
        return plot, table, plot is not None and plot["time"].nunique() > 1

    with gr.Accordion("Metrics over time", open=False):
        with gr.Row():
            metric = gr.Dropdown(_METRIC_CHOICES, value="semantic", label="Metric")
            set_kind = gr.Dropdown(["all", "test", "facts", "file"], value="all", label="Set")
            show_btn = gr.Button("Show")
        gr.Markdown(
            "**Show** lists the chosen metric's mean for every arm in each finished run on the chosen set, and "
            "draws it over time (one line per arm) once there are two such runs."
        )
        plot = gr.LinePlot(
            x="time",
            y="mean",
            color="arm",
            title="Metric per arm across runs",
            x_title="run time",
            y_title="mean",
            visible=False,
            elem_id="eval-history-chart",
        )
        table = gr.Dataframe(headers=HISTORY_COLUMNS, label="Runs", interactive=False)
        shown = gr.State(False)
    show_btn.click(history_and_chart, [metric, set_kind], [plot, table, shown], api_name="eval_history")
    shown.change(lambda on: gr.update(visible=bool(on)), [shown], [plot], api_name="eval_history_chart")
    return history
