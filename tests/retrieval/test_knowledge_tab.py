"""The Knowledge tab builds, names every event, and its handlers drive the real service."""

import gradio as gr

from ui.knowledge_tab import build_knowledge_tab

EXPECTED = {
    "knowledge_add_files",
    "knowledge_add_folder",
    "knowledge_list",
    "knowledge_preview",
    "knowledge_delete",
    "knowledge_search",
    "knowledge_search_on_enter",
}


def _fns(demo):
    fns = demo.fns.values() if isinstance(demo.fns, dict) else demo.fns
    return {f.api_name: f.fn for f in fns}


class _NoProgress:
    def __call__(self, *args, **kwargs):
        pass


def test_tab_events_and_handlers(kb, docs_dir):
    with gr.Blocks() as demo:
        build_knowledge_tab(kb)
    fns = _fns(demo)
    assert EXPECTED <= set(fns)
    assert all(name and isinstance(name, str) for name in fns)

    report, cleared, rows, choices, status = fns["knowledge_add_files"](
        [str(docs_dir / "fares.html"), str(docs_dir / "timetable.md")], progress=_NoProgress()
    )
    assert "2 of 2 file(s)" in report and cleared is None
    assert {r[0] for r in rows} == {"fares.html", "timetable.md"} and "2 documents" in status

    results = fns["knowledge_search"]("car single fare", 3, "hybrid")
    assert results[0][1] == "fares.html" and len(results[0]) == 7  # rank, doc, section, dense, bm25, fused, text

    preview = fns["knowledge_preview"]("fares.html")
    assert "Vehicle: Car; Single: 38 euro" in preview and "Chunk 1" in preview

    rows, _, status, message = fns["knowledge_delete"]("fares.html")
    assert [r[0] for r in rows] == ["timetable.md"] and "Deleted" in message
