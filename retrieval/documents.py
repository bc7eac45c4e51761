"""Loading documents: .txt, .md, .html and .pdf into a title and a list of structural blocks.

A block is a paragraph, a list, a table or a code block, together with the path of headings
it sits under. Chunking (chunking.py) packs blocks into chunks without crossing a heading,
so each chunk keeps its document, heading path and position.

Every failure a user can act on (too big, unsupported type, not UTF-8, encrypted or broken
PDF, no text at all) raises `DocumentError` with a message naming the file; the service
reports it for that file and goes on with the others."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from assistant.errors import ValidationError
from assistant.settings import env_number

SUPPORTED = {
    ".txt": "txt",
    ".text": "txt",
    ".md": "md",
    ".markdown": "md",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}
# Per-file limit. Big enough for a manual or a catalogue, small enough that one upload cannot
# fill the disk or keep the embedder busy for an hour (MiniLM embeds ~15 passages/s per core).
DEFAULT_MAX_BYTES = 20 * 1024 * 1024


def max_document_bytes() -> int:
    """The per-file limit in bytes: TAILOR_MAX_DOCUMENT_MB megabytes, or DEFAULT_MAX_BYTES."""
    try:
        mb = env_number("TAILOR_MAX_DOCUMENT_MB", DEFAULT_MAX_BYTES / (1024 * 1024))
    except ValueError as exc:  # the message names the variable and the value
        raise ValidationError(str(exc)) from None
    return int(mb * 1024 * 1024)


class DocumentError(ValidationError):
    """This one file cannot be added; the message says why and names the file."""


@dataclass
class Block:
    headings: tuple[str, ...]  # e.g. ("Opening Hours", "Late Lantern Thursdays")
    text: str


@dataclass
class ParsedDocument:
    title: str
    kind: str  # txt, md, html, pdf
    blocks: list[Block] = field(default_factory=list)

    @property
    def text(self) -> str:
        """Plain text for the preview: headings as lines of their own, then the blocks."""
        out: list[str] = []
        last: tuple[str, ...] = ()
        for b in self.blocks:
            if b.headings != last:
                common = 0
                while common < min(len(last), len(b.headings)) and last[common] == b.headings[common]:
                    common += 1
                for depth in range(common, len(b.headings)):
                    out.append("#" * (depth + 1) + " " + b.headings[depth])
                last = b.headings
            out.append(b.text)
        return "\n\n".join(out)


def kind_of(name: str) -> str:
    ext = Path(name).suffix.lower()
    if ext not in SUPPORTED:
        supported = ", ".join(sorted({e for e in SUPPORTED if e in (".txt", ".md", ".html", ".pdf")}))
        raise DocumentError(f"{name}: unsupported file type {ext or '(none)'} (supported: {supported})")
    return SUPPORTED[ext]


def parse_document(name: str, data: bytes) -> ParsedDocument:
    """Parse the bytes of a file called `name`. Raises DocumentError for anything unusable."""
    kind = kind_of(name)
    limit = max_document_bytes()
    if len(data) > limit:
        raise DocumentError(
            f"{name}: {len(data) / 1e6:.1f} MB is over the {limit / 1e6:.0f} MB limit per "
            "document (TAILOR_MAX_DOCUMENT_MB); split it or raise the limit"
        )
    if not data.strip():
        raise DocumentError(f"{name}: the file is empty")
    stem = Path(name).stem.replace("_", " ").replace("-", " ").strip() or name
    if kind == "pdf":
        doc = _parse_pdf(name, data, stem)
    else:
        text = decode_text(name, data)
        if kind == "md":
            doc = _parse_markdown(text, stem)
        elif kind == "html":
            doc = _parse_html(text, stem)
        else:
            doc = _parse_plain(text, stem)
    doc.blocks = [b for b in doc.blocks if b.text.strip()]
    if not doc.blocks:
        raise DocumentError(f"{name}: no text found in the file")
    return doc


def decode_text(name: str, data: bytes) -> str:
    """UTF-8 (with or without a BOM) or UTF-16 with a BOM. Anything else is refused rather
    than guessed: a wrong guess would silently index mojibake the user never sees."""
    if data.startswith(b"\xff\xfe") or data.startswith(b"\xfe\xff"):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise DocumentError(f"{name}: broken UTF-16 text ({exc.reason})") from exc
    if b"\x00" in data[:8192]:
        raise DocumentError(f"{name}: looks like a binary file, not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(
            f"{name}: not valid UTF-8 text (byte {exc.start}); save it as UTF-8 and add it again"
        ) from exc
    return text.replace("\r\n", "\n").replace("\r", "\n")


# ---- shared text clean-up ---------------------------------------------------------------------

_LEADER = re.compile(r"\s*\.{4,}\s*")  # "Harbour Check ........ EUR 45" price-list leaders
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_EMPH = re.compile(r"(\*\*|__)(.+?)\1")
_MD_CODE = re.compile(r"`([^`]+)`")


def _clean_line(line: str) -> str:
    line = _LEADER.sub(" ... ", line)
    return re.sub(r"[ \t]+", " ", line).strip()


def _clean_md_inline(text: str) -> str:
    text = _MD_LINK.sub(r"\1", text)
    text = _MD_EMPH.sub(r"\2", text)
    return _MD_CODE.sub(r"\1", text)


def _table_rows(rows: list[list[str]]) -> str:
    """A table as one line per row, "Header: value; Header: value", which both the embedder
    and a small chat model read far better than pipes and dashes."""
    rows = [[c.strip() for c in r] for r in rows if any(c.strip() for c in r)]
    if not rows:
        return ""
    header, body = rows[0], rows[1:]
    if not body:
        return "; ".join(header)
    lines = []
    for r in body:
        cells = [f"{h}: {v}" if h else v for h, v in zip(header + [""] * len(r), r) if v]
        lines.append("; ".join(cells))
    return "\n".join(lines)


# ---- markdown ---------------------------------------------------------------------------------

_ATX = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _parse_markdown(text: str, stem: str) -> ParsedDocument:
    headings: list[str] = []
    blocks: list[Block] = []
    title = ""
    para: list[str] = []
    table: list[list[str]] = []

    def flush():
        if para:
            blocks.append(Block(tuple(headings), _clean_md_inline("\n".join(para))))
            para.clear()
        if table:
            blocks.append(Block(tuple(headings), _clean_md_inline(_table_rows(table))))
            table.clear()

    def set_heading(level: int, name: str):
        nonlocal title
        if level == 1 and not title:
            title = name
        del headings[level - 1 :]
        headings.extend([""] * (level - 1 - len(headings)))
        headings.append(name)

    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        i += 1
        if line.strip().startswith(("```", "~~~")):
            flush()
            code = []
            while i < len(lines) and not lines[i].strip().startswith(("```", "~~~")):
                code.append(lines[i])
                i += 1
            i += 1  # the closing fence
            blocks.append(Block(tuple(headings), "\n".join(code)))
            continue
        m = _ATX.match(line)
        if m:
            flush()
            set_heading(len(m.group(1)), _clean_md_inline(m.group(2)))
            continue
        # setext heading: a text line underlined with === or ---
        if (
            not para
            and not table
            and line.strip()
            and not line.lstrip().startswith(("-", "*", "|", ">"))
            and re.fullmatch(r"\s*(=+|-+)\s*", nxt)
        ):
            set_heading(1 if nxt.strip()[0] == "=" else 2, _clean_md_inline(line.strip()))
            i += 1
            continue
        if line.lstrip().startswith("|"):
            if para:
                blocks.append(Block(tuple(headings), _clean_md_inline("\n".join(para))))
                para.clear()
            cells = line.strip().strip("|").split("|")
            if not all(re.fullmatch(r"\s*:?-{2,}:?\s*", c) for c in cells):  # skip |---|---|
                table.append(cells)
            continue
        if table or not line.strip():
            flush()
        if line.strip() and not re.fullmatch(r"\s*([-*_]\s*){3,}", line):  # not a horizontal rule
            para.append(_clean_line(line))
    flush()
    blocks = [Block(tuple(h for h in b.headings if h), b.text) for b in blocks]
    return ParsedDocument(title or stem, "md", blocks)


# ---- plain text -------------------------------------------------------------------------------


def _parse_plain(text: str, stem: str) -> ParsedDocument:
    """Paragraphs split on blank lines; a line underlined with === or --- is a heading (the
    usual plain-text convention), === for top level and --- below it."""
    lines = text.split("\n")
    headings: list[str] = []
    blocks: list[Block] = []
    title = ""
    para: list[str] = []

    def flush():
        if para:
            blocks.append(Block(tuple(headings), _unwrap(para)))
            para.clear()

    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and re.fullmatch(r"\s*(={3,}|-{3,})\s*", nxt) and not para:
            level = 1 if nxt.strip()[0] == "=" else 2
            name = _clean_line(line)
            if level == 1 and not title:
                title = name
                headings = [name]
            elif level == 1:
                headings = [name]
            else:
                headings = headings[:1] + [name] if title else [name]
            i += 2
            continue
        if not line.strip():
            flush()
        else:
            para.append(_clean_line(line))
        i += 1
    flush()
    return ParsedDocument(title or stem, "txt", blocks)


_ITEM = re.compile(r"^(?:[-*•]\s|\d+[.)]\s|[A-Za-z][.)]\s)")


def _unwrap(lines: list[str]) -> str:
    """Join hard-wrapped lines back into sentences; list items and price lines (with leaders)
    keep their own line."""
    out: list[str] = []
    for line in lines:
        continues = (
            bool(out)
            and not _ITEM.match(line)
            and " ... " not in line
            and (" ... " not in out[-1] or line[:1].islower())
        )
        if continues:
            out[-1] += " " + line
        else:
            out.append(line)
    return "\n".join(out)


# ---- HTML -------------------------------------------------------------------------------------

_SKIP_TAGS = {"script", "style", "head", "noscript", "template", "svg", "nav", "footer", "form", "button"}
_TEXT_TAGS = {"p", "pre", "blockquote", "dt", "dd", "figcaption", "address", "summary", "caption"}
_HEADINGS = {f"h{i}": i for i in range(1, 7)}


def _parse_html(text: str, stem: str) -> ParsedDocument:
    from bs4 import BeautifulSoup, NavigableString, Tag

    soup = BeautifulSoup(text, "html.parser")
    page_title = soup.title.get_text(" ", strip=True) if soup.title else ""
    headings: list[str] = []
    blocks: list[Block] = []
    title = ""

    def words(node) -> str:
        return re.sub(r"\s+", " ", node.get_text(" ", strip=True)).strip()

    def emit(t: str):
        t = "\n".join(_clean_line(x) for x in t.split("\n") if x.strip())
        if t:
            blocks.append(Block(tuple(h for h in headings if h), t))

    def walk(node):
        nonlocal title
        loose: list[str] = []  # text directly inside a div/section/body
        for child in node.children:
            if isinstance(child, NavigableString):
                if child.__class__.__name__ in ("Comment", "Doctype", "Declaration", "ProcessingInstruction"):
                    continue
                if str(child).strip():
                    loose.append(str(child).strip())
                continue
            if not isinstance(child, Tag):
                continue
            name = child.name.lower()
            if name in _SKIP_TAGS:
                continue
            if name in ("br",):
                continue
            if name in ("span", "a", "strong", "em", "b", "i", "code", "small", "mark", "abbr", "time", "sup", "sub"):
                loose.append(words(child))
                continue
            if loose:
                emit(" ".join(loose))
                loose = []
            if name in _HEADINGS:
                level = _HEADINGS[name]
                label = words(child)
                if level == 1 and not title:
                    title = label
                del headings[level - 1 :]
                headings.extend([""] * (level - 1 - len(headings)))
                headings.append(label)
            elif name == "table":
                rows = [[words(c) for c in tr.find_all(["th", "td"])] for tr in child.find_all("tr")]
                caption = child.find("caption")
                body = _table_rows(rows)
                emit((words(caption) + "\n" if caption else "") + body)
            elif name in ("ul", "ol"):
                items = [words(li) for li in child.find_all("li", recursive=False)] or [words(child)]
                emit("\n".join(f"- {it}" for it in items if it))
            elif name in _TEXT_TAGS:
                emit(child.get_text() if name == "pre" else words(child))
            else:  # div, section, article, main, body, li outside a list...
                walk(child)
        if loose:
            emit(" ".join(loose))

    walk(soup.body or soup)
    if not title:
        title = page_title.split(" – ")[0].split(" | ")[0].strip() or stem
    return ParsedDocument(title, "html", blocks)


# ---- PDF --------------------------------------------------------------------------------------


def _parse_pdf(name: str, data: bytes, stem: str) -> ParsedDocument:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            # An empty user password opens many "protected" PDFs (printing/copy restrictions only).
            try:
                opened: int = reader.decrypt("")  # a PasswordType (an IntEnum); 0 means not opened
            except Exception:  # noqa: BLE001 - unsupported cipher, missing crypto library
                opened = 0
            if not opened:
                raise DocumentError(
                    f"{name}: the PDF is encrypted (password-protected); remove the password and add it again"
                )
        pages = list(reader.pages)
        meta_title = ""
        try:
            meta_title = (reader.metadata.title or "").strip() if reader.metadata else ""
        except Exception:  # noqa: BLE001 - broken metadata is no reason to refuse the text
            meta_title = ""
        blocks: list[Block] = []
        for number, page in enumerate(pages, start=1):
            text = (page.extract_text() or "").replace("\r\n", "\n")
            for para in re.split(r"\n\s*\n", text):
                para = "\n".join(_clean_line(x) for x in para.split("\n") if x.strip())
                if para:
                    blocks.append(Block((f"page {number}",), para))
    except DocumentError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise DocumentError(f"{name}: could not be read as a PDF ({exc})") from exc
    except Exception as exc:
        raise DocumentError(f"{name}: could not be read as a PDF ({exc.__class__.__name__}: {exc})") from exc
    if not blocks:
        raise DocumentError(f"{name}: the PDF has no extractable text (a scan? run OCR on it first)")
    return ParsedDocument(meta_title or stem, "pdf", blocks)
