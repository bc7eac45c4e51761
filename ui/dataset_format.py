"""Gradio-free helpers that turn dataset data into what the Dataset tab and the curation panel
show: the example table, the editor's fields, counts, the cleaning report and the versions."""

from __future__ import annotations

from collections.abc import Sequence

from tuning.cleaning import CleaningReport
from tuning.example import Example, preview_text

TABLE_HEADERS = ["id", "split", "status", "source", "label", "tags", "prompt", "answer", "provenance", "rejected"]
ANY = "(any)"  # a filter that is not set


def short(text: str, n: int = 120) -> str:
    """`text` on one line, at most `n` characters (an ellipsis marks a cut)."""
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def opt(value):
    """A filter's value, or None when it is not set."""
    return None if value in (None, "", ANY) else value


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
            short(ex.prompt),
            short(ex.answer),
            provenance_text(ex),
            short(ex.rejected) if ex.rejected is not None else "",
        ]
        for ex in examples
    ]


def counts_text(by_split: dict[str, int], excluded: int, pairs: int = 0) -> str:
    """`by_split`: active examples per split (preference pairs included, `pairs` of them);
    `excluded`: examples left out of training."""
    total = sum(by_split.values())
    return (
        f"**{total} active examples** · train {by_split['train']} · validation {by_split['validation']} · "
        f"test {by_split['test']}"
        + (f" · of them {pairs} preference pair(s)" if pairs else "")
        + (f" · {excluded} excluded" if excluded else "")
    )


NO_EXAMPLES = (
    "**No examples yet.** Keep a good reply from the Chat tab as a training example, write one in the editor "
    "below and press **Save**, import a file under *Import and export*, or load the demo at the top of the "
    "page. They are listed here, and the Tune tab trains on them."
)


def listing_text(by_split: dict[str, int], excluded: int, pairs: int, shown: int, total: int) -> str:
    """The line above the example table: the counts and how many of the matches are shown
    (`shown` of `total`); on an empty dataset, what to do first instead."""
    if not sum(by_split.values()) and not excluded:
        return NO_EXAMPLES
    more = f" · showing {shown} of {total} matches" if total > shown else f" · {total} match(es)"
    return counts_text(by_split, excluded, pairs) + more


def editor_values(ex: Example | None, tokenizer=None) -> tuple:
    """The editor's fields for `ex` (empty for a new example): id, system prompt, context note,
    user message, answer, label, tags, status, provenance, the trainer's view of it, and a
    pair's rejected reply ("" for an example)."""
    if ex is None:
        return "", "", "", "", "", "", "active", "", "", "", ""
    ctx = f"{len(ex.context)} earlier turn(s) of context" if ex.context else ""
    if ex.passages:
        ctx += (
            (" · " if ctx else "")
            + f"{len(ex.passages)} passage(s): "
            + ", ".join(p.get("source", "") for p in ex.passages)
        )
    prov = f"Provenance: {provenance_text(ex)} · created {ex.created_at[:19]} · split {ex.split}"
    if ex.is_pair:
        source = (ex.provenance or {}).get("pair_from")
        prov = (
            "Preference pair"
            + (f" (from {'an edit' if source == 'edit' else 'ratings'})" if source else "")
            + ". "
            + prov
        )
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
        ex.rejected or "",
    )


def cleaning_markdown(report: CleaningReport) -> str:
    """The report's summary and one line per finding (near-duplicates go to `near_rows`)."""
    lines = [report.summary(), ""]
    for f in report.findings:
        if f.kind == "near_duplicate":
            continue
        keep = f" — the fix keeps {f.keep}" if f.keep is not None else ""
        extra = ""
        if f.kind == "pii":
            extra = "<br>redacted: " + " / ".join(short(t, 200) for t in f.preview["after"])
        lines.append(f"- **{f.kind}** examples {', '.join(map(str, f.example_ids))}: {f.detail}{keep}{extra}")
    return "\n".join(lines)


def near_rows(report: CleaningReport) -> list[list]:
    """Near-duplicate pairs side by side: similarity, left id, left, right id, right."""
    return [
        [
            round(f.score, 3),
            f.preview["left"]["id"],
            f"Q: {short(f.preview['left']['prompt'], 200)}\nA: {short(f.preview['left']['answer'], 300)}",
            f.preview["right"]["id"],
            f"Q: {short(f.preview['right']['prompt'], 200)}\nA: {short(f.preview['right']['answer'], 300)}",
        ]
        for f in report.of("near_duplicate")
    ]


def version_rows(versions: Sequence) -> list[list]:
    """Dataset versions, newest first: id, created, train/validation/test counts, hash, note."""
    return [
        [
            v.id,
            v.created_at[:19],
            v.counts.get("train", 0),
            v.counts.get("validation", 0),
            v.counts.get("test", 0),
            sum(v.pairs.values()),
            v.content_hash[:12],
            v.note,
        ]
        for v in reversed(list(versions))
    ]
