"""Gradio-free helpers that turn knowledge data into what widgets show: document and search
tables, per-file upload reports, and the numbered citations of a chat reply (each with its
supporting sentences highlighted in the source: ui/evidence_format.py)."""

from __future__ import annotations

from collections.abc import Sequence

from .evidence_format import escape_markdown, evidence_snippet

DOCUMENT_COLUMNS = ["name", "title", "type", "size", "chunks", "added", "updated"]
SEARCH_COLUMNS = ["#", "document", "section", "dense", "bm25", "fused", "text"]
# "text" is Markdown (escaped, with the evidence highlighted when a passage carries some)
SEARCH_DATATYPES = ["number", "str", "str", "number", "number", "number", "markdown"]


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _when(ts: str) -> str:
    return ts[:16].replace("T", " ") if ts else ""


def document_rows(docs: Sequence) -> list[list]:
    return [
        [d.name, d.title, d.kind, human_size(d.size_bytes), d.chunk_count, _when(d.added_at), _when(d.updated_at)]
        for d in docs
    ]


def search_rows(passages: Sequence) -> list[list]:
    rows = []
    for rank, p in enumerate(passages, start=1):
        s = p.scores or {}
        rows.append(
            [
                rank,
                p.source,
                p.heading,
                round(s.get("dense", 0.0), 3),
                round(s.get("bm25", 0.0), 2),
                round(s.get("fused", 0.0), 4),
                evidence_snippet(p.text, getattr(p, "evidence", None), 400),
            ]
        )
    return rows


def ingest_report(results: Sequence) -> str:
    """Markdown: one line per file, failures first so they are not missed."""
    if not results:
        return "No files were given."
    icon = {"added": "✅", "replaced": "🔄", "unchanged": "⏸️", "duplicate": "⏸️", "error": "❌"}
    ordered = sorted(results, key=lambda r: r.ok)
    lines = [f"- {icon.get(r.status, '')} **{r.status}** · {r.message}" for r in ordered]
    ok = sum(r.ok for r in results)
    head = f"**{ok} of {len(results)} file(s) in the knowledge base**" + (
        f", {len(results) - ok} failed" if ok < len(results) else ""
    )
    return head + "\n\n" + "\n".join(lines)


def document_preview(doc) -> str:
    """Markdown preview of a document: metadata, its chunks with heading paths, then the text."""
    if doc is None:
        return ""
    out = [
        f"### {doc.title}",
        f"`{doc.name}` · {doc.kind} · {human_size(doc.size_bytes)} · {doc.chunk_count} chunks · "
        f"added {_when(doc.added_at)} · updated {_when(doc.updated_at)}",
        "",
    ]
    for c in doc.chunks:
        out.append(f"**Chunk {c.position + 1}** · {c.heading or doc.title} · {c.token_count} tokens · id {c.id}")
        out.append("> " + c.text.replace("\n", "\n> "))
        out.append("")
    return "\n".join(out)


def citations_markdown(retrieval: dict | None) -> str:
    """Numbered citations ([1] document — section: snippet) for a reply's stored retrieval
    (`{"abstained", "declined", "reason", "passages"}`); the closest passages when it abstained,
    with a note when the model then answered without sources. A passage's snippet shows its
    "evidence" sentences highlighted in the source around them; a passage without (stored
    before evidence existed, or not chosen) shows its first 200 characters. Document text and
    labels are escaped: they show as text, never as Markdown or HTML."""
    if not retrieval:
        return ""
    lines = []
    # Replies stored before the "answer" policy existed have no "declined": they all declined.
    if retrieval.get("abstained") and not retrieval.get("declined", True):
        # The model answered without sources: say so, so nobody mistakes it for a document fact.
        lines.append(
            "*No document supports an answer to this, so the reply above is the model's own, not from your documents.*"
        )
    if retrieval.get("passages"):
        lines.append("**Closest passages (not used to answer)**" if retrieval.get("abstained") else "**Sources**")
    else:
        return "\n\n".join(lines)
    for i, p in enumerate(retrieval["passages"], start=1):
        where = escape_markdown(str(p.get("source") or "?")) + (
            f" — {escape_markdown(str(p['heading']))}" if p.get("heading") else ""
        )
        shown = evidence_snippet(str(p.get("text") or ""), p.get("evidence"), 200)
        lines.append(f"[{i}] *{where}*: “{shown}”")
    return "\n\n".join(lines)


NO_DOCUMENTS = (
    "**No documents yet:** add files on the left (or a whole folder), or load the demo at the top of the page. "
    "They are listed here, *Search your documents* below finds passages in them, and the chat answers from them "
    "with *Use my documents*."
)


def status_line(stats: dict, check=None) -> str:
    """The knowledge base in one line: `stats` is KnowledgeService.stats(), `check` its last
    index check (mentioned when it had to repair the index). With no documents, what to do
    first comes before it."""
    repaired = f" · index repaired at start ({'; '.join(check.problems)})" if check and check.rebuilt else ""
    line = (
        f"**{stats['documents']} documents · {stats['chunks']} chunks** · index {stats['index_kind'] or 'empty'} · "
        f"embeddings {stats['embedding_model']} · answers need support ≥ {stats['min_score']:.2f}{repaired}"
    )
    return f"{NO_DOCUMENTS}\n\n{line}" if not stats["documents"] else line
