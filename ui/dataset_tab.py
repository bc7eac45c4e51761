"""The Dataset tab (search, filter, edit, add, delete/undo, bulk tag, import/export, cleaning,
splits, versions, and a preview of exactly what the trainer sees) and the curation controls
under the chat (thumbs up/down, save a reply, edit and save). Handlers read widgets, call
the tuning services and format the result."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from assistant.conversations import ConversationLog
from assistant.db import utcnow
from assistant.errors import TailorError, ValidationError
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
from tuning.examples import Example, ExampleFilter, make_example, preview_text
from tuning.importexport import export_examples, import_file
from tuning.splits import SplitConfig, assign_splits, get_config, parse_ratios, reassign_all, set_config

from .uploads import download_copy, uploaded_path

TABLE_HEADERS = ["id", "split", "status", "source", "label", "tags", "prompt", "answer", "provenance"]
PAGE = 200
ANY = "(any)"


# ---- formatting (plain functions) -------------------------------------------------------------
def _short(text: str, n: int = 120) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def provenance_text(ex: Example) -> str:
    p = ex.provenance or {}
    if not p.get("message_id"):
        return ex.source
    return (
        f"chat {p.get('conversation_id')} · message {p.get('message_id')} · {str(p.get('message_time', ''))[:19]}"
        f"{' · edited' if p.get('edited') else ''}"
    )


def table_rows(examples: list[Example]) -> list[list]:
    return [
        [
            ex.id,
            ex.split or "",
            ex.status,
            ex.source,
            ex.label or "",
            ", ".join(ex.tags),
            _short(ex.prompt),
            _short(ex.answer),
            provenance_text(ex),
        ]
        for ex in examples
    ]


def counts_text(store) -> str:
    c = store.counts_by_split()
    total = sum(c.values())
    excluded = store.count(ExampleFilter(status="excluded"))
    return f"**{total} active examples** · train {c['train']} · validation {c['validation']} · test {c['test']}" + (
        f" · {excluded} excluded" if excluded else ""
    )


def _opt(value):
    return None if value in (None, "", ANY) else value


def _fail(exc: Exception):
    raise gr.Error(str(exc)) from exc


def _download_copy(path: Path) -> str:
    """Gradio serves files from its upload folder, which ui/uploads.py keeps in the workspace
    (tmp/gradio, 0700): the copy goes there, 0600; the export itself stays in workspace/exports."""
    return download_copy(path, prefix="tailor-export-")


# ---- the Dataset tab --------------------------------------------------------------------------
def build_dataset_tab(curation: Curation, tokenizer=None) -> dict:
    store, versions = curation.store, curation.versions
    with gr.Row():
        search = gr.Textbox(label="Search", placeholder="words in the prompt or answer", scale=3)
        f_tag = gr.Dropdown(label="Tag", choices=[ANY], value=ANY, scale=1, allow_custom_value=True)
        f_source = gr.Dropdown(label="Source", choices=[ANY, "chat", "import", "manual"], value=ANY, scale=1)
        f_split = gr.Dropdown(label="Split", choices=[ANY, "train", "validation", "test"], value=ANY, scale=1)
        f_label = gr.Dropdown(label="Label", choices=[ANY], value=ANY, scale=1, allow_custom_value=True)
        f_status = gr.Dropdown(label="Status", choices=[ANY, "active", "excluded"], value=ANY, scale=1)
        refresh_btn = gr.Button("Search", variant="primary", scale=1)
    counts = gr.Markdown("")
    table = gr.Dataframe(
        headers=TABLE_HEADERS,
        value=[],
        interactive=False,
        wrap=True,
        max_height=420,
        label="Examples (click a row to edit it)",
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
            answer = gr.Textbox(label="Answer (what the model should say)", lines=5)
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
            export_format = gr.Radio(["messages", "prompt-completion", "hf"], value="messages", label="Export format")
            export_rendered = gr.Checkbox(label="Inline passages (as the trainer sees them)", value=False)
            export_btn = gr.Button("Export active examples")
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
            headers=["version", "created", "train", "validation", "test", "hash", "note"],
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
    filters = [search, f_tag, f_source, f_split, f_label, f_status]

    def _filter(q, tag, source, split, lab, stat) -> ExampleFilter:
        return ExampleFilter(
            query=q or "", tag=_opt(tag), source=_opt(source), split=_opt(split), label=_opt(lab), status=_opt(stat)
        )

    def refresh(q, tag, source, split, lab, stat):
        flt = _filter(q, tag, source, split, lab, stat)
        facets = store.facets()
        shown = store.list(flt, limit=PAGE)
        total = store.count(flt)
        more = f" · showing {len(shown)} of {total} matches" if total > len(shown) else f" · {total} match(es)"
        return (
            table_rows(shown),
            counts_text(store) + more,
            gr.update(choices=[ANY] + facets["tag"]),
            gr.update(choices=[ANY] + facets["label"]),
        )

    refresh_outputs = [table, counts, f_tag, f_label]

    def _editor(ex: Example | None):
        if ex is None:
            return "", "", "", "", "", "", "active", "", "", ""
        ctx = f"{len(ex.context)} earlier turn(s) of context" if ex.context else ""
        if ex.passages:
            ctx += (
                (" · " if ctx else "")
                + f"{len(ex.passages)} passage(s): "
                + ", ".join(p.get("source", "") for p in ex.passages)
            )
        prov = f"Provenance: {provenance_text(ex)} · created {ex.created_at[:19]} · split {ex.split}"
        text = preview_text(ex, tokenizer) if tokenizer is not None else "(no tokenizer loaded)"
        return (
            str(ex.id),
            ex.system,
            ctx,
            ex.prompt,
            ex.answer,
            ex.label or "",
            ", ".join(ex.tags),
            ex.status,
            prov,
            text,
        )

    editor_outputs = [ex_id, system, context_md, prompt, answer, label, tags, status, provenance, preview]

    def open_example(example_id):
        try:
            return _editor(store.get(int(example_id)))
        except (TailorError, ValueError) as exc:
            _fail(exc)

    def on_select(evt: gr.SelectData):
        row = evt.row_value or []
        if not row:
            return gr.update()
        return open_example(row[0])

    def save(example_id, sys_text, user_text, answer_text, lab, tag_text, stat):
        try:
            if (example_id or "").strip():
                old = store.get(int(example_id))
                messages = [dict(m) for m in old.messages]
                if messages[0]["role"] == "system":
                    messages = messages[1:]
                messages[-2]["content"], messages[-1]["content"] = user_text or "", answer_text or ""
                if (sys_text or "").strip():
                    messages = [{"role": "system", "content": sys_text.strip()}] + messages
                if not (user_text or "").strip() or not (answer_text or "").strip():
                    raise ValidationError("the user message and the answer must not be empty")
                ex = store.update(old.id, messages=messages, label=lab or None, tags=tag_text or [], status=stat)
                msg = f"Saved example {ex.id}."
            else:
                if not (user_text or "").strip() or not (answer_text or "").strip():
                    raise ValidationError("write a user message and an answer first")
                messages = ([{"role": "system", "content": sys_text.strip()}] if (sys_text or "").strip() else []) + [
                    {"role": "user", "content": user_text},
                    {"role": "assistant", "content": answer_text},
                ]
                ex = store.add(
                    make_example(messages, label=lab, tags=tag_text, status=stat or "active", source="manual")
                )
                msg = f"Added example {ex.id} ({ex.split})."
        except (TailorError, ValueError) as exc:
            _fail(exc)
        return (*_editor(ex), msg)

    def new_example():
        return (*_editor(None), "New example: fill in the user message and the answer, then Save.")

    def delete(example_id):
        if not (example_id or "").strip():
            raise gr.Error("Pick an example first (click a row).")
        try:
            store.delete([int(example_id)])
        except (TailorError, ValueError) as exc:
            _fail(exc)
        return (*_editor(None), f"Deleted example {example_id}. “Undo last change” brings it back.")

    def undo():
        try:
            recent = store.undo_batches(1)
            n = store.undo()
        except TailorError as exc:
            _fail(exc)
        what = "removed" if recent and recent[0].get("kind") == "import" else "restored"
        return f"Undid “{recent[0]['description']}” ({n} example(s) {what})."

    def bulk(tag, remove, q, t, source, split, lab, stat):
        ids = [ex.id for ex in store.list(_filter(q, t, source, split, lab, stat))]
        try:
            if not ids:
                raise ValidationError("no examples are shown")
            if remove:
                store.bulk_tag(ids, remove=[tag])
            else:
                store.bulk_tag(ids, add=[tag])
        except TailorError as exc:
            _fail(exc)
        return f"{'Removed' if remove else 'Added'} tag “{tag}” on {len(ids)} example(s). Undo is available."

    def do_import(file, extra_tags, progress=gr.Progress()):
        if not file:
            raise gr.Error("Choose a file to import first.")
        # Only a file this server received as an upload (a web request can name any path).
        path = Path(uploaded_path(file))
        try:
            result = import_file(
                store,
                path,
                tags=extra_tags,
                progress=lambda done, total: progress((done, total), desc="Importing", unit="bytes"),
            )
        except Exception as exc:
            op = getattr(exc, "partial_import", None)
            if op is not None:
                raise gr.Error(
                    f"{exc}. The import is PARTIAL: {op['examples']} examples from {op['file_name']} "
                    "landed before it stopped. “Undo last change” removes exactly those; importing the "
                    "file again adds only the rest."
                ) from exc
            if isinstance(exc, TailorError):
                _fail(exc)
            raise
        text = result.summary()
        if result.imported:
            text += "\n“Undo last change” removes this import."
        return text.replace("\n", "\n\n")

    def do_export(fmt, rendered, progress=gr.Progress()):
        examples = store.list(ExampleFilter(status="active"))
        if not examples:
            raise gr.Error("There are no active examples to export.")
        stamp = utcnow()[:19].replace(":", "").replace("-", "")
        name = f"examples-{stamp}" + ("" if fmt == "hf" else ".jsonl")
        try:
            dest = export_examples(
                examples,
                curation.workspace.exports_dir / name,
                fmt,
                rendered=rendered,
                progress=lambda d, t: progress((d, t), desc="Exporting"),
            )
        except TailorError as exc:
            _fail(exc)
        return _download_copy(dest)

    def run_report(kinds, thr, max_len, progress=gr.Progress()):
        embedder = None
        if "near_duplicate" in (kinds or []):
            from assistant.embeddings import get_embedder

            embedder = get_embedder()
        try:
            report = build_report(
                store,
                embedder=embedder,
                count_tokens=token_counter(tokenizer) if tokenizer is not None else None,
                max_tokens=int(max_len or DEFAULT_MAX_TOKENS),
                near_threshold=float(thr),
                checks=kinds or [],
                progress=lambda msg, frac: progress(frac, desc=msg),
            )
        except TailorError as exc:
            _fail(exc)
        lines = [report.summary(), ""]
        for f in report.findings:
            if f.kind == "near_duplicate":
                continue
            keep = f" — the fix keeps {f.keep}" if f.keep is not None else ""
            extra = ""
            if f.kind == "pii":
                extra = "<br>redacted: " + " / ".join(_short(t, 200) for t in f.preview["after"])
            lines.append(f"- **{f.kind}** examples {', '.join(map(str, f.example_ids))}: {f.detail}{keep}{extra}")
        near = [
            [
                round(f.score, 3),
                f.preview["left"]["id"],
                f"Q: {_short(f.preview['left']['prompt'], 200)}\nA: {_short(f.preview['left']['answer'], 300)}",
                f.preview["right"]["id"],
                f"Q: {_short(f.preview['right']['prompt'], 200)}\nA: {_short(f.preview['right']['answer'], 300)}",
            ]
            for f in report.of("near_duplicate")
        ]
        return "\n".join(lines), near

    def fix(kinds, thr, max_len):
        embedder = None
        if "near_duplicate" in (kinds or []):
            from assistant.embeddings import get_embedder

            embedder = get_embedder()
        try:
            report = build_report(
                store,
                embedder=embedder,
                count_tokens=token_counter(tokenizer) if tokenizer is not None else None,
                max_tokens=int(max_len or DEFAULT_MAX_TOKENS),
                near_threshold=float(thr),
                checks=kinds or [],
            )
            result = apply_fixes(store, report, kinds=kinds or [])
        except TailorError as exc:
            _fail(exc)
        return result.summary() + (" Use “Undo last change” above to put it all back." if result.batch else "")

    def keep(keep_, drop_):
        try:
            if keep_ is None or drop_ is None:
                raise ValidationError("give the example to keep and the one to delete")
            keep_one(store, int(keep_), [int(drop_)])
        except TailorError as exc:
            _fail(exc)
        return f"Kept {int(keep_)}, deleted {int(drop_)} (undoable)."

    def do_split(ratio_text, re_all):
        try:
            config = set_config(store, SplitConfig(parse_ratios(ratio_text), get_config(store).seed))
            added = reassign_all(store, config) if re_all else assign_splits(store, config)
        except TailorError as exc:
            _fail(exc)
        return f"Newly assigned: {added}. {counts_text(store)}"

    def version_rows():
        return [
            [
                v.id,
                v.created_at[:19],
                v.counts.get("train", 0),
                v.counts.get("validation", 0),
                v.counts.get("test", 0),
                v.content_hash[:12],
                v.note,
            ]
            for v in reversed(versions.list())
        ]

    def snapshot(note_text):
        try:
            before = versions.latest()
            v = versions.snapshot(note_text or "")
        except TailorError as exc:
            _fail(exc)
        same = before is not None and before.id == v.id
        return version_rows(), (f"Nothing changed since v{v.id}." if same else f"Created v{v.id}: {v.counts}.")

    def diff(a, b):
        try:
            return versions.diff(int(a), int(b))
        except (TailorError, TypeError, ValueError) as exc:
            _fail(exc)

    def on_open(*flt):
        return (*refresh(*flt), version_rows())

    # ---- events (each with its own api_name, for gradio_client scripts) ----
    refresh_btn.click(refresh, filters, refresh_outputs, api_name="dataset_search")
    search.submit(refresh, filters, refresh_outputs, api_name="dataset_search_enter")
    for i, f in enumerate([f_tag, f_source, f_split, f_label, f_status]):
        f.input(refresh, filters, refresh_outputs, api_name=f"dataset_filter_{i}")
    table.select(on_select, None, editor_outputs, api_name="dataset_select_row")
    open_hidden = gr.Button(visible=False)
    open_hidden.click(open_example, [ex_id], editor_outputs, api_name="dataset_open_example")
    save_btn.click(
        save,
        [ex_id, system, prompt, answer, label, tags, status],
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

    return {
        "table": table,
        "counts": counts,
        "filters": filters,
        "refresh": refresh,
        "on_open": on_open,
        "refresh_outputs": refresh_outputs,
        "versions_table": versions_table,
    }


# ---- curation controls under the chat ---------------------------------------------------------
def _assistant_messages(log: ConversationLog, conversation_id: str):
    return [m for m in log.get(conversation_id).messages if m.role == "assistant"]


def attach_curation(chat: dict, curation: Curation, log: ConversationLog) -> dict:
    """Thumbs up/down, "save as example" and "edit and save" for the chat tab's replies.
    Call inside the chat tab, after build_chat_tab; `chat` is what that returned."""
    store = curation.store
    with gr.Accordion("Curate a reply: rate it, or save it (edited) as a training example", open=False):
        with gr.Row():
            reply = gr.Dropdown(label="Assistant reply", choices=[], value=None, scale=4, allow_custom_value=True)
            load_btn = gr.Button("Load replies", size="sm", scale=1)
        with gr.Row():
            up_btn = gr.Button("👍 Good", scale=1)
            down_btn = gr.Button("👎 Bad", scale=1)
            reason = gr.Textbox(label="Reason (optional)", max_lines=1, scale=4)
        edited = gr.Textbox(label="Ideal answer (edit the reply into what it should have said)", lines=4)
        with gr.Row():
            cur_tags = gr.Textbox(label="Tags", placeholder="comma,separated", max_lines=1)
            cur_label = gr.Textbox(label="Label", max_lines=1)
        with gr.Row():
            save_btn = gr.Button("Save reply as example")
            save_edit_btn = gr.Button("Save edited reply", variant="primary")
        cur_status = gr.Markdown("")

    def load(conv_id):
        conv_id = (conv_id or "").strip()
        if not conv_id:
            return gr.update(choices=[], value=None), "", ""
        try:
            replies = _assistant_messages(log, conv_id)
        except TailorError:
            return gr.update(choices=[], value=None), "", ""
        if not replies:
            return gr.update(choices=[], value=None), "", ""
        choices = [(f"#{m.id} {_short(m.content, 70)}", m.id) for m in replies]
        last = replies[-1]
        return gr.update(choices=choices, value=last.id), last.content, _reply_state(last)

    def _reply_state(m) -> str:
        saved = store.find_by_message(m.id)
        rating = {1: "👍", -1: "👎"}.get(m.rating, "not rated")
        return f"Reply #{m.id}: {rating}" + (
            f" · saved as example {', '.join(str(e.id) for e in saved)}" if saved else ""
        )

    def pick(msg_id):
        if msg_id in (None, ""):
            return "", ""
        try:
            m = log.message(int(msg_id))
        except (TailorError, ValueError) as exc:
            _fail(exc)
        return m.content, _reply_state(m)

    def rate(msg_id, why, rating):
        if msg_id in (None, ""):
            raise gr.Error("Pick a reply first.")
        try:
            log.set_feedback(int(msg_id), rating, why or "")
            return _reply_state(log.message(int(msg_id)))
        except (TailorError, ValueError) as exc:
            _fail(exc)

    def like(conv_id, evt: gr.LikeData):
        """The chatbot's own thumbs: its index counts user and assistant messages."""
        conv_id = (conv_id or "").strip()
        if not conv_id:
            raise gr.Error("This chat has not been saved yet.")
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        shown = [m for m in log.get(conv_id).messages if m.role in ("user", "assistant")]
        if not 0 <= int(index) < len(shown) or shown[int(index)].role != "assistant":
            raise gr.Error("Only assistant replies can be rated.")
        m = shown[int(index)]
        rating = None if evt.liked is None or evt.liked == "" else (1 if evt.liked is True else -1)
        log.set_feedback(m.id, rating)
        return _reply_state(log.message(m.id))

    def save(msg_id, text, tag_text, lab, use_edit):
        if msg_id in (None, ""):
            raise gr.Error("Pick a reply first (press “Load replies” after chatting).")
        try:
            ex = store.from_message(
                log, int(msg_id), edited_text=text if use_edit else None, label=lab or None, tags=tag_text or None
            )
        except (TailorError, ValueError) as exc:
            _fail(exc)
        kind = "edited reply" if ex.edited else "reply"
        return (
            f"Saved the {kind} as example {ex.id} ({ex.split}) · from conversation {ex.conversation_id}, "
            f"message {ex.message_id}. It is in the Dataset tab."
        )

    conv = chat["conversation_id"]
    load_btn.click(load, [conv], [reply, edited, cur_status], api_name="curate_load_replies")
    # The chat's status line changes when a reply has been stored (and when a conversation
    # opens), so the reply list follows the chat without touching the chat tab's own events.
    chat["status"].change(load, [conv], [reply, edited, cur_status], api_name="curate_follow_chat")
    reply.input(pick, [reply], [edited, cur_status], api_name="curate_pick_reply")
    up_btn.click(lambda m, r: rate(m, r, 1), [reply, reason], [cur_status], api_name="curate_thumbs_up")
    down_btn.click(lambda m, r: rate(m, r, -1), [reply, reason], [cur_status], api_name="curate_thumbs_down")
    chat["chatbot"].like(like, [conv], [cur_status], api_name="curate_like")
    save_btn.click(
        lambda m, t, tg, lb: save(m, t, tg, lb, False),
        [reply, edited, cur_tags, cur_label],
        [cur_status],
        api_name="curate_save_reply",
    )
    save_edit_btn.click(
        lambda m, t, tg, lb: save(m, t, tg, lb, True),
        [reply, edited, cur_tags, cur_label],
        [cur_status],
        api_name="curate_save_edited",
    )
    return {"reply": reply, "edited": edited, "status": cur_status}
