"""Build the whole Gradio app from its tabs."""

from __future__ import annotations

import gradio as gr

from assistant.runtime import Core
from demo import demo_exclusions
from evals.activity import Activity
from retrieval import open_knowledge
from tuning import open_curation
from tuning.service import open_tuning

from .accounts_gate import install_accounts
from .activity_tab import build_activity_tab
from .chat_curation import attach_inline_curation, saved_note
from .chat_tab import CHAT_JS, build_chat_sidebar, build_chat_tab
from .compare_panel import COMPARE_TAB_ID, build_compare_panel
from .curation_panel import attach_curation
from .dataset_tab import build_dataset_tab
from .demo_panel import build_demo_panel
from .eval_tab import build_eval_tab_for_core
from .knowledge_tab import build_knowledge_tab
from .tune_tab import build_tune_tab
from .uploads import enforce_upload_check, use_workspace_folder

# The sidebar's conversation list reads as a list (not as radio buttons), with the open chat
# highlighted.
PAGE_CSS = """
#tailor-conversation-list .wrap { flex-direction: column; gap: 2px; }
#tailor-conversation-list label { width: 100%; border: none; background: transparent; padding: 6px 8px; }
#tailor-conversation-list label.selected { background: var(--color-accent-soft); font-weight: 600; }
#tailor-conversation-list input[type=radio] { display: none; }
"""


# Passed to gr.mount_gradio_app (Gradio 6 takes the page's css and js there, not in Blocks).
PAGE_JS = CHAT_JS


def _find_from_address(request: gr.Request):
    """`?find=#12` on the page's address (the chat toast's link): open the Dataset tab searching it."""
    find = (request.query_params.get("find") or "").strip() if request is not None else ""
    if not find:
        return gr.update(), gr.update()
    return gr.Tabs(selected="dataset"), find


