"""The Tune tab's "Download GGUF (llama.cpp / Ollama)" panel: the picked adapter merged into the
base model as GGUF files, the LoRA-only GGUF, an Ollama Modelfile and README.txt
(`tuning.gguf_export.export_gguf`, the same as `tailor export gguf`), offered for download.

The files are written to `<workspace>/exports/<adapter>-gguf` (an earlier export there is
replaced) and offered through hard links in Gradio's private folder, so a merged model of
hundreds of megabytes is not copied again to be downloadable (a copy where links cannot be made)."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from assistant.models import ResolvedModel
from tuning.gguf_export import DEFAULT_QUANTS, QUANT_KINDS, GgufExportResult, export_gguf
from tuning.service import TuneService

from .errors import shows_errors
from .uploads import download_copy, upload_folder

_STAGE = re.compile(r"^\[(\d+)/(\d+)\]\s*(.*)$")
BUTTON_LABEL = "Download GGUF (llama.cpp / Ollama)"


def stage_progress(bar: Callable) -> Callable[[str], None]:
    """export_gguf's progress lines on a gr.Progress `bar`: "[i/n] ..." moves it to (i-1)/n, other
    lines (the converters' own) only change the text beside it."""
    done = [0.0]

    def progress(message: str) -> None:
        found = _STAGE.match(message)
        if found:
            step, total, message = int(found[1]), int(found[2]), found[3]
            done[0] = (step - 1) / total if total else 0.0
        bar(done[0], desc=message.strip())

    return progress


def _size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"


def result_markdown(name: str, result: GgufExportResult) -> str:
    """What was written for the adapter `name`, and how to run it."""
    rows = [f"**`{name}` as GGUF** ({result.bytes / 1e6:.0f} MB in {result.seconds:.0f} s), in `{result.path}`:"]
    rows += [f"- `{path.name}` · {_size(path)}" for path in result.outputs]
    tag = name.lower()
    rows.append(
        f"\nllama.cpp: `llama-cli -m {result.outputs[0].name} -cnv` · Ollama, in that folder: "
        f"`ollama create {tag} -f Modelfile` then `ollama run {tag}` (README.txt has the details)."
    )
    rows += [f"\n⚠️ {note}" for note in result.notes]
    return "\n".join(rows)


def _offer(path: Path) -> str:
    """`path` as a file Gradio serves without copying it: a hard link in a fresh private folder
    inside its upload folder (a copy there where the two are on different file systems)."""
    root = upload_folder()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder = Path(tempfile.mkdtemp(prefix="tailor-gguf-", dir=root))  # mode 0700
    try:
        os.link(path, folder / path.name)
    except OSError:
        os.rmdir(folder)
        return download_copy(path, prefix="tailor-gguf-")
    return str(folder / path.name)


def build_gguf_panel(service: TuneService, adapter_pick: gr.Dropdown) -> None:
    """The panel, wired to the adapter dropdown of the Tune tab (api_name "tune_export_gguf")."""
    with gr.Accordion(BUTTON_LABEL, open=False):
        gr.Markdown(
            "The picked adapter merged into the base model as GGUF files for llama.cpp and Ollama, plus the "
            "adapter alone as a GGUF LoRA (llama.cpp's `--lora`), an Ollama `Modelfile` (chat template, system "
            "prompt, stop tokens) and a README. Same as `tailor export gguf NAME`; a 135M model takes about a minute."
        )
        with gr.Row():
            quants = gr.CheckboxGroup(
                label="Merged model files",
                choices=list(QUANT_KINDS),
                value=list(DEFAULT_QUANTS),
                info="q8_0: closest to Tailor's answers · q4_k_m: smaller, what the Modelfile uses",
                scale=2,
            )
            system = gr.Textbox(label="System prompt for the Modelfile (optional)", lines=2, max_lines=4, scale=2)
            button = gr.Button(BUTTON_LABEL, variant="secondary", scale=1)
        files = gr.File(label="GGUF files", file_count="multiple", interactive=False)
        status = gr.Markdown("")

    @shows_errors
    def run(name, kinds, system_prompt, progress=gr.Progress()):
        if not name:
            raise gr.Error("Pick an adapter first (the Adapter list above).")
        base = ResolvedModel(service.base_model, Path(service.base_model_path), "folder")
        result = export_gguf(
            base,
            service.registry.catalog,
            name,
            service.workspace.exports_dir / f"{name}-gguf",
            quants=kinds or (),
            system_prompt=system_prompt or None,
            overwrite=True,  # the button means "make them now"; only an earlier GGUF export is replaced
            progress=stage_progress(progress),
        )
        return [_offer(p) for p in result.outputs], result_markdown(name, result)

    button.click(run, [adapter_pick, quants, system], [files, status], api_name="tune_export_gguf")
