"""The Dataset tab: search, filter, edit, add, delete/undo, bulk tag, import/export, cleaning,
splits, versions, and a preview of exactly what the trainer sees. Handlers read widgets, call
the tuning services and format the result (ui/dataset_format.py). The curation controls under
the chat are ui/curation_panel.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from assistant.db import utcnow
from assistant.errors import ValidationError
from assistant.progress import Progress, no_progress
from tuning.cleaning import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_NEAR_THRESHOLD,
    KINDS,
    apply_fixes,
    build_report,
    keep_one,
    token_counter,
)
from tuning.curation import Curation
from tuning.dataset_export import export_examples
from tuning.dataset_import import import_file
from tuning.editing import save_from_editor
from tuning.example_table import ExampleFilter
from tuning.splits import SplitConfig, assign_splits, get_config, parse_ratios, reassign_all, set_config

from .dataset_format import (
    ANY,
    TABLE_HEADERS,
    cleaning_markdown,
    counts_text,
    editor_values,
    listing_text,
    near_rows,
    opt,
    table_rows,
    version_rows,
)
from .errors import shows_errors
from .progress import on_bar
from .uploads import download_copy, uploaded_path

PAGE = 200  # examples shown at once


@dataclass
class DatasetTab:
    table: gr.Dataframe
    counts: gr.Markdown
    versions_table: gr.Dataframe
    filters: list  # search text, tag, source, split, label, status
    refresh_outputs: list  # table, counts, tag and label choices
    refresh: Callable  # (*filters) -> the values of `refresh_outputs`
    on_open: Callable  # (*filters) -> refresh_outputs + versions_table: the tab was opened


def _download_copy(path: Path) -> str:
    """Gradio serves files from its upload folder, which ui/uploads.py keeps in the workspace
    (tmp/gradio, 0700): the copy goes there, 0600; the export itself stays in workspace/exports."""
    return download_copy(path, prefix="tailor-export-")


# ---- the Dataset tab --------------------------------------------------------------------------
def build_dataset_tab(curation: Curation, tokenizer=None) -> DatasetTab:
    store, versions = curation.store, curation.versions
    with gr.Row():
        search = gr.Textbox(label="Search", placeholder="words in the prompt or answer", scale=3)
        f_tag = gr.Dropdown(label="Tag", choices=[ANY], value=ANY, scale=1, allow_custom_value=True)
        f_source = gr.Dropdown(label="Source", choices=[ANY, "chat", "import", "manual"], value=ANY, scale=1)
        f_split = gr.Dropdown(label="Split", choices=[ANY, "train", "validation", "test"], value=ANY, scale=1)
        f_label = gr.Dropdown(label="Label", choices=[ANY], value=ANY, scale=1, allow_custom_value=True)
        f_status = gr.Dropdown(label="Status", choices=[ANY, "active", "excluded"], value=ANY, scale=1)
        f_kind = gr.Dropdown(
            label="Kind", choices=[ANY, ("examples", "example"), ("preference pairs", "pair")], value=ANY, scale=1
        )
        refresh_btn = gr.Button("Search", variant="primary", scale=1)
    counts = gr.Markdown("")
    table = gr.Dataframe(
        headers=TABLE_HEADERS,
        value=[],
        interactive=False,
        wrap=True,
        max_height=420,
        label="Examples and preference pairs (click a row to edit it)",
    )
    with gr.Row():
        bulk_tag = gr.Textbox(label="Tag", placeholder="a tag for every example shown", scale=3)
        bulk_add_btn = gr.Button("Tag all shown", scale=1)
        bulk_remove_btn = gr.Button("Untag all shown", scale=1)
    with gr.Row():
        with gr.Column(scale=3):
            ex_id = gr.Textbox(label="Example id", interactive=False, placeholder="new example", max_lines=1)
            system = gr.Textbox(label="System prompt", lines=1)
            context_md = gr.Markdown("")
            prompt = gr.Textbox(label="User message", lines=3)
            answer = gr.Textbox(label="Answer (what the model should say; a pair's chosen reply)", lines=5)
            rejected = gr.Textbox(
                label="Rejected reply (preference pairs only: the reply the answer is preferred to; "
                "empty for an ordinary example)",
                lines=3,
            )
            with gr.Row():
                label = gr.Textbox(label="Label", max_lines=1)
                tags = gr.Textbox(label="Tags", placeholder="comma,separated", max_lines=1)
                status = gr.Dropdown(label="Status", choices=["active", "excluded"], value="active")
            provenance = gr.Markdown("")
            with gr.Row():
                save_btn = gr.Button("Save", variant="primary")
                new_btn = gr.Button("New example")
                delete_btn = gr.Button("Delete", variant="stop")
                undo_btn = gr.Button("Undo last change")
            edit_status = gr.Markdown("")
        with gr.Column(scale=2):
            preview = gr.Code(
                label="Exactly what the trainer sees (chat template applied)",
                language=None,
                interactive=False,
                lines=18,
            )

    with gr.Accordion("Import and export", open=False):
        with gr.Row():
            upload = gr.File(label="JSONL, CSV or parquet", file_types=[".jsonl", ".json", ".csv", ".tsv", ".parquet"])
            with gr.Column():
                import_tags = gr.Textbox(label="Tags for imported examples", max_lines=1)
                import_btn = gr.Button("Import", variant="primary")
        import_result = gr.Markdown("")
        with gr.Row():
            export_format = gr.Radio(
                ["messages", "prompt-completion", "hf", "preference"],
                value="messages",
                label="Export format (preference: TRL's prompt/chosen/rejected, the pairs only)",
            )
            export_rendered = gr.Checkbox(label="Inline passages (as the trainer sees them)", value=False)
            export_btn = gr.Button("Export active examples (or pairs)")
        export_file = gr.File(label="Download", interactive=False)

    with gr.Accordion("Cleaning report", open=False):
        with gr.Row():
            checks = gr.CheckboxGroup(list(KINDS), value=list(KINDS), label="Checks")
            threshold = gr.Slider(0.8, 1.0, value=DEFAULT_NEAR_THRESHOLD, step=0.005, label="Near-duplicate similarity")
            max_tokens = gr.Number(value=DEFAULT_MAX_TOKENS, precision=0, label="Training max length (tokens)")
        clean_btn = gr.Button("Run cleaning report", variant="primary")
        report_md = gr.Markdown("")
        near_table = gr.Dataframe(
            headers=["similarity", "left id", "left", "right id", "right"],
            value=[],
            interactive=False,
            wrap=True,
            label="Near-duplicates side by side",
        )
        with gr.Row():
            keep_id = gr.Number(label="Keep example", precision=0)
            drop_id = gr.Number(label="Delete example", precision=0)
            keep_btn = gr.Button("Keep one, delete the other")
        with gr.Row():
            fix_kinds = gr.CheckboxGroup(list(KINDS), value=list(KINDS), label="Fixes to apply")
            fix_btn = gr.Button("Apply fixes", variant="stop")
        fix_md = gr.Markdown("")

    with gr.Accordion("Splits and versions", open=False):
        with gr.Row():
            ratios = gr.Textbox(label="Train, validation, test", value="80,10,10", max_lines=1)
            reassign = gr.Checkbox(label="Reassign every example (changes the test split!)", value=False)
            split_btn = gr.Button("Assign splits")
        split_md = gr.Markdown("")
        with gr.Row():
            note = gr.Textbox(label="Note", max_lines=1, scale=3)
            snapshot_btn = gr.Button("Snapshot a version", variant="primary", scale=1)
        versions_table = gr.Dataframe(
            headers=["version", "created", "train", "validation", "test", "pairs", "hash", "note"],
            value=[],
            interactive=False,
            label="Dataset versions",
        )
        with gr.Row():
            diff_a = gr.Number(label="From version", precision=0)
            diff_b = gr.Number(label="To version", precision=0)
            diff_btn = gr.Button("Compare")
        diff_json = gr.JSON(label="Added / removed / changed example ids")

    # ---- handlers ----
    # the kind filter comes last, so scripts written before pairs existed keep their positions
    filters = [search, f_tag, f_source, f_split, f_label, f_status, f_kind]

    def _filter(q, tag, source, split, lab, stat, kind=None) -> ExampleFilter:
        return ExampleFilter(
            query=q or "",
            tag=opt(tag),
            source=opt(source),
            split=opt(split),
            label=opt(lab),
            status=opt(stat),
            kind=opt(kind),
        )

    def _count_args() -> tuple:
        return (
            store.counts_by_split(),
            store.count(ExampleFilter(status="excluded")),
            store.count(ExampleFilter(status="active", kind="pair")),
        )

    def _counts() -> str:
        return counts_text(*_count_args())

    def refresh(q, tag, source, split, lab, stat, kind=None):
        flt = _filter(q, tag, source, split, lab, stat, kind)
        facets = store.facets()
        shown = store.list(flt, limit=PAGE)
        return (
            table_rows(shown),
            listing_text(*_count_args(), len(shown), store.count(flt)),
            gr.update(choices=[ANY] + facets["tag"]),
            gr.update(choices=[ANY] + facets["label"]),
        )

    refresh_outputs = [table, counts, f_tag, f_label]

    def _editor(ex):
        return editor_values(ex, tokenizer)

    editor_outputs = [ex_id, system, context_md, prompt, answer, label, tags, status, provenance, preview, rejected]

    @shows_errors(also=(ValueError,))
    def open_example(example_id):
        return _editor(store.get(int(example_id)))

    def on_select(evt: gr.SelectData):
        row = evt.row_value or []
        if not row:
            return gr.update()
        return open_example(row[0])

    @shows_errors(also=(ValueError,))
    def save(example_id, sys_text, user_text, answer_text, lab, tag_text, stat, rejected_text=None):
        ex, added = save_from_editor(
            store,
            example_id,
            system=sys_text,
            user=user_text,
            answer=answer_text,
            label=lab,
            tags=tag_text,
            status=stat,
            rejected=rejected_text,
        )
        what = "preference pair" if ex.is_pair else "example"
        msg = f"Added {what} {ex.id} ({ex.split})." if added else f"Saved {what} {ex.id}."
        return (*_editor(ex), msg)

    def new_example():
        return (*_editor(None), "New example: fill in the user message and the answer, then Save.")

    @shows_errors(also=(ValueError,))
    def delete(example_id):
        if not (example_id or "").strip():
            raise gr.Error("Pick an example first (click a row).")
        store.delete([int(example_id)])
        return (*_editor(None), f"Deleted example {example_id}. “Undo last change” brings it back.")

    @shows_errors
    def undo():
        recent = store.undo_batches(1)
        n = store.undo()
        what = "removed" if recent and recent[0].get("kind") == "import" else "restored"
        return f"Undid “{recent[0]['description']}” ({n} example(s) {what})."

    @shows_errors
    def bulk(tag, remove, q, t, source, split, lab, stat, kind=None):
        ids = [ex.id for ex in store.list(_filter(q, t, source, split, lab, stat, kind))]
        if not ids:
            raise ValidationError("no examples are shown")
        if remove:
            store.bulk_tag(ids, remove=[tag])
        else:
            store.bulk_tag(ids, add=[tag])
        return f"{'Removed' if remove else 'Added'} tag “{tag}” on {len(ids)} example(s). Undo is available."

    @shows_errors
    def do_import(file, extra_tags, progress=gr.Progress()):
        if not file:
            raise gr.Error("Choose a file to import first.")
        # Only a file this server received as an upload (a web request can name any path).
        path = Path(uploaded_path(file))
        try:
            result = import_file(
                store, path, tags=extra_tags, progress=on_bar(progress, desc="Importing", unit="bytes")
            )
        except Exception as exc:
            op = getattr(exc, "partial_import", None)
            if op is None:
                raise
            raise gr.Error(
                f"{exc}. The import is PARTIAL: {op['examples']} examples from {op['file_name']} "
                "landed before it stopped. “Undo last change” removes exactly those; importing the "
                "file again adds only the rest."
            ) from exc
        text = result.summary()
        if result.imported:
            text += "\n“Undo last change” removes this import."
        return text.replace("\n", "\n\n")

    @shows_errors
    def do_export(fmt, rendered, progress=gr.Progress()):
        pairs = fmt == "preference"
        examples = store.list(ExampleFilter(status="active", kind="pair" if pairs else "example"))
        if not examples:
            raise gr.Error(f"There are no active {'preference pairs' if pairs else 'examples'} to export.")
        stamp = utcnow()[:19].replace(":", "").replace("-", "")
        name = f"{'pairs' if pairs else 'examples'}-{stamp}" + ("" if fmt == "hf" else ".jsonl")
        dest = export_examples(
            examples,
            curation.workspace.exports_dir / name,
            fmt,
            rendered=rendered,
            progress=on_bar(progress, desc="Exporting", unit="steps"),
        )
        return _download_copy(dest)

    def _cleaning_report(kinds, thr, max_len, progress: Progress = no_progress):
        """The report with the tab's settings; the near-duplicate check needs the embedding
        model, the length check the chat model's tokenizer (skipped without one)."""
        embedder = None
        if "near_duplicate" in (kinds or []):
            from assistant.embeddings import get_embedder

            embedder = get_embedder()
        return build_report(
            store,
            embedder=embedder,
            count_tokens=token_counter(tokenizer) if tokenizer is not None else None,
            max_tokens=int(max_len or DEFAULT_MAX_TOKENS),
            near_threshold=float(thr),
            checks=kinds or [],
            progress=progress,
        )

    @shows_errors
    def run_report(kinds, thr, max_len, progress=gr.Progress()):
        report = _cleaning_report(kinds, thr, max_len, on_bar(progress))
        return cleaning_markdown(report), near_rows(report)

    @shows_errors
    def fix(kinds, thr, max_len):
        result = apply_fixes(store, _cleaning_report(kinds, thr, max_len), kinds=kinds or [])
        return result.summary() + (" Use “Undo last change” above to put it all back." if result.batch else "")

    @shows_errors
    def keep(keep_, drop_):
        if keep_ is None or drop_ is None:
            raise ValidationError("give the example to keep and the one to delete")
        keep_one(store, int(keep_), [int(drop_)])
        return f"Kept {int(keep_)}, deleted {int(drop_)} (undoable)."

    @shows_errors
    def do_split(ratio_text, re_all):
        config = set_config(store, SplitConfig(parse_ratios(ratio_text), get_config(store).seed))
        added = reassign_all(store, config) if re_all else assign_splits(store, config)
        return f"Newly assigned: {added}. {_counts()}"

    @shows_errors
    def snapshot(note_text):
        before = versions.latest()
        v = versions.snapshot(note_text or "")
        same = before is not None and before.id == v.id
        return version_rows(versions.list()), (
            f"Nothing changed since v{v.id}."
            if same
            else f"Created v{v.id}: {v.counts}" + (f", preference pairs {v.pairs}." if any(v.pairs.values()) else ".")
        )

    @shows_errors(also=(TypeError, ValueError))
    def diff(a, b):
        return versions.diff(int(a), int(b))

    def on_open(*flt):
        return (*refresh(*flt), version_rows(versions.list()))

    # ---- events (each with its own api_name, for gradio_client scripts) ----
    refresh_btn.click(refresh, filters, refresh_outputs, api_name="dataset_search")
    search.submit(refresh, filters, refresh_outputs, api_name="dataset_search_enter")
    for i, f in enumerate([f_tag, f_source, f_split, f_label, f_status, f_kind]):
        f.input(refresh, filters, refresh_outputs, api_name=f"dataset_filter_{i}")
    table.select(on_select, None, editor_outputs, api_name="dataset_select_row")
    open_hidden = gr.Button(visible=False)
    open_hidden.click(open_example, [ex_id], editor_outputs, api_name="dataset_open_example")
    save_btn.click(
        save,
        [ex_id, system, prompt, answer, label, tags, status, rejected],
        editor_outputs + [edit_status],
        api_name="dataset_save",
    ).then(refresh, filters, refresh_outputs, api_name="dataset_after_save")
    new_btn.click(new_example, None, editor_outputs + [edit_status], api_name="dataset_new")
    delete_btn.click(delete, [ex_id], editor_outputs + [edit_status], api_name="dataset_delete").then(
        refresh, filters, refresh_outputs, api_name="dataset_after_delete"
    )
    undo_btn.click(undo, None, [edit_status], api_name="dataset_undo").then(
        refresh, filters, refresh_outputs, api_name="dataset_after_undo"
    )
    bulk_add_btn.click(
        lambda t, *f: bulk(t, False, *f), [bulk_tag, *filters], [edit_status], api_name="dataset_bulk_tag"
    ).then(refresh, filters, refresh_outputs, api_name="dataset_after_bulk_tag")
    bulk_remove_btn.click(
        lambda t, *f: bulk(t, True, *f), [bulk_tag, *filters], [edit_status], api_name="dataset_bulk_untag"
    ).then(refresh, filters, refresh_outputs, api_name="dataset_after_bulk_untag")
    import_btn.click(do_import, [upload, import_tags], [import_result], api_name="dataset_import").then(
        refresh, filters, refresh_outputs, api_name="dataset_after_import"
    )
    export_btn.click(do_export, [export_format, export_rendered], [export_file], api_name="dataset_export")
    clean_btn.click(
        run_report, [checks, threshold, max_tokens], [report_md, near_table], api_name="dataset_clean_report"
    )
    fix_btn.click(fix, [fix_kinds, threshold, max_tokens], [fix_md], api_name="dataset_clean_fix").then(
        refresh, filters, refresh_outputs, api_name="dataset_after_fix"
    )
    keep_btn.click(keep, [keep_id, drop_id], [fix_md], api_name="dataset_keep_one").then(
        refresh, filters, refresh_outputs, api_name="dataset_after_keep_one"
    )
    split_btn.click(do_split, [ratios, reassign], [split_md], api_name="dataset_assign_splits").then(
        refresh, filters, refresh_outputs, api_name="dataset_after_splits"
    )
    snapshot_btn.click(snapshot, [note], [versions_table, split_md], api_name="dataset_snapshot")
    diff_btn.click(diff, [diff_a, diff_b], [diff_json], api_name="dataset_diff")

    return DatasetTab(
        table=table,
        counts=counts,
        versions_table=versions_table,
        filters=filters,
        refresh_outputs=refresh_outputs,
        refresh=refresh,
        on_open=on_open,
    )
