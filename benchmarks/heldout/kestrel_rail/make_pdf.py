"""Write docs/passenger_charter.pdf from charter_source.txt, with the standard library only.

The source is plain text, one paragraph per line:

    # Title              -> 16 pt Helvetica-Bold (also the PDF's /Title)
    ## Section           -> 13 pt Helvetica-Bold
    ### Subsection       -> 11 pt Helvetica-Bold
    - item               -> bullet, wrapped with a hanging indent
    (blank line)         -> paragraph break
    anything else        -> 10 pt Helvetica body text, wrapped at about 90 characters

The output is an uncompressed PDF 1.4 with the two standard Type 1 fonts (WinAnsiEncoding, so
£, – and ’ come out right), one content stream per A4 page, a "page N of M" footer and a correct
cross-reference table. Run it again whenever the source changes:

    python3 make_pdf.py [source.txt] [output.pdf]
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE / "charter_source.txt"
DEFAULT_OUTPUT = HERE / "docs" / "passenger_charter.pdf"

PAGE_W, PAGE_H = 595, 842  # A4 in points
MARGIN_L, MARGIN_TOP, MARGIN_BOTTOM = 56, 64, 72
WRAP = 90  # characters per body line
STYLES: dict[str, tuple[str, float, float, float]] = {  # kind: (font, size, leading, space before)
    "h1": ("F2", 16, 22, 0),
    "h2": ("F2", 13, 18, 10),
    "h3": ("F2", 11, 15, 6),
    "body": ("F1", 10, 13.5, 0),
}
FOOTER = "Kestrel Valley Railway - Passenger Charter - page {n} of {total}"


def pdf_string(text: str) -> bytes:
    """A PDF literal string in WinAnsi (cp1252): ( ) and \\ escaped, other bytes outside
    printable ASCII written as octal escapes."""
    out = bytearray(b"(")
    for byte in text.encode("cp1252"):
        if byte in (0x28, 0x29, 0x5C):
            out += b"\\" + bytes([byte])
        elif 0x20 <= byte < 0x7F:
            out.append(byte)
        else:
            out += b"\\%03o" % byte
    out += b")"
    return bytes(out)


def layout(source: str) -> tuple[str, list[list[tuple[str, float, float, float, str]]]]:
    """Turn the source into pages of (font, size, x, y, text) lines."""
    lines: list[tuple[str, float, float, str, float]] = []  # (font, size, leading, text, indent)
    title = ""
    gap_pending = False

    def add_gap(points: float):
        lines.append(("", 0, points, "", 0))

    for raw in source.splitlines():
        line = raw.rstrip()
        if not line.strip():
            gap_pending = True
            continue
        if gap_pending and lines:
            add_gap(STYLES["body"][2])
        gap_pending = False
        for prefix, kind in (("### ", "h3"), ("## ", "h2"), ("# ", "h1")):
            if line.startswith(prefix):
                font, size, leading, before = STYLES[kind]
                text = line[len(prefix) :].strip()
                if kind == "h1" and not title:
                    title = text
                if before and lines:
                    add_gap(before)
                for part in textwrap.wrap(text, 60):
                    lines.append((font, size, leading, part, 0))
                break
        else:
            font, size, leading, _ = STYLES["body"]
            if line.startswith("- "):
                parts = textwrap.wrap(line[2:].strip(), WRAP - 4, break_on_hyphens=False)
                for i, part in enumerate(parts):
                    lines.append((font, size, leading, ("\u2022  " if i == 0 else "") + part, 0 if i == 0 else 12))
            else:
                for part in textwrap.wrap(line.strip(), WRAP, break_on_hyphens=False):
                    lines.append((font, size, leading, part, 0))

    pages: list[list[tuple[str, float, float, float, str]]] = [[]]
    y: float = PAGE_H - MARGIN_TOP
    for font, size, leading, text, indent in lines:
        if not font:  # a gap
            if pages[-1]:
                y -= leading
            continue
        # keep a heading with at least two lines after it
        need = leading * (3 if font == "F2" else 1)
        if y - need < MARGIN_BOTTOM and pages[-1]:
            pages.append([])
            y = PAGE_H - MARGIN_TOP
        y -= leading
        pages[-1].append((font, size, MARGIN_L + indent, y, text))
    return title, pages


def build(source_path: Path, output_path: Path) -> int:
    title, pages = layout(source_path.read_text(encoding="utf-8"))
    objects: list[bytes] = []  # object n is objects[n - 1]

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled in below
    pages_obj = add(b"")
    f1 = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    f2 = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>")
    info = add(
        b"<< /Title "
        + pdf_string(title or source_path.stem)
        + b" /Author "
        + pdf_string("Kestrel Valley Railway")
        + b" /Producer "
        + pdf_string("make_pdf.py")
        + b" /CreationDate (D:20250401090000Z) >>"
    )
    kids = []
    total = len(pages)
    for n, page in enumerate(pages, start=1):
        ops = []
        for font, size, x, y, text in page:
            ops.append(b"BT /%s %g Tf 1 0 0 1 %.2f %.2f Tm %s Tj ET" % (font.encode(), size, x, y, pdf_string(text)))
        ops.append(
            b"BT /F1 8 Tf 1 0 0 1 %.2f %.2f Tm %s Tj ET" % (MARGIN_L, 40.0, pdf_string(FOOTER.format(n=n, total=total)))
        )
        stream = b"\n".join(ops) + b"\n"
        content = add(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"endstream")
        kids.append(
            add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %d %d] "
                b"/Resources << /Font << /F1 %d 0 R /F2 %d 0 R >> >> /Contents %d 0 R >>"
                % (pages_obj, PAGE_W, PAGE_H, f1, f2, content)
            )
        )
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages_obj
    objects[pages_obj - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % k for k in kids),
        len(kids),
    )

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n" % (len(objects) + 1)
    out += b"0000000000 65535 f \n"
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root %d 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        catalog,
        info,
        xref_at,
    )
    output_path.parent.mkdir(parents=True, exist_ok=True)
    output_path.write_bytes(bytes(out))
    return total


def main(argv: list[str]) -> None:
    source = Path(argv[1]) if len(argv) > 1 else DEFAULT_SOURCE
    output = Path(argv[2]) if len(argv) > 2 else DEFAULT_OUTPUT
    n = build(source, output)
    print(f"wrote {output} ({n} pages, {output.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv)
