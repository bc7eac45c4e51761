"""What the tabs show on an empty workspace (issue #18 item 7), and that nothing polls on its
own (item 8): the pure formatting helpers, and the app as built, without a server.
tests/e2e/test_browser_first_run.py checks the same in a browser."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest

from evals.activity import Activity
from evals.reports import METRICS
from ui.activity_tab import NO_CHARTS, NO_RATINGS, charts_shown, summary_markdown
from ui.dataset_format import NO_EXAMPLES, listing_text
from ui.eval_format import METRICS_COLUMNS, NO_RUNS, PICK_A_RUN, run_hint, side_by_side_columns
from ui.knowledge_format import NO_DOCUMENTS, status_line
from ui.tune_format import job_summary

PLACEHOLDER_HEADERS = {"1", "2", "3"}


def _stats(documents: int) -> dict:
    return {
        "documents": documents,
        "chunks": 3 * documents,
        "index_kind": "flat" if documents else None,
        "embedding_model": "m",
        "min_score": 0.6,
    }


def test_knowledge_says_what_to_do_first_until_there_is_a_document():
    empty = status_line(_stats(0))
    assert empty.startswith(NO_DOCUMENTS) and "**0 documents · 0 chunks**" in empty
    assert NO_DOCUMENTS not in status_line(_stats(2)) and status_line(_stats(2)).startswith("**2 documents")


def test_dataset_says_what_to_do_first_until_there_is_an_example():
    none = {"train": 0, "validation": 0, "test": 0}
    assert listing_text(none, 0, 0, 0, 0) == NO_EXAMPLES
    # all excluded is not empty: the counts say so
    assert listing_text(none, 2, 0, 0, 0).startswith("**0 active examples**")
    some = {"train": 8, "validation": 1, "test": 1}
    assert listing_text(some, 0, 0, 3, 3).endswith(" · 3 match(es)")
    assert listing_text(some, 0, 0, 200, 250).endswith(" · showing 200 of 250 matches")
    assert NO_EXAMPLES not in listing_text(some, 0, 0, 0, 0)  # a search that finds nothing


def test_tune_summary_says_what_to_do_first_and_where_the_chart_will_be():
    assert "No training job yet" in job_summary(None) and "Train on current dataset" in job_summary(None)

    def job(status, loss):
        return SimpleNamespace(
            id=1,
            status=status,
            adapter_name=None,
            message="",
            total_steps=40,
            step=0 if loss is None else 3,
            epoch=None,
            tokens_per_s=None,
            eta_s=None,
            loss=loss,
            eval_loss=None,
            best_step=None,
            best_eval_loss=None,
            config={},
            dataset_version="1",
            base_model="tiny",
            threads=1,
            resumes=0,
            error=None,
            is_active=status in ("queued", "starting", "running"),
            grounding=lambda: None,
        )

    note = "The loss chart appears here once the first training steps are logged."
    assert note in job_summary(job("running", None)) and note in job_summary(job("queued", None))
    assert note not in job_summary(job("running", 2.0))  # the chart is on show
    assert note not in job_summary(job("failed", None))  # it will not appear


def test_evaluate_hint_and_the_empty_tables_headers():
    assert run_hint(run_open=False, any_runs=False) == NO_RUNS
    assert run_hint(run_open=False, any_runs=True) == PICK_A_RUN
    assert run_hint(run_open=True, any_runs=True) == ""
    assert METRICS_COLUMNS == ["Arm", "n"] + [label for _, label, _ in METRICS]
    assert side_by_side_columns()[3:5] == ["A", "B"]
    assert side_by_side_columns("base", "tone-v1")[3:5] == ["A: base", "B: tone-v1"]


def test_activity_hides_the_charts_until_they_have_something_to_draw(workspace):
    from assistant.conversations import ConversationLog

    log = ConversationLog(workspace.db)  # its tables, as the app opens it
    report = Activity(workspace.db).report(days=7)
    assert charts_shown(report) == {"per_day": False, "ratings": False}
    assert NO_CHARTS in summary_markdown(report)

    conv = log.create()
    log.add_message(conv.id, "user", "hello")
    reply = log.add_message(conv.id, "assistant", "hi")
    report = Activity(workspace.db).report(days=7)
    assert charts_shown(report) == {"per_day": True, "ratings": False}
    text = summary_markdown(report)
    assert NO_RATINGS in text and NO_CHARTS not in text

    log.set_feedback(reply.id, 1)
    report = Activity(workspace.db).report(days=7)
    assert charts_shown(report) == {"per_day": True, "ratings": True}
    assert NO_RATINGS not in summary_markdown(report)


@pytest.fixture
def app(tiny_core):
    """The whole app, built as `tailor serve` builds it (no server)."""
    from ui.app import build_ui

    return build_ui(tiny_core)


def test_no_table_placeholder_headers_no_empty_chart_no_running_timer(app):
    blocks = list(app.blocks.values())
    tables = [b for b in blocks if isinstance(b, gr.Dataframe)]
    assert tables
    for table in tables:
        assert not PLACEHOLDER_HEADERS & set(table.headers), f"{table.label}: {table.headers}"
    charts = [b for b in blocks if isinstance(b, (gr.LinePlot, gr.BarPlot, gr.ScatterPlot))]
    assert charts and not [c.elem_id for c in charts if c.visible]  # shown once they have data
    timers = [b for b in blocks if isinstance(b, gr.Timer)]
    assert timers and not [t for t in timers if t.active]  # started only while a job runs

    # Every timer is switched by an event; the Tune tab's refresh events keep the outputs
    # API callers see (the view state is a gr.State, which gradio_client skips).
    by_name = {fn.api_name: fn for fn in app.fns.values()}
    switched = {id(out) for fn in by_name.values() for out in fn.outputs if isinstance(out, gr.Timer)}
    assert {id(t) for t in timers} <= switched
    refresh = by_name["tune_refresh"]
    assert [type(o).__name__ for o in refresh.outputs if not isinstance(o, gr.State)] == [
        "Markdown",
        "LinePlot",
        "Textbox",
        "Dropdown",
        "Dataframe",
        "Dropdown",
        "Dropdown",  # the chat's model picker
    ]
