"""The Evaluate tab: start an A/B run (arms × retrieval over a set; the prompted arm with an
editable style prompt, prefilled from the user's train pairs) in the background, watch
its progress, open past runs (metrics with 95% intervals, a chart, paired tests, per-item
side by side, save a reply as a training example), the history of each metric over time
(ui/eval_history.py), and blind pairwise votes with win rates and Bradley–Terry ratings. Until a
run is open, what to do first stands where its metrics table will be.

Handlers are thin: read widgets, call evals' services, format. The pair handler returns
only the opaque pair id, the prompt and the two replies: arm names appear only in the answer
to a vote."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from assistant.errors import ValidationError
from evals import Evals
from evals.charts import interval_chart_svg
from evals.reports import (
    METRIC_LABELS,
    METRICS,
    PER_ITEM,
    aggregate_run,
    all_comparisons,
    metrics_table,
    side_by_side,
)
from evals.runner import PROMPTED, TUNED, RunOptions
from evals.selection import FACTS, FILE, TEST, SaveExample, TestSplit, save_item_as_example, set_from_choice
from evals.votes import CHOICES

from .errors import shows_errors
from .eval_format import (
    METRICS_COLUMNS,
    OPEN_VOTES_NOTE,
    RATING_COLUMNS,
    WIN_COLUMNS,
    classification_markdown,
    ratings_frame,
    run_choices,
    run_hint,
    side_by_side_columns,
    side_by_side_frame,
    status_line,
    tests_markdown,
    vote_verdict,
    win_frame,
)
from .eval_history import build_history_panel
from .uploads import uploaded_path

SET_TEST, SET_FACTS, SET_FILE = "test split", "facts", "uploaded file"
SET_KINDS = {SET_TEST: TEST, SET_FACTS: FACTS, SET_FILE: FILE}  # the radio's labels -> evals.selection
ANY = "any two"
ORDERS = {"A did worse first": "a_worse", "A did better first": "a_better", "set order": "position"}
_METRIC_CHOICES = [(label, key) for key, label, _ in METRICS]
_TEST_CHOICES = [(METRIC_LABELS[k], k) for k in PER_ITEM]


@dataclass
class EvalTab:
    """The components the app refreshes and the handlers (tests call them directly)."""

    run_id: gr.Textbox  # the run shown
    runs: gr.Dropdown  # the stored runs
    arms: gr.CheckboxGroup  # the models to evaluate
    style_prompt: gr.Textbox  # the prompted arm's system prompt (empty: built from the train pairs)
    list_runs: Callable  # (current run id=None) -> update of `runs`
    refresh_models: Callable  # () -> update of `arms` (adapters published since the page opened)
    model_choices: Callable  # () -> the models an arm can use
    start: Callable
    build_style_prompt: Callable  # () -> the default style prompt, from the workspace's train pairs
    open_run: Callable
    compare: Callable
    save: Callable
    next_pair: Callable
    vote: dict[str, Callable]  # one handler per vote choice (evals.votes.CHOICES)
    standings: Callable
    history: Callable


def build_eval_tab(
    evals: Evals,
    *,
    test_split: TestSplit | None = None,
    facts_path: Path | None = None,
    save_example: SaveExample | None = None,
) -> EvalTab:
    """Build the tab inside the current gr.Blocks.

    test_split: returns the current dataset version's test split (composed from the tuning
    package by build_eval_tab_for_core); facts_path: the default facts set; save_example(messages, reply,
    provenance) stores a training example and returns a message (the curation store)."""
    runs, votes = evals.runs, evals.votes

    def model_choices() -> list[str]:
        return list(dict.fromkeys(["base", PROMPTED, TUNED] + runs.chat.adapters.names()))

    with gr.Accordion("New evaluation run", open=True):
        with gr.Row():
            arms = gr.CheckboxGroup(
                model_choices(),
                value=["base", TUNED],
                label="Models",
                info=f"'{TUNED}' is the active adapter (or the newest); '{PROMPTED}' is the base model "
                "with the style prompt below",
            )
            rag = gr.CheckboxGroup(["off", "on"], value=["off", "on"], label="Retrieval")
            set_kind = gr.Radio([SET_TEST, SET_FACTS, SET_FILE], value=SET_TEST, label="Evaluation set")
        with gr.Row():
            upload = gr.File(label="JSONL with reference answers", file_types=[".jsonl"], type="filepath")
            limit = gr.Number(value=0, precision=0, label="Items (0 = all)", minimum=0)
            max_new = gr.Slider(16, 512, value=128, step=16, label="Max new tokens")
        with gr.Row():
            style_prompt = gr.Textbox(
                label=f"Style prompt (the '{PROMPTED}' arm's system prompt)",
                info="Used only by the prompted arm, for every item. Empty: built from three of your training "
                "pairs when the run starts.",
                lines=6,
                scale=4,
            )
            build_style_btn = gr.Button("Build from my pairs", size="sm", scale=1)
        with gr.Row():
            start_btn = gr.Button("Start evaluation", variant="primary")
            cancel_btn = gr.Button("Cancel", variant="stop")
        run_status = gr.Markdown("")

    with gr.Row():
        runs_dd = gr.Dropdown(
            label="Evaluation runs", choices=run_choices(evals.store.list_runs()), value=None, interactive=True, scale=4
        )
        refresh_btn = gr.Button("Refresh", size="sm", scale=1)
        metric = gr.Dropdown(_METRIC_CHOICES, value="semantic", label="Chart metric", scale=2)
    run_id = gr.Textbox(label="Run id", max_lines=1, visible=False)
    # While no run is open, what to do first stands here and the empty table is hidden (`show_hint`).
    hint = gr.Markdown("")
    table = gr.Dataframe(
        headers=METRICS_COLUMNS,
        label="Metrics per arm: mean [95% bootstrap interval]",
        interactive=False,
        wrap=True,
        visible=False,
    )
    chart = gr.HTML()
    classification = gr.Markdown()

    with gr.Accordion("Paired tests and side by side", open=False):
        with gr.Row():
            arm_a = gr.Dropdown(label="Arm A", choices=[], interactive=True)
            arm_b = gr.Dropdown(label="Arm B", choices=[], interactive=True)
            test_metric = gr.Dropdown(_TEST_CHOICES, value="semantic", label="Metric")
            order = gr.Dropdown(list(ORDERS), value="A did worse first", label="Sort by A − B")
        compare_btn = gr.Button("Compare")
        tests_md = gr.Markdown()
        sbs = gr.Dataframe(
            headers=side_by_side_columns(),
            label="Items, sorted by the difference A − B",
            interactive=False,
            wrap=True,
        )
        with gr.Row():
            save_item = gr.Textbox(label="Item id", max_lines=1)
            save_side = gr.Radio(["A", "B"], value="A", label="Reply of")
            save_btn = gr.Button("Save as training example", interactive=save_example is not None)
        save_status = gr.Markdown()

    # elem_id: the browser test checks that nothing in this panel names an arm before a vote.
    with gr.Accordion("Blind votes", open=False, elem_id="blind-votes"):
        gr.Markdown(
            "Two replies to the same prompt from two arms, sides drawn at random. Which model wrote "
            "which is shown only after you vote."
        )
        with gr.Row():
            vote_x = gr.Dropdown(label="Compare", choices=[ANY], value=ANY, interactive=True)
            vote_y = gr.Dropdown(label="with", choices=[ANY], value=ANY, interactive=True)
            pair_btn = gr.Button("New pair", variant="primary")
        pair_id = gr.Textbox(visible=False)
        prompt_md = gr.Markdown()
        with gr.Row():
            reply_a = gr.Textbox(label="Reply A", lines=8, interactive=False)
            reply_b = gr.Textbox(label="Reply B", lines=8, interactive=False)
        with gr.Row():
            vote_buttons = {key: gr.Button(label) for key, label in CHOICES.items()}
        reveal = gr.Markdown()
        win_table = gr.Dataframe(
            headers=WIN_COLUMNS,
            label="Win rates (Wilson 95% intervals), all votes: blind, and open ones from the Compare tab",
            interactive=False,
        )
        gr.Markdown(OPEN_VOTES_NOTE)
        bt_table = gr.Dataframe(
            headers=RATING_COLUMNS, label="Bradley–Terry ratings over every adapter ever voted on", interactive=False
        )
        board_btn = gr.Button("Refresh standings", size="sm")

    history = build_history_panel(evals.store)  # "Metrics over time"

    # ---- handlers -----------------------------------------------------------------------
    @shows_errors
    def start(models, rags, kind, file, n, max_tokens, style_text=None):
        # Only a file this server received as an upload (a web request can name any path).
        path = uploaded_path(file) if kind == SET_FILE and file else None
        evalset = set_from_choice(
            SET_KINDS.get(kind, kind), test_split=test_split, facts_path=facts_path, path=path, limit=int(n or 0)
        )
        chosen = runs.resolve_arms(list(models or []) or None, list(rags or []) or None)
        style = style_text if style_text and style_text.strip() else None  # None: the runner builds the default
        run = runs.start(evalset, chosen, RunOptions(max_new_tokens=int(max_tokens), style_prompt=style))
        note = f" ({len(evalset.skipped)} lines skipped)" if evalset.skipped else ""
        return run.id, f"Started run `{run.id}` on {len(evalset.items)} items{note}."

    @shows_errors
    def build_style_prompt():
        text = runs.default_style_prompt()
        if not text:
            raise ValidationError(
                "there are no training pairs in the train split to build a style prompt from: add some in the "
                "Dataset tab, or write the style prompt yourself"
            )
        return text

    @shows_errors
    def watch(rid, progress=gr.Progress()):
        rid = (rid or "").strip()
        if not rid:
            return ""
        while True:
            r = evals.store.get_run(rid)
            progress(r.progress, desc=f"{r.done}/{r.total} replies")
            if r.status not in ("queued", "running"):
                return status_line(r)
            time.sleep(1.0)

    def cancel(rid):
        rid = (rid or "").strip()
        return "Cancelling…" if rid and runs.cancel(rid) else "Nothing to cancel."

    def list_runs(current=None):
        return gr.update(choices=run_choices(evals.store.list_runs()), value=current or None)

    @shows_errors
    def open_run(rid, chart_metric):
        rid = (rid or "").strip()
        if not rid:
            return None, "", "", gr.update(), gr.update(), gr.update(), gr.update(), rid
        run = evals.store.get_run(rid)
        summary = aggregate_run(evals.store, rid)
        header, rows = metrics_table(summary)
        cls_md = classification_markdown(summary)
        keys = run.arm_keys
        a = gr.update(choices=keys, value=keys[-1] if keys else None)
        b = gr.update(choices=keys, value=keys[0] if keys else None)
        vx = gr.update(choices=[ANY] + keys, value=ANY)
        return (
            pd.DataFrame(rows, columns=header),
            interval_chart_svg(summary, chart_metric or "semantic"),
            status_line(run) + ("\n\n" + cls_md if cls_md else ""),
            a,
            b,
            vx,
            vx,
            rid,
        )

    @shows_errors
    def redraw(rid, chart_metric):
        rid = (rid or "").strip()
        if not rid:
            return ""
        return interval_chart_svg(aggregate_run(evals.store, rid), chart_metric or "semantic")

    @shows_errors
    def compare(rid, a, b, m, order_label):
        rid = (rid or "").strip()
        if not rid or not a or not b:
            raise gr.Error("Open a run and choose two arms first.")
        if a == b:
            raise gr.Error("Choose two different arms.")
        tests = all_comparisons(evals.store, rid, m)
        rows = side_by_side(evals.store, rid, a, b, m, ORDERS.get(order_label, "a_worse"))
        return tests_markdown(tests, m), side_by_side_frame(rows, a, b)

    @shows_errors
    def save(rid, a, b, item, side):
        if save_example is None:
            raise gr.Error("Saving training examples needs the Dataset (curation) store.")
        rid, item = (rid or "").strip(), (item or "").strip()
        arm = a if side == "A" else b
        if not rid or not arm or not item:
            raise gr.Error("Open a run, choose the arms and type an item id from the table.")
        return save_item_as_example(evals.store, rid, arm, item, save_example)

    @shows_errors
    def next_pair(rid, x, y):
        """Returns only (pair id, prompt, reply A, reply B, status): nothing that names an arm."""
        rid = (rid or "").strip()
        if not rid:
            raise gr.Error("Open an evaluation run first.")
        x = None if x in (None, "", ANY) else x
        y = None if y in (None, "", ANY) else y
        pair = votes.next_pair(rid, x, y)
        return pair.pair_id, f"**Prompt:** {pair.prompt}", pair.reply_a, pair.reply_b, "Which reply is better?"

    def standings():
        return win_frame(votes.win_rates()), ratings_frame(votes.ratings())

    def make_vote(choice):
        @shows_errors
        def vote(pid):
            pid = (pid or "").strip()
            if not pid:
                raise gr.Error("Load a pair first.")
            out = votes.vote(pid, choice)
            win_df, bt_df = standings()
            return "", vote_verdict(out), win_df, bt_df

        return vote

    def show_hint(rid):
        """While no run is open: what to do first, and no metrics table; once one is, the table
        (runs on page load and whenever the open run changes)."""
        run_open = bool((rid or "").strip())
        return run_hint(run_open, bool(evals.store.list_runs())), gr.update(visible=run_open)

    # ---- events -------------------------------------------------------------------------
    start_btn.click(
        start, [arms, rag, set_kind, upload, limit, max_new, style_prompt], [run_id, run_status], api_name="eval_start"
    ).success(watch, [run_id], [run_status], api_name="eval_watch").then(
        list_runs, [run_id], [runs_dd], api_name="eval_runs_after_start"
    ).then(
        open_run,
        [run_id, metric],
        [table, chart, classification, arm_a, arm_b, vote_x, vote_y, run_id],
        api_name="eval_open_after_start",
    )
    build_style_btn.click(build_style_prompt, None, [style_prompt], api_name="eval_build_style_prompt")
    cancel_btn.click(cancel, [run_id], [run_status], api_name="eval_cancel", queue=False)
    refresh_btn.click(list_runs, [runs_dd], [runs_dd], api_name="eval_list_runs")
    runs_dd.input(
        open_run,
        [runs_dd, metric],
        [table, chart, classification, arm_a, arm_b, vote_x, vote_y, run_id],
        api_name="eval_pick_run",
    )
    open_hidden = gr.Button(visible=False)
    open_hidden.click(
        open_run,
        [run_id, metric],
        [table, chart, classification, arm_a, arm_b, vote_x, vote_y, run_id],
        api_name="eval_open_run",
    )
    metric.change(redraw, [run_id, metric], [chart], api_name="eval_chart")
    compare_btn.click(compare, [run_id, arm_a, arm_b, test_metric, order], [tests_md, sbs], api_name="eval_compare")
    save_btn.click(save, [run_id, arm_a, arm_b, save_item, save_side], [save_status], api_name="eval_save_example")
    pair_btn.click(
        next_pair, [run_id, vote_x, vote_y], [pair_id, prompt_md, reply_a, reply_b, reveal], api_name="eval_next_pair"
    )
    vote_handlers = {}
    for key, button in vote_buttons.items():
        vote_handlers[key] = make_vote(key)
        button.click(vote_handlers[key], [pair_id], [pair_id, reveal, win_table, bt_table], api_name=f"eval_vote_{key}")
    board_btn.click(standings, None, [win_table, bt_table], api_name="eval_standings")
    # triggers=None: on page load, and whenever `run_id` changes (a run opened or started).
    gr.on(None, show_hint, [run_id], [hint, table], api_name="eval_hint", show_progress="hidden")

    return EvalTab(
        run_id=run_id,
        runs=runs_dd,
        arms=arms,
        style_prompt=style_prompt,
        list_runs=list_runs,
        refresh_models=lambda: gr.update(choices=model_choices()),
        model_choices=model_choices,
        start=start,
        build_style_prompt=build_style_prompt,
        open_run=open_run,
        compare=compare,
        save=save,
        next_pair=next_pair,
        vote=vote_handlers,
        standings=standings,
        history=history,
    )


def build_eval_tab_for_core(core, curation=None) -> EvalTab:
    """The tab composed from the app's core: the chat's engine/adapters/retriever, the latest
    dataset version's test split (tuning's version registry), the demo's facts set and the
    curation store for "save as training example" and the prompted arm's default style prompt
    (`curation`: the app's, else opened here)."""
    from demo import demo_facts
    from evals import open_evals
    from evals.selection import latest_test_split
    from tuning import open_curation
    from tuning.editing import example_saver

    curation = curation or open_curation(core.workspace)
    return build_eval_tab(
        open_evals(core.workspace, core.chat, examples=curation.store),
        test_split=lambda: latest_test_split(core.workspace, curation.versions),
        facts_path=demo_facts(),
        save_example=example_saver(curation.store),
    )
