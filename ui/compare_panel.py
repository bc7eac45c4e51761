"""The Compare tab: one message goes to two models (the base on the left, a tuned adapter on the
right by default) and both replies stream side by side. Each side is an ordinary logged
conversation (assistant/compare.py), so its replies show up in the Chat tab's past conversations
and can be rated or edited there. Each side reads the documents or not ("Use my documents" under
its picker). Once both replies are in, "Left is better" / "Right is better" / "Tie" / "Both bad"
records an open vote (evals/chat_votes.py) that the Evaluate tab counts with the blind votes.
The Tune tab's "Compare in chat" opens a finished job's adapter here (`open_compare_for_job`).
Every event has an api_name starting with `compare_`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from assistant.adapters import BASE
from assistant.chat import ChatService
from assistant.compare import SideBySide
from assistant.engine import GenerationOptions
from assistant.errors import TailorError, ValidationError
from evals.chat_votes import OPEN_CHOICES, OpenVote, OpenVotes
from evals.store import EvalStore
from tuning.job_store import ACTIVE_STATES

from .chat_display import chat_messages, with_pending_reply
from .errors import shows_errors
from .formatting import reply_stats

COMPARE_TAB_ID = "compare"  # the gr.Tab id the Tune tab's "Compare in chat" switches to
BASE_LABEL = "Base"


def side_label(model: str | None) -> str:
    return BASE_LABEL if model in (None, "", BASE) else str(model)


def right_choices(models: list[str]) -> list[str]:
    """The right side compares a tuned model with the base: every model but the base."""
    return [m for m in models if m != BASE]


def default_right(models: list[str], preferred: str | None = None) -> str | None:
    choices = right_choices(models)
    if preferred in choices:
        return preferred
    return choices[-1] if choices else None  # the newest name sorts last within a family (tailor-v2)


def compare_target(job, models: list[str]) -> str:
    """The adapter a training job's "Compare in chat" opens, or a ValidationError saying why
    there is none. `job`: a tuning Job (status, adapter_name, id) or None."""
    if job is None:
        raise ValidationError("There is no training job yet: train an adapter, then compare it with the base model.")
    if job.status in ACTIVE_STATES:
        raise ValidationError(
            f"Job {job.id} is still {job.status}: **Compare in chat** opens once it has finished and "
            "published its adapter."
        )
    if job.status != "succeeded" or not job.adapter_name:
        raise ValidationError(
            f"Job {job.id} {job.status} and published no adapter: pick a finished job (✅) to compare."
        )
    if job.adapter_name not in models:
        raise ValidationError(
            f"Job {job.id}'s adapter `{job.adapter_name}` is no longer published (renamed or deleted): "
            "pick one in the Compare tab."
        )
    return job.adapter_name


def open_compare_for_job(job, models: list[str]) -> tuple[str, dict, object]:
    """What "Compare in chat" shows: (message, the right dropdown's update, the gr.Tabs update).
    A job that cannot be compared leaves the dropdown and the tab as they are and says why."""
    try:
        name = compare_target(job, models)
    except ValidationError as exc:
        return f"⚠️ {exc}", gr.update(), gr.update()
    return (
        f"Comparing `{name}` with the base model in the **Compare** tab.",
        gr.update(choices=right_choices(models), value=name),
        gr.Tabs(selected=COMPARE_TAB_ID),
    )


def vote_message(vote: OpenVote) -> str:
    """What the status line says after a vote."""
    left, right = f"**{vote.left}** (left)", f"**{vote.right}** (right)"
    said = {
        "left": f"{left} is better than {right}",
        "right": f"{right} is better than {left}",
        "tie": f"a tie between {left} and {right}",
        "both_bad": f"both replies are bad ({left}, {right})",
    }
    text = (
        f"Vote recorded: {said[vote.choice]}. The Evaluate tab counts it with the blind votes, "
        "as an open vote (you saw the model names)."
    )
    if vote.replaced is not None and vote.replaced != vote.choice:
        text += f" It replaces your earlier vote on these replies ({OPEN_CHOICES[vote.replaced]})."
    elif vote.replaced is not None:
        text += " (The same as your earlier vote on these replies: counted once.)"
    return text


def _shown(messages) -> list[dict]:
    """As the chat shows a conversation: each reply under its label, its sources folded there."""
    return chat_messages(messages)


@dataclass
class ComparePanel:
    """What the app and the Tune tab hook into."""

    left_model: gr.Dropdown
    right_model: gr.Dropdown
    list_models: Callable  # (left value, right value) -> updates of (left_model, right_model)
    model_outputs: list  # [left_model, right_model]
    send: Callable  # the streaming send handler (tests call it directly)
    stop: Callable
    new_comparison: Callable
    # one handler per vote choice (evals.chat_votes.OPEN_CHOICES): (left id, right id) -> status line
    vote: dict[str, Callable]


def build_compare_panel(chat: ChatService, votes: OpenVotes | None = None) -> ComparePanel:
    """Build the panel inside the current gr.Blocks (the app puts it in its own tab). `votes`:
    where "this one is better" goes (default: the evaluation vote store of the chat's database)."""
    service = SideBySide(chat)
    votes = votes or OpenVotes(EvalStore(chat.log.db), chat.log)
    defaults = GenerationOptions()
    models = chat.models()
    right_default = default_right(models, chat.default_model())
    gr.Markdown(
        "Send one message to two models and read the replies side by side: the base model and a "
        "tuned adapter by default. Each side is saved as its own conversation (see the Chat tab's "
        "past conversations), so you can rate or edit the replies there."
    )
    with gr.Row():
        with gr.Column(scale=1):
            left_model = gr.Dropdown(label="Left", choices=models, value=BASE, interactive=True)
            left_docs = gr.Checkbox(label="Use my documents (left)", value=False, elem_id="compare-left-docs")
        with gr.Column(scale=1):
            right_model = gr.Dropdown(
                label="Right",
                choices=right_choices(models),
                value=right_default,
                interactive=True,
                info=None if right_default else "No tuned adapter yet: train one in the Tune tab.",
            )
            right_docs = gr.Checkbox(label="Use my documents (right)", value=False, elem_id="compare-right-docs")
    with gr.Row():
        left_chat = gr.Chatbot(label=BASE_LABEL, height=460, buttons=["copy"])
        right_chat = gr.Chatbot(label=side_label(right_default), height=460, buttons=["copy"])
    gr.Markdown(
        "**Which reply is better?** Vote once both replies are in. It is an open vote (you see which "
        "model wrote which): the Evaluate tab counts it with the blind votes, marked as open."
    )
    with gr.Row():
        vote_buttons = {
            key: gr.Button(label, size="sm", elem_id=f"compare-vote-{key.replace('_', '-')}")
            for key, label in OPEN_CHOICES.items()
        }
    with gr.Row():
        message = gr.Textbox(
            placeholder="Ask both models something and press Enter", show_label=False, scale=6, lines=1, max_lines=6
        )
        send_btn = gr.Button("Send", variant="primary", scale=1)
        stop_btn = gr.Button("Stop", variant="stop", scale=1)
        new_btn = gr.Button("New comparison", scale=1)
    status = gr.Markdown("")
    with gr.Accordion("Settings", open=False):
        # compare_send's 9th input before each side had its own: True turns the documents on for
        # both sides (the page sends False; the per-side boxes are the 10th and 11th inputs).
        use_docs = gr.Checkbox(value=False, visible=False)
        system_prompt = gr.Textbox(label="System prompt", lines=2, placeholder="Optional; the same for both sides")
        with gr.Row():
            temperature = gr.Slider(
                0, 1.5, value=0.0, step=0.05, label="Temperature", info="0 = the most likely word (repeatable)"
            )
            max_new_tokens = gr.Slider(16, 1024, value=defaults.max_new_tokens, step=16, label="Max new tokens")
        with gr.Row():
            left_id = gr.Textbox(label="Left conversation id", max_lines=1, interactive=True)
            right_id = gr.Textbox(label="Right conversation id", max_lines=1, interactive=True)

    @shows_errors
    def send(
        text,
        left_name,
        right_name,
        left_conv,
        right_conv,
        system,
        temp,
        max_new,
        rag=False,
        left_rag=False,
        right_rag=False,
    ):
        text = (text or "").strip()
        if not text:
            raise gr.Error("Type a message first.")
        if not right_name:
            raise gr.Error("Pick a model for the right side (train an adapter in the Tune tab first).")
        left, right = service.send(
            text,
            left_model=left_name or BASE,
            right_model=right_name,
            left_conversation_id=(left_conv or "").strip() or None,
            right_conversation_id=(right_conv or "").strip() or None,
            system_prompt=system or "",
            options=GenerationOptions(temperature=float(temp), max_new_tokens=int(max_new)),
            left_rag=bool(rag or left_rag),
            right_rag=bool(rag or right_rag),
        )
        ids = (left.conversation_id, right.conversation_id)
        before = [_shown(chat.log.get(i).messages) for i in ids]
        names = (left_name or BASE, right_name)
        for partial in service.stream(left, right):
            shown = [with_pending_reply(h, n, p) if p else h for h, n, p in zip(before, names, partial)]
            yield shown[0], shown[1], *ids, "", "…"
        replies = service.wait(left, right)
        after = [_shown(chat.log.get(i).messages) for i in ids]
        yield after[0], after[1], *ids, "", " · ".join(reply_stats(r) for r in replies)

    def stop(left_conv, right_conv):
        stopped = service.stop((left_conv or "").strip(), (right_conv or "").strip())
        return "Stopping…" if stopped else "Nothing is running."

    def new_comparison():
        return [], [], "", "", "New comparison: type a message."

    def make_vote(choice):
        def vote(left_conv, right_conv):
            """A refused vote (no replies yet, a side still answering) records nothing and says why."""
            try:
                return vote_message(votes.vote(left_conv, right_conv, choice))
            except TailorError as exc:
                return f"⚠️ {exc}"

        return vote

    def list_models(left_value=None, right_value=None):
        """Fresh choices (adapters come and go). A side whose model still exists keeps it: its
        value is left out of the update, so a value set at the same moment (the Tune tab's
        "Compare in chat" switches to this tab, which runs this) is not undone by a stale one."""
        names = chat.models()
        left = gr.update(choices=names) if left_value in names else gr.update(choices=names, value=BASE)
        right = right_choices(names)
        if right_value in right:
            return left, gr.update(choices=right)
        return left, gr.update(choices=right, value=default_right(names, chat.default_model()))

    def on_model(left_name, right_name):
        """Another model on a side starts a new comparison: both sides must share one history."""
        return (
            gr.update(value=[], label=side_label(left_name)),
            gr.update(value=[], label=side_label(right_name)),
            "",
            "",
            "",
        )

    send_inputs = [
        message,
        left_model,
        right_model,
        left_id,
        right_id,
        system_prompt,
        temperature,
        max_new_tokens,
        use_docs,
        left_docs,
        right_docs,
    ]
    send_outputs = [left_chat, right_chat, left_id, right_id, message, status]
    send_btn.click(send, send_inputs, send_outputs, api_name="compare_send")
    message.submit(send, send_inputs, send_outputs, api_name="compare_send_on_enter")
    stop_btn.click(stop, [left_id, right_id], [status], api_name="compare_stop", queue=False)
    new_outputs = [left_chat, right_chat, left_id, right_id, status]
    new_btn.click(new_comparison, None, new_outputs, api_name="compare_new")
    for dropdown, name in ((left_model, "compare_left_model"), (right_model, "compare_right_model")):
        dropdown.change(on_model, [left_model, right_model], new_outputs, api_name=name)
    vote_handlers = {key: make_vote(key) for key in OPEN_CHOICES}
    for key, button in vote_buttons.items():
        button.click(vote_handlers[key], [left_id, right_id], [status], api_name=f"compare_vote_{key}")
    return ComparePanel(
        left_model=left_model,
        right_model=right_model,
        list_models=list_models,
        model_outputs=[left_model, right_model],
        send=send,
        stop=stop,
        new_comparison=new_comparison,
        vote=vote_handlers,
    )
