"""The Knowledge tab: upload documents (files or a folder), list, preview and delete them,
and search them with the dense, BM25 and fused scores side by side."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from retrieval.service import KnowledgeService

from .errors import shows_errors
from .knowledge_format import (
    DOCUMENT_COLUMNS,
    SEARCH_COLUMNS,
    SEARCH_DATATYPES,
    document_preview,
    document_rows,
    ingest_report,
    search_rows,
    status_line,
)
from .progress import on_bar
from .uploads import uploaded_paths


@dataclass
class KnowledgeTab:
    table: gr.Dataframe  # the documents
    picked: gr.Dropdown  # the document shown and deleted
    status: gr.Markdown  # documents, chunks, index kind, embedding model
    listing: Callable  # () -> (table rows, picked update, status): what `outputs` shows

    @property
    def outputs(self) -> list:
        return [self.table, self.picked, self.status]


def build_knowledge_tab(kb: KnowledgeService) -> KnowledgeTab:
    """Build the tab inside the current gr.Blocks."""
    with gr.Row():
        with gr.Column(scale=2):
            # No file_types filter: Gradio would refuse the whole upload for one .docx among
            # ten .md files; without it each unsupported file gets its own message and the
            # others still go in (the label says what is supported).
            files = gr.File(label="Add documents (.txt, .md, .html, .pdf)", file_count="multiple", type="filepath")
            with gr.Row():
                add_btn = gr.Button("Add files", variant="primary")
            with gr.Accordion("Add a whole folder", open=False):
                folder = gr.File(label="Folder", file_count="directory", type="filepath")
                add_folder_btn = gr.Button("Add folder")
            report = gr.Markdown("")
        with gr.Column(scale=3):
            status = gr.Markdown(_status(kb))
            table = gr.Dataframe(
                headers=DOCUMENT_COLUMNS,
                value=document_rows(kb.documents()),
                interactive=False,
                label="Documents",
                wrap=True,
            )
            with gr.Row():
                picked = gr.Dropdown(label="Document", choices=_names(kb), value=None, interactive=True, scale=3)
                refresh_btn = gr.Button("Refresh", size="sm", scale=1)
                delete_btn = gr.Button("Delete", variant="stop", size="sm", scale=1)
    preview = gr.Markdown("", label="Preview")
    gr.Markdown("### Search your documents")
    with gr.Row():
        query = gr.Textbox(label="Query", placeholder="e.g. how long is the frame warranty?", scale=5)
        k = gr.Slider(1, 20, value=5, step=1, label="Results", scale=1)
        mode = gr.Radio(
            ["hybrid", "dense", "bm25"],
            value="hybrid",
            label="Ranking",
            scale=2,
            info="hybrid = reciprocal rank fusion of dense and BM25",
        )
    search_btn = gr.Button("Search")
    results = gr.Dataframe(
        headers=SEARCH_COLUMNS, datatype=SEARCH_DATATYPES, interactive=False, wrap=True, label="Ranked chunks"
    )

    def listing():
        return (document_rows(kb.documents()), gr.update(choices=_names(kb)), _status(kb))

    def ingest(paths, progress):
        # Uploaded files keep their own names (Gradio stores each in a folder of its own), and
        # the document name is that file name, so re-uploading an edited file replaces it.
        results_ = kb.add_paths(paths, progress=on_bar(progress))
        return (ingest_report(results_), None, *listing())

    # Uploads are checked to be files this server received (a web request can name any
    # server path: ui/uploads.py) before the service sees them.
    def add(paths_in, progress=gr.Progress()):
        paths = uploaded_paths(paths_in)
        if not paths:
            raise gr.Error("Choose one or more files first.")
        return ingest(paths, progress)

    def add_folder(paths_in, progress=gr.Progress()):
        paths = [p for p in uploaded_paths(paths_in) if not Path(p).name.startswith(".")]
        if not paths:
            raise gr.Error("Choose a folder first.")
        return ingest(paths, progress)

    @shows_errors
    def show(name):
        if not name:
            return ""
        return document_preview(kb.document(name))

    @shows_errors
    def delete(name):
        if not name:
            raise gr.Error("Pick a document to delete.")
        info = kb.remove(name)
        rows, choices, stat = listing()
        return (
            rows,
            gr.update(choices=_names(kb), value=None),
            stat,
            f"Deleted **{info.name}** ({info.chunk_count} chunks).",
        )

    @shows_errors
    def search(q, k_, mode_):
        return search_rows(kb.search(q, int(k_), mode_))

    list_outputs = [table, picked, status]
    add_btn.click(add, [files], [report, files, *list_outputs], api_name="knowledge_add_files")
    add_folder_btn.click(add_folder, [folder], [report, folder, *list_outputs], api_name="knowledge_add_folder")
    refresh_btn.click(listing, None, list_outputs, api_name="knowledge_list")
    picked.change(show, [picked], [preview], api_name="knowledge_preview")
    delete_btn.click(delete, [picked], [table, picked, status, preview], api_name="knowledge_delete")
    search_btn.click(search, [query, k, mode], [results], api_name="knowledge_search")
    query.submit(search, [query, k, mode], [results], api_name="knowledge_search_on_enter")
    return KnowledgeTab(table=table, picked=picked, status=status, listing=listing)


def _names(kb: KnowledgeService) -> list[str]:
    return [d.name for d in kb.documents()]


def _status(kb: KnowledgeService) -> str:
    return status_line(kb.stats(), kb.last_check)
