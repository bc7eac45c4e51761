"""A one-click way for a new user to load the Lantern Bay Bikes demo (tuning pairs,
grounding examples and knowledge documents)."""

from __future__ import annotations

import gradio as gr

from assistant.errors import TailorError
from demo import load_demo


def build_demo_panel(workspace, curation, knowledge) -> dict:
    with gr.Accordion("New here? Load the Lantern Bay Bikes demo", open=False):
        gr.Markdown(
            "Loads 180+ tuning pairs in the shop's voice, grounding examples and 13 shop documents "
            "(prices, hours, policies). Then: **Tune → Train on current dataset**, chat with the new adapter, tick "
            "*Use my documents*, and compare everything in **Evaluate**."
        )
        button = gr.Button("Load the demo", variant="secondary")
        status = gr.Markdown("")

    def load(progress=gr.Progress()):
        try:
            result = load_demo(workspace, curation, knowledge, progress=lambda frac, msg: progress(frac, desc=msg))
        except TailorError as exc:
            raise gr.Error(str(exc)) from exc
        return result.summary().replace("\n", "  \n")

    button.click(load, None, [status], api_name="load_demo")
    return {"button": button, "status": status}
