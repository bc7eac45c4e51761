"""The Tune tab: one click trains a LoRA adapter on the current dataset; live progress
(step/total, epoch, tokens/s, ETA), the train/validation loss curve and the job log, polled
with a gr.Timer from the database and the job folder, so a browser reload loses nothing;
cancel and resume; the adapter registry with activate / rename / delete, and the picked adapter as
GGUF files for llama.cpp / Ollama (ui/gguf_panel.py). The timer only reads:
the app's background job thread runs the queue (tuning's `start_background`); a refresh that
finds a job active at most wakes that thread, should it sleep unaware of a worker started elsewhere.

The timer ticks only while a job is queued, starting or running (issue #18: an idle page
sends no requests). Every refresh also returns what the page should show, as a gr.State
(`{"running": …, "curve": …}`, hidden from API callers); when that changes, one small event
starts or stops the timer and shows or hides the loss chart. So the timer starts when a job
is started or resumed here, or when a page opens (or the tab is reopened) and finds a job
active, and stops at the first tick that finds none (read before the rest of the tick, so
the page it leaves shows the job's end). Formatting: ui/tune_format.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from tuning.config import TrainConfig, dpo_defaults, full_defaults
from tuning.grounding_mix import DEFAULT_MAX_EXAMPLES, DEFAULT_RATIO, MAX_RATIO
from tuning.jobs import DEFAULT_FAMILY
from tuning.service import TuneService

from .compare_panel import open_compare_for_job
from .errors import shows_errors
from .formatting import plot_value
from .gguf_panel import build_gguf_panel
from .tune_format import (
    ADAPTER_COLUMNS,
    adapter_rows,
    config_from_inputs,
    grounding_from_inputs,
    job_choices,
    job_summary,
    loss_frame,
)

TICK_S = 2.0  # how often the timer refreshes the tab while a job is active
IDLE_VIEW = {"running": False, "curve": False}  # a page before its first refresh: timer off, no chart


# ---- the tab ----------------------------------------------------------------------------------
@dataclass
class TuneTab:
    refresh: Callable  # (*inputs) -> the values of `outputs`: everything the tab shows
    inputs: list  # the job picked, the adapters the page last saw
    outputs: list
    timer: gr.Timer  # ticks `refresh` every TICK_S seconds, only while a job is active


def build_tune_tab(
    service: TuneService,
    chat_models: Callable[[], list[str]] | None = None,
    chat_model_dropdown: gr.Dropdown | None = None,
    chat_default: Callable[[], str] | None = None,
    compare_model_dropdown: gr.Dropdown | None = None,
    tabs: gr.Tabs | None = None,
) -> TuneTab:
    """chat_models / chat_default: the chat's model choices and the model it answers with by
    default (the active adapter or the base); the chat's dropdown follows both.
    compare_model_dropdown / tabs: the Compare tab's right-side model and the app's tabs, which
    "Compare in chat" sets to the picked finished job's adapter and switches to."""
    d = TrainConfig()
    gr.Markdown(
        "Train a LoRA adapter on the current dataset (a snapshot is taken at start). The job runs in "
        "its own process: closing or reloading this page does not stop it, and the chat keeps working."
    )
    with gr.Row():
        family = gr.Textbox(
            label="Adapter name", value="tailor", max_lines=1, scale=2, info="Each run publishes NAME-v1, NAME-v2, …"
        )
        activate = gr.Checkbox(label="Use it in the chat when done", value=True, scale=1)
        estimate_btn = gr.Button("Estimate time and memory", scale=1)
        start_btn = gr.Button("Train on current dataset", variant="primary", scale=2)
    dpo = dpo_defaults()
    with gr.Row():
        method = gr.Radio(
            [
                ("Voice and answers (SFT on the examples)", "sft"),
                ("Preferences (DPO on the preference pairs)", "dpo"),
                ("Voice and answers, every weight (full fine-tuning)", "full"),
            ],
            value="sft",
            label="What to learn",
            scale=3,
            info="DPO learns to prefer each pair's chosen reply over its rejected one (pairs come from edits "
            "in the chat, 👍/👎 on two replies to one prompt, or imports). Full fine-tuning trains the whole "
            "model instead of a LoRA adapter: for small models (about 16 bytes of memory per parameter; refused "
            "when it does not fit), and each result is a whole checkpoint.",
        )
        start_from = gr.Dropdown(
            label="DPO starts from",
            choices=["active", "base"],
            value="active",
            scale=2,
            visible=False,
            allow_custom_value=True,
            info="active: the adapter the chat uses (else the base); or a published adapter, or base",
        )
    with gr.Row():
        grounding_on = gr.Checkbox(
            label="Keep reading my documents",
            value=True,
            scale=2,
            info="Mix in practice questions made from your documents (the answer's passage among others, "
            "and some the documents cannot answer), so tuning for your voice does not cost reading. "
            "Only this tune's training data gets them.",
        )
        grounding_ratio = gr.Slider(
            0.0,
            MAX_RATIO,
            value=DEFAULT_RATIO,
            step=0.05,
            scale=2,
            label="Share of the training set",
            info=f"{DEFAULT_RATIO:g} adds about {DEFAULT_RATIO / (1 - DEFAULT_RATIO):.0%} more examples "
            f"than your dataset's (at most {DEFAULT_MAX_EXAMPLES})",
        )
    with gr.Accordion("Advanced", open=False):
        with gr.Row():
            epochs = gr.Number(label="Epochs", value=d.epochs, minimum=0.1, maximum=100, step=0.5)
            lr = gr.Number(label="Learning rate", value=d.learning_rate, minimum=1e-6, maximum=1e-2)
            rank = gr.Dropdown(label="LoRA rank", choices=[4, 8, 16, 32, 64], value=d.lora_r, info="alpha = 2 × rank")
            batch = gr.Slider(1, 32, value=d.batch_size, step=1, label="Batch size")
        with gr.Row():
            max_length = gr.Number(label="Max tokens per example", value=d.max_length, minimum=16, step=64)
            patience = gr.Number(
                label="Early-stopping patience (evaluations, 0 = off)",
                value=d.early_stopping_patience,
                minimum=0,
                step=1,
            )
            threads = gr.Number(label="CPU threads (0 = cores − 1)", value=0, minimum=0, step=1)
    with gr.Row():
        job_pick = gr.Dropdown(label="Job", choices=[], value=None, interactive=True, scale=3)
        cancel_btn = gr.Button("Cancel", variant="stop", scale=1)
        resume_btn = gr.Button("Resume", scale=1)
        can_compare = compare_model_dropdown is not None and tabs is not None and chat_models is not None
        compare_btn = gr.Button("Compare in chat", scale=1, visible=can_compare)
    compare_md = gr.Markdown("")
    estimate_md = gr.Markdown("")
    summary = gr.Markdown(job_summary(None))
    # Hidden until the job shown has logged a loss (the summary above says what to do first).
    plot = gr.LinePlot(
        None,
        x="step",
        y="loss",
        color="series",
        title="Loss",
        height=300,
        x_title="step",
        y_title="loss",
        visible=IDLE_VIEW["curve"],
        elem_id="tune-loss-chart",
    )
    log_box = gr.Textbox(
        label="Job log",
        lines=10,
        max_lines=10,
        interactive=False,
        autoscroll=True,
        placeholder="The job's log appears here once a job starts.",
    )
    adapters_table = gr.Dataframe(
        adapter_rows([]), headers=ADAPTER_COLUMNS, interactive=False, wrap=True, label="Published adapters"
    )
    with gr.Row():
        adapter_pick = gr.Dropdown(label="Adapter", choices=[], value=None, interactive=True, scale=2)
        new_name = gr.Textbox(label="New name", max_lines=1, scale=2)
        activate_btn = gr.Button("Use in chat", scale=1)
        base_btn = gr.Button("Use base model", scale=1)
        rename_btn = gr.Button("Rename", scale=1)
        delete_btn = gr.Button("Delete", variant="stop", scale=1)
    adapter_status = gr.Markdown("")
    build_gguf_panel(service, adapter_pick)  # "Download GGUF (llama.cpp / Ollama)" for the picked adapter
    known_adapters = gr.State({})  # the adapter names and the active one the page last saw
    view = gr.State(dict(IDLE_VIEW))  # a job active (timer on), a loss curve to show: see `show_view`
    timer = gr.Timer(TICK_S, active=IDLE_VIEW["running"])

    def _job_id(value) -> int | None:
        if value:
            return int(value)
        latest = service.jobs.latest()
        return latest.id if latest else None

    def _chat_update(seen: dict, known):
        if chat_models is None or seen == known:
            return gr.update()
        # The active adapter changed too (a job published with "Use it in the chat when done",
        # or "Use in chat" / "Use base model"): move the open chat's picker to it, or this
        # page would keep answering with the model it had, contrary to what the tab just said.
        if chat_default is not None and (not isinstance(known, dict) or seen["active"] != known.get("active")):
            return gr.update(choices=chat_models(), value=chat_default())
        return gr.update(choices=chat_models())

    def refresh(job_value, known):
        """Everything the tab shows, from the DB and the job folder (the timer calls it). It
        only reads: starting queued jobs and watching workers is the background thread's."""
        # Whether a job is active is read first: a job that ends while the rest is read then
        # leaves the timer on for one more tick, which shows its end. (Read last, a job that
        # ended in between stopped the timer on a page still showing it running.)
        active = service.jobs.store.any_active()
        if active:
            service.jobs.watch_if_idle()  # a worker started elsewhere while the app was idle
        job_id = _job_id(job_value)
        progress = service.jobs.progress(job_id) if job_id else None
        jobs = service.jobs.list(limit=30)
        records = service.registry.list()
        names = [r.name for r in records]
        seen = {"names": names, "active": next((r.name for r in records if r.active), None)}
        curve = plot_value(loss_frame(progress))
        return (
            job_summary(progress.job if progress else None),
            curve,
            "\n".join(progress.log) if progress else "",
            gr.update(choices=job_choices(jobs), value=str(job_id) if job_id else None),
            adapter_rows(records),
            gr.update(choices=names),
            seen,
            {"running": active, "curve": curve is not None},
            _chat_update(seen, known),
        )

    def show_view(shown):
        """The timer ticks only while a job is active; the loss chart shows once there is a curve."""
        shown = shown or IDLE_VIEW
        return gr.Timer(active=bool(shown.get("running"))), gr.update(visible=bool(shown.get("curve")))

    def on_method(kind):
        """Show the DPO choices, and move epochs and rate to the chosen method's defaults."""
        chosen = dpo if kind == "dpo" else full_defaults() if kind == "full" else d
        names = [r.name for r in service.registry.list()]
        return (
            gr.update(visible=kind == "dpo", choices=["active", "base", *names]),
            gr.update(visible=kind != "dpo"),
            gr.update(visible=kind != "dpo"),
            chosen.epochs,
            chosen.learning_rate,
        )

    def _config(ep, rate, r, bs, ml, pat, th, kind, start_name) -> TrainConfig:
        config = config_from_inputs(ep, rate, r, bs, ml, pat, th)
        if kind == "dpo":
            chosen = {k: getattr(config, k) for k in ("epochs", "learning_rate", "lora_r", "lora_alpha")}
            chosen.update({k: getattr(config, k) for k in ("batch_size", "max_length", "early_stopping_patience")})
            config = service.preference_config(start_name or "active", **chosen, threads=config.threads)
        elif kind == "full":  # the LoRA rank does not apply
            chosen = {k: getattr(config, k) for k in ("epochs", "learning_rate", "batch_size", "max_length")}
            config = full_defaults(
                **chosen, early_stopping_patience=config.early_stopping_patience, threads=config.threads
            )
        return config

    @shows_errors
    def estimate(ep, rate, r, bs, ml, pat, th, g_on, g_ratio, kind, start_name, progress=gr.Progress()):
        """A short measured probe of the run these settings would start (tuning/estimate.py)."""
        progress(0.1, desc="measuring a few training steps")
        est = service.estimate(
            config=_config(ep, rate, r, bs, ml, pat, th, kind, start_name),
            grounding=grounding_from_inputs(g_on, g_ratio),
        )
        return est.summary().replace("\nWARNING: ", "\n\n**Warning:** ")

    @shows_errors
    def start(fam, act, ep, rate, r, bs, ml, pat, th, g_on, g_ratio, kind, start_name, known):
        config = _config(ep, rate, r, bs, ml, pat, th, kind, start_name)
        fam_name = (fam or "").strip() or None
        if kind in ("dpo", "full") and fam_name == DEFAULT_FAMILY:
            fam_name = None  # the field's default: a DPO run publishes tailor-dpo-vN, a full one tailor-full-vN
        job = service.start(
            config=config,
            family=fam_name,
            activate=bool(act),
            grounding=grounding_from_inputs(g_on, g_ratio),
        )
        return refresh(str(job.id), known)

    @shows_errors
    def cancel(job_value, known):
        job_id = _job_id(job_value)
        if job_id is None:
            raise gr.Error("There is no job to cancel.")
        service.jobs.cancel(job_id)
        return refresh(str(job_id), known)

    @shows_errors
    def resume(job_value, known):
        job_id = _job_id(job_value)
        if job_id is None:
            raise gr.Error("There is no job to resume.")
        service.jobs.resume(job_id)
        return refresh(str(job_id), known)

    def _adapter_action(fn, message):
        @shows_errors
        def handler(name, new, job_value, known):
            if not name and fn is not _use_base:
                raise gr.Error("Pick an adapter first.")
            text = message(fn(name, new))
            return (text,) + refresh(job_value, known)

        return handler

    def _activate(name, new):
        return service.registry.activate(name)

    def _use_base(name, new):
        return service.registry.activate(None)

    def _rename(name, new):
        return service.registry.rename(name, (new or "").strip()).name

    def _delete(name, new):
        return service.registry.delete(name).name

    # `view` is a gr.State: API callers see the same outputs as before it existed.
    outputs = [summary, plot, log_box, job_pick, adapters_table, adapter_pick, known_adapters, view]
    if chat_model_dropdown is not None:
        outputs.append(chat_model_dropdown)
        refresh_fn, start_fn, cancel_fn, resume_fn = refresh, start, cancel, resume
    else:  # no chat to update: drop the last output

        def refresh_fn(*a):
            return refresh(*a)[:-1]

        def start_fn(*a):
            return start(*a)[:-1]

        def cancel_fn(*a):
            return cancel(*a)[:-1]

        def resume_fn(*a):
            return resume(*a)[:-1]

    def wrap_action(handler):
        if chat_model_dropdown is not None:
            return handler
        return lambda *a: handler(*a)[:-1]

    advanced = [epochs, lr, rank, batch, max_length, patience, threads]
    # The grounding inputs come after the older ones, so API callers that pass only those get
    # the defaults (gradio fills trailing inputs that have a default value).
    start_inputs = [family, activate, *advanced, grounding_on, grounding_ratio, method, start_from, known_adapters]
    method.change(on_method, [method], [start_from, grounding_on, grounding_ratio, epochs, lr], api_name="tune_method")
    start_btn.click(start_fn, start_inputs, outputs, api_name="tune_start")
    estimate_btn.click(
        estimate,
        [*advanced, grounding_on, grounding_ratio, method, start_from],
        [estimate_md],
        api_name="tune_estimate",
    )
    cancel_btn.click(cancel_fn, [job_pick, known_adapters], outputs, api_name="tune_cancel")
    resume_btn.click(resume_fn, [job_pick, known_adapters], outputs, api_name="tune_resume")
    job_pick.input(refresh_fn, [job_pick, known_adapters], outputs, api_name="tune_pick_job")
    timer.tick(refresh_fn, [job_pick, known_adapters], outputs, api_name="tune_refresh", show_progress="hidden")
    # Runs only when `view` changes (a job became active or ended, a curve appeared or went).
    view.change(show_view, [view], [timer, plot], api_name="tune_view", show_progress="hidden")
    action_inputs = [adapter_pick, new_name, job_pick, known_adapters]
    action_outputs = [adapter_status] + outputs
    activate_btn.click(
        wrap_action(_adapter_action(_activate, lambda n: f"The chat now answers with `{n}`.")),
        action_inputs,
        action_outputs,
        api_name="tune_activate_adapter",
    )
    base_btn.click(
        wrap_action(_adapter_action(_use_base, lambda n: "The chat now answers with the base model.")),
        action_inputs,
        action_outputs,
        api_name="tune_use_base",
    )
    rename_btn.click(
        wrap_action(_adapter_action(_rename, lambda n: f"Renamed to `{n}`.")),
        action_inputs,
        action_outputs,
        api_name="tune_rename_adapter",
    )
    delete_btn.click(
        wrap_action(_adapter_action(_delete, lambda n: f"Deleted `{n}`.")),
        action_inputs,
        action_outputs,
        api_name="tune_delete_adapter",
    )
    if can_compare:

        def compare_in_chat(job_value):
            """The picked job's adapter (the latest job's if none is picked) against the base
            model, in the Compare tab; a job that has not published one says why instead."""
            job_id = _job_id(job_value)
            return open_compare_for_job(service.jobs.get(job_id) if job_id else None, chat_models())

        compare_btn.click(
            compare_in_chat,
            [job_pick],
            [compare_md, compare_model_dropdown, tabs],
            api_name="tune_compare_in_chat",
        )
    return TuneTab(refresh=refresh_fn, inputs=[job_pick, known_adapters], outputs=outputs, timer=timer)
