"""Gradio-free helpers that show a source passage the way a reader checks a citation: the
supporting sentence(s) that evidence selection chose (assistant/evidence.py: character spans
into the passage's text) highlighted with <mark> inside a window of the source around them,
with "…" where the source was cut. Without evidence, the passage's first characters, as
before.

Everything taken from a document is escaped first, so a document shows as text wherever the
result is rendered as Markdown (the chatbot, a Markdown column of a Dataframe): no HTML, no
links (inline, reference or auto-linked), no emphasis, no code, no LaTeX ($$ … $$ is rendered
by Gradio before Markdown), no list or heading at the start. Escaping uses numeric character
references, which Markdown shows as the character and never reads as syntax; the renderer's
own sanitizer (Gradio's default) stays on as a second fence."""

from __future__ import annotations

import re
from collections.abc import Sequence

HIGHLIGHT_OPEN, HIGHLIGHT_CLOSE = "<mark>", "</mark>"
ELLIPSIS = "…"
MIN_CONTEXT = 40  # characters of source shown at least either side of a highlighted sentence

# Characters that start Markdown/HTML syntax anywhere in a line. `_` only when it is not
# inside a word (snake_case file names stay readable); `!` and `(` only act after `[`.
_ALWAYS = str.maketrans({c: f"&#{ord(c)};" for c in "\\`*[]<>&$~|#@"})
_LONE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_SCHEME = re.compile(r":(?=//)")  # http://… would be auto-linked (GFM)
_WWW = re.compile(r"\b(www)\.", re.I)  # so would www.…
_LEADING_MARKER = re.compile(r"^(\s*)([-+=])")  # a list item or setext underline at the start
_LEADING_NUMBER = re.compile(r"^(\s*\d{1,9})([.)])")  # an ordered list item at the start
_SPACE = re.compile(r"\s+")
_WHITE = re.compile(r"\s")


def escape_markdown(text: str) -> str:
    """`text` as inert Markdown: rendered, it shows exactly these characters."""
    out = (text or "").translate(_ALWAYS)
    out = _LONE_UNDERSCORE.sub("&#95;", out)
    out = _SCHEME.sub("&#58;", out)
    out = _WWW.sub(r"\1&#46;", out)
    out = _LEADING_MARKER.sub(lambda m: m.group(1) + f"&#{ord(m.group(2))};", out)
    return _LEADING_NUMBER.sub(lambda m: m.group(1) + f"&#{ord(m.group(2))};", out)


def snippet(text: str, limit: int = 220) -> str:
    """`text` on one line, at most `limit` characters (an ellipsis marks a cut). Not escaped."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + ELLIPSIS


def _field(e, name: str):
    return e.get(name) if isinstance(e, dict) else getattr(e, name, None)


def evidence_spans(text: str, evidence: Sequence | None) -> list[tuple[int, int]]:
    """The usable (start, end) spans of `evidence` (Evidence objects or their stored dicts):
    inside `text`, not empty, and, where the span carries its text, matching it (a span
    that does not is dropped, never shown off by some characters). Sorted, overlapping or
    touching spans merged. Never raises on malformed stored data."""
    spans = []
    for e in evidence or ():
        start, end, said = _field(e, "start"), _field(e, "end"), _field(e, "text")
        if type(start) is not int or type(end) is not int or not 0 <= start < end <= len(text):
            continue
        if said is not None and text[start:end] != said:
            continue
        spans.append((start, end))
    merged: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _flat(piece: str) -> str:
    return escape_markdown(_SPACE.sub(" ", piece))


def _cut_end(text: str, a: int, b: int, longest: int) -> int:
    """Where to end a highlight of text[a:b] that may show at most `longest` characters: at
    the last space before the cut (or at the cut, in one long word)."""
    if b - a <= longest:
        return b
    space = _last_space(text, a + 1, a + longest)
    return space if space is not None else a + longest


def _first_space(text: str, lo: int, hi: int) -> int | None:
    m = _WHITE.search(text, lo, hi)
    return m.start() if m else None


def _last_space(text: str, lo: int, hi: int) -> int | None:
    for i in range(hi - 1, lo - 1, -1):
        if text[i].isspace():
            return i
    return None


def evidence_snippet(text: str, evidence: Sequence | None = None, limit: int = 200) -> str:
    """Markdown for `text` (a passage) with its evidence sentences highlighted inside a window
    of about `limit` characters of the source around them: at least MIN_CONTEXT characters
    either side of each sentence (cut at a word), "…" where source text is left out, before,
    between or after. A sentence longer than 2 × `limit` is shown up to there, then "…".
    Without usable evidence: the first `limit` characters, as `snippet` (escaped)."""
    text = text or ""
    spans = evidence_spans(text, evidence)
    if not spans:
        return escape_markdown(snippet(text, limit))
    longest = 2 * limit
    shown = sum(min(b - a, longest) for a, b in spans)
    context = max(MIN_CONTEXT, (limit - shown) // (2 * len(spans)))
    # Windows around each highlight; ones that meet are shown as one stretch of source (not
    # after a cut sentence: its stretch ends with the cut).
    groups: list[tuple[int, int, list[tuple[int, int, bool]]]] = []  # (lo, hi, [(a, b, cut)])
    prev_end = 0  # where the previous evidence span really ends (a cut one: past what shows)
    for a, b in spans:
        b_shown = _cut_end(text, a, b, longest)
        cut = b_shown < b
        lo, hi = max(prev_end, a - context), min(len(text), b_shown + context)
        prev_end = b
        if lo > 0 and not text[lo - 1].isspace():  # start at a word: after a space, if any
            space = _first_space(text, lo, a)
            lo = space + 1 if space is not None else a
        if cut:
            hi = b_shown  # a cut sentence is followed by "…", not by context
        elif hi < len(text) and not text[hi].isspace():  # end at a word: before a space
            space = _last_space(text, b, hi)
            hi = space if space is not None else b
        if groups and lo <= groups[-1][1] and not groups[-1][2][-1][2]:
            last_lo, last_hi, marks = groups[-1]
            groups[-1] = (last_lo, max(last_hi, hi), [*marks, (a, b_shown, cut)])
        else:
            groups.append((lo, hi, [(a, b_shown, cut)]))
    out = []
    before = 0  # where the source shown so far ends
    for lo, hi, marks in groups:
        pieces, pos = [], lo
        for a, b, _ in marks:
            pieces.append(_flat(text[pos:a]))
            pieces.append(HIGHLIGHT_OPEN + _flat(text[a:b]).strip() + HIGHLIGHT_CLOSE)
            pos = b
        pieces.append(_flat(text[pos:hi]))
        if text[before:lo].strip():
            out.append(ELLIPSIS)
        out.append("".join(pieces).strip())
        before = hi
    if text[before:].strip():
        out.append(ELLIPSIS)
    return " ".join(out)