def build_ui(core: Core) -> gr.Blocks:
    # Uploads and downloads live in <workspace>/tmp/gradio (0700), not in the system temp
    # folder where every local user could read them; before any component is created, since
    # each one reads the folder when it is made.
    use_workspace_folder(core.workspace.root)
    # The chat's "Use my documents" answers through this service (fast to open: the embedding
    # model loads on the first search; the index is checked against the database here).
    knowledge = open_knowledge(core.workspace)
    core.chat.retriever = knowledge
    curation = open_curation(core.workspace)
    # Training jobs run in their own processes; this thread starts queued ones and marks jobs
    # whose process vanished (after a restart: interrupted, resumable).
    # A tune mixes in grounding examples made from the documents' chunks, never from the
    # demo's evaluation questions (tuning/grounding_mix.py).
    tuning = open_tuning(
        core.workspace,
        core.model.name,
        core.model.path,
        serving=True,
        chunks=knowledge.store.all_chunks,
        exclusions=lambda: demo_exclusions(core.workspace),
    )
    tuning.jobs.start_background()
    with gr.Blocks(title="Tailor") as demo:
        sidebar = build_chat_sidebar(core.chat)  # the conversation list, beside every tab
        gr.Markdown(f"## Tailor · {core.engine.name} · {core.engine.describe()}")
        build_demo_panel(core.workspace, curation, knowledge)
        with gr.Tabs() as tabs:
            with gr.Tab("Chat", id="chat"):
                chat = build_chat_tab(core.chat, sidebar, note=saved_note(curation))
                inline = attach_inline_curation(chat, curation, core.conversations)
                attach_curation(chat, curation, core.conversations)
            with gr.Tab("Compare", id=COMPARE_TAB_ID) as compare_tab_obj:
                compare = build_compare_panel(core.chat)
            with gr.Tab("Knowledge", id="knowledge") as knowledge_tab_obj:
                knowledge_tab = build_knowledge_tab(knowledge)
            with gr.Tab("Dataset", id="dataset") as dataset_tab:
                dataset = build_dataset_tab(curation, tokenizer=core.engine.tokenizer)
            with gr.Tab("Tune", id="tune") as tune_tab_obj:
                tune = build_tune_tab(
                    tuning,
                    chat_models=core.chat.models,
                    chat_model_dropdown=chat.model,
                    chat_default=core.chat.default_model,
                    compare_model_dropdown=compare.right_model,
                    tabs=tabs,
                )
            with gr.Tab("Evaluate", id="evaluate") as eval_tab_obj:
                evaluate = build_eval_tab_for_core(core, curation)
            with gr.Tab("Activity", id="activity"):
                activity = build_activity_tab(Activity(core.workspace.db))
        # Refresh lists whenever a page opens: adapters or conversations may have been added
        # by another browser, the CLI or a training job since the app started.
        demo.load(chat.list_models, None, [chat.model], api_name="page_load_models")
        # The dataset changes from the chat (saved replies), the CLI and other browsers.
        dataset_tab.select(
            dataset.on_open,
            dataset.filters,
            dataset.refresh_outputs + [dataset.versions_table],
            api_name="dataset_on_open",
        )
        demo.load(
            chat.list_conversations,
            [chat.search, chat.conversation_id],
            [chat.conversations],
            api_name="page_load_conversations",
        )
        # Opening a chat from the sidebar while another tab is on show brings the Chat tab forward.
        for i, event in enumerate(chat.opened):
            event.then(lambda: gr.Tabs(selected="chat"), None, [tabs], api_name=f"show_chat_tab_{i}")
        # What an edit saved, in the Dataset tab: the button under the chat, or the toast's
        # link (`?find=#12+#13` on the page's address, opened in a new browser tab).
        dataset_search = dataset.filters[0]
        inline.show_saved.click(
            lambda query: (gr.Tabs(selected="dataset"), query),
            [inline.saved_query],
            [tabs, dataset_search],
            api_name="chat_show_saved",
        ).then(dataset.refresh, dataset.filters, dataset.refresh_outputs, api_name="chat_show_saved_refresh")
        demo.load(_find_from_address, None, [tabs, dataset_search], api_name="page_load_find").then(
            dataset.refresh, dataset.filters, dataset.refresh_outputs, api_name="page_load_find_refresh"
        )
        demo.load(knowledge_tab.listing, None, knowledge_tab.outputs, api_name="page_load_knowledge")
        demo.load(tune.refresh, tune.inputs, tune.outputs, api_name="page_load_tune")
        # Documents and datasets also change from the demo button, the CLI and other browsers:
        # refresh a tab's lists whenever it is opened.
        knowledge_tab_obj.select(knowledge_tab.listing, None, knowledge_tab.outputs, api_name="knowledge_on_open")
        tune_tab_obj.select(tune.refresh, tune.inputs, tune.outputs, api_name="tune_on_open")
        # A job may have published (or renamed) an adapter since the page opened: offer it.
        compare_tab_obj.select(
            compare.list_models, compare.model_outputs, compare.model_outputs, api_name="compare_on_open"
        )
        demo.load(evaluate.list_runs, None, [evaluate.runs], api_name="page_load_eval_runs")
        demo.load(activity.refresh, activity.inputs, activity.outputs, api_name="page_load_activity")
        demo.load(evaluate.refresh_models, None, [evaluate.arms], api_name="page_load_eval_models")
        # A job may have published an adapter since the page opened: offer it as an arm.
        eval_tab_obj.select(evaluate.refresh_models, None, [evaluate.arms], api_name="eval_on_open")
    # With accounts, every event acts for its signed-in user, and only admins delete or
    # restore what the team shares (ui/accounts_gate.py).
    install_accounts(demo, core.conversations.accounts)
    # Mounted in FastAPI, Gradio would skip its own "was this file uploaded?" check and read
    # any server path a request names: turn it on (the handlers check again, ui/uploads.py).
    return enforce_upload_check(demo)
