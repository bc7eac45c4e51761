"""Fixtures for the knowledge tests: the real embedding model (all-MiniLM-L6-v2, loaded once),
a knowledge service on a fresh workspace, small documents written in every supported format,
and a hand-built PDF writer (pypdf reads PDFs but cannot lay out text)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO_DOCS = REPO / "demo" / "lantern_bay" / "docs"

HOURS_MD = """# Ferry Timetable

The Brightwater ferry links Port Alder and Gull Island.

## Summer sailings

| Day | First sailing | Last sailing |
|---|---|---|
| Weekdays | 07:10 | 21:40 |
| Weekends | 08:25 | 19:55 |

Bicycles travel free on every summer sailing.

## Winter sailings

From November to March the ferry runs every two hours. The winter fare for a foot
passenger is 6.40 euro.
"""

FARES_HTML = """<!DOCTYPE html><html><head><title>Fares – Brightwater Ferries</title>
<script>var tracking = "do not index me";</script></head>
<body><h1>Fares</h1>
<p>All fares include the harbour levy.</p>
<h2>Vehicles</h2>
<table><tr><th>Vehicle</th><th>Single</th></tr>
<tr><td>Car</td><td>38 euro</td></tr><tr><td>Motorbike</td><td>17 euro</td></tr></table>
<h2>Discounts</h2>
<ul><li>Island residents pay half price.</li><li>Children under five travel free.</li></ul>
</body></html>"""

LOST_TXT = """LOST PROPERTY
=============

Items left on board are kept at the Port Alder ticket office
for 45 days. After that they are given to the Gull Island charity shop.

Collecting an item
------------------
Bring photo ID. Umbrellas are never kept longer than 10 days.
"""


def make_pdf(pages: list[list[str]]) -> bytes:
    """A minimal valid PDF: one Helvetica text line per string, one list per page."""

    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    bodies = {1: b"<< /Type /Catalog /Pages 2 0 R >>", 3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"}
    page_ids = []
    for i, lines in enumerate(pages):
        pid, cid = 4 + 2 * i, 5 + 2 * i
        page_ids.append(pid)
        stream = ("BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({esc(x)}) '" for x in lines) + " ET").encode("latin-1")
        bodies[pid] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >>"
            f" /Contents {cid} 0 R >>"
        ).encode()
        bodies[cid] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"
    bodies[2] = (
        "<< /Type /Pages /Kids [" + " ".join(f"{p} 0 R" for p in page_ids) + f"] /Count {len(pages)} >>"
    ).encode()
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = {}
    for num in sorted(bodies):
        offsets[num] = out.tell()
        out.write(b"%d 0 obj\n" % num + bodies[num] + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(bodies) + 1))
    for num in sorted(bodies):
        out.write(b"%010d 00000 n \n" % offsets[num])
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(bodies) + 1, xref))
    return out.getvalue()


def encrypt_pdf(data: bytes, password: str = "secret") -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=password, owner_password="owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


RULES_PDF_PAGES = [
    ["Onboard rules", "Dogs must stay on a lead on the car deck."],
    ["Smoking is not allowed anywhere on the Brightwater ferry."],
]


@pytest.fixture(scope="session")
def embedder():
    from assistant.embeddings import get_embedder

    return get_embedder()


@pytest.fixture
def kb(workspace, embedder):
    from retrieval import open_knowledge

    return open_knowledge(workspace, embedder)


@pytest.fixture
def docs_dir(tmp_path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "timetable.md").write_text(HOURS_MD, encoding="utf-8")
    (folder / "fares.html").write_text(FARES_HTML, encoding="utf-8")
    (folder / "lost_property.txt").write_text(LOST_TXT, encoding="utf-8")
    (folder / "rules.pdf").write_bytes(make_pdf(RULES_PDF_PAGES))
    return folder
