"""Loading .md, .html, .txt and .pdf into titled, heading-scoped blocks, and the per-file
errors a user gets for files that cannot go in."""

import pytest

from retrieval.documents import DocumentError, parse_document

from .conftest import FARES_HTML, HOURS_MD, LOST_TXT, RULES_PDF_PAGES, encrypt_pdf, make_pdf


def test_markdown_keeps_heading_paths_and_reads_tables_as_rows():
    doc = parse_document("timetable.md", HOURS_MD.encode())
    assert doc.title == "Ferry Timetable" and doc.kind == "md"
    by_heading = {}
    for b in doc.blocks:
        by_heading.setdefault(b.headings, []).append(b.text)
    summer = by_heading[("Ferry Timetable", "Summer sailings")]
    assert "Day: Weekdays; First sailing: 07:10; Last sailing: 21:40" in summer[0]
    assert "|" not in summer[0] and "---" not in summer[0]
    assert any("Bicycles travel free" in t for t in summer)
    assert ("Ferry Timetable", "Winter sailings") in by_heading


def test_html_uses_headings_tables_lists_and_skips_scripts():
    doc = parse_document("fares.html", FARES_HTML.encode())
    assert doc.title == "Fares"
    text = doc.text
    assert "do not index me" not in text
    vehicles = [b.text for b in doc.blocks if b.headings == ("Fares", "Vehicles")]
    assert vehicles == ["Vehicle: Car; Single: 38 euro\nVehicle: Motorbike; Single: 17 euro"]
    discounts = [b.text for b in doc.blocks if b.headings == ("Fares", "Discounts")]
    assert discounts == ["- Island residents pay half price.\n- Children under five travel free."]


def test_plain_text_underlined_headings_and_unwrapped_lines():
    doc = parse_document("lost_property.txt", LOST_TXT.encode())
    assert doc.title == "LOST PROPERTY"
    first = doc.blocks[0]
    assert first.headings == ("LOST PROPERTY",)
    # the hard-wrapped sentence is one line again
    assert "ticket office for 45 days." in first.text
    assert doc.blocks[-1].headings == ("LOST PROPERTY", "Collecting an item")


def test_pdf_text_by_page():
    doc = parse_document("rules.pdf", make_pdf(RULES_PDF_PAGES))
    assert doc.kind == "pdf"
    assert [b.headings for b in doc.blocks] == [("page 1",), ("page 2",)]
    assert "Dogs must stay on a lead" in doc.blocks[0].text


def test_utf8_bom_and_utf16_are_read():
    assert parse_document("a.txt", "\ufeffCafé opens at nine.".encode("utf-8")).blocks[0].text == "Café opens at nine."
    assert "Café" in parse_document("b.txt", "Café opens at nine.".encode("utf-16")).blocks[0].text


@pytest.mark.parametrize(
    "name,data,expected",
    [
        ("notes.docx", b"PK\x03\x04 something", "unsupported file type .docx"),
        ("latin1.txt", "Caf\u00e9 cr\u00e8me".encode("latin-1"), "not valid UTF-8"),
        ("empty.md", b"   \n\n", "empty"),
        ("binary.txt", b"abc\x00\x01\x02def", "binary"),
        ("broken.pdf", b"%PDF-1.4\nthis is not really a pdf", "could not be read as a PDF"),
        ("blank.pdf", make_pdf([[]]), "no extractable text"),
        ("locked.pdf", encrypt_pdf(make_pdf(RULES_PDF_PAGES)), "encrypted"),
    ],
)
def test_unusable_files_raise_a_clear_error_naming_the_file(name, data, expected):
    with pytest.raises(DocumentError) as err:
        parse_document(name, data)
    assert expected in str(err.value) and name in str(err.value)


def test_size_limit(monkeypatch):
    monkeypatch.setenv("TAILOR_MAX_DOCUMENT_MB", "0.001")  # about 1 KB
    with pytest.raises(DocumentError, match="over the .* limit"):
        parse_document("big.md", b"word " * 1000)


def test_pdf_with_empty_user_password_opens():
    data = encrypt_pdf(make_pdf(RULES_PDF_PAGES), password="")
    doc = parse_document("open.pdf", data)
    assert "Smoking is not allowed" in doc.text
