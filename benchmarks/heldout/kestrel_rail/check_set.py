"""Check the Kestrel Valley Railway held-out set.

Run from anywhere with the project's interpreter (it imports Tailor's own parser, so the text
checked is the text Tailor would index):

    cd /work/main && .venv/bin/python benchmarks/heldout/kestrel_rail/check_set.py

It checks that:
  - every file in docs/ parses with retrieval.documents.parse_document, and prints its kind,
    block count and word count (words of the extracted text, headings included);
  - every fact has the fields id, question, answer, aliases, document; its document exists;
  - every fact's answer (or, failing that, one of its aliases) occurs in its document's
    extracted text, case-insensitively, with runs of whitespace treated as one space, and as a
    whole token (so "8 minutes" is not satisfied by "58 minutes");
  - ids are unique across facts.jsonl and unanswerable.jsonl, and questions are not repeated;
  - the size rules hold: 7 documents, each 1,200-3,000 words, at least 12,000 in all, at least
    one PDF and two HTML files, at least 70 facts touching every document, at least 25
    unanswerable questions.
It also lists (as warnings, not failures) answers and aliases that occur as a whole token in a
document other than the one the fact cites. "Whole token" means not glued to a letter or digit
on either side, and a number is not counted inside a longer number (£16 is not found in £16.60).

Exit status 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]  # the repository root: benchmarks/heldout/kestrel_rail -> /
sys.path.insert(0, str(ROOT))

from retrieval.documents import parse_document  # noqa: E402

DOCS = HERE / "docs"
MIN_WORDS, MAX_WORDS, MIN_TOTAL = 1200, 3000, 12000
MIN_FACTS, MIN_UNANSWERABLE = 70, 25


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def whole_token(needle: str, haystack: str) -> bool:
    pattern = r"(?<![\w£€$])" + re.escape(norm(needle)) + r"(?![\w])(?![.,:]\d)"
    return re.search(pattern, haystack) is not None


def load_jsonl(path: Path, problems: list[str]) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            problems.append(f"{path.name}:{n}: not valid JSON ({exc})")
    return rows


def main() -> int:
    problems: list[str] = []
    warnings: list[str] = []

    # ---- documents
    texts: dict[str, str] = {}
    kinds: Counter = Counter()
    total_words = 0
    print("Documents")
    for path in sorted(DOCS.iterdir()):
        if not path.is_file():
            continue
        try:
            doc = parse_document(path.name, path.read_bytes())
        except Exception as exc:  # noqa: BLE001 - report and go on
            problems.append(f"{path.name}: the project's parser refused it: {exc}")
            continue
        text = doc.text
        words = len(text.split())
        total_words += words
        kinds[doc.kind] += 1
        texts[path.name] = norm(text)
        print(f"  {path.name:34} {doc.kind:4} {len(doc.blocks):4} blocks {words:6} words   title: {doc.title}")
        if not MIN_WORDS <= words <= MAX_WORDS:
            problems.append(f"{path.name}: {words} words, outside {MIN_WORDS}-{MAX_WORDS}")
    print(f"  total: {len(texts)} documents, {total_words} words, kinds {dict(kinds)}")
    if len(texts) != 7:
        problems.append(f"expected 7 documents in docs/, found {len(texts)}")
    if total_words < MIN_TOTAL:
        problems.append(f"documents total {total_words} words, fewer than {MIN_TOTAL}")
    if kinds["pdf"] < 1:
        problems.append("no PDF document")
    if kinds["html"] < 2:
        problems.append("fewer than two HTML documents")

    # ---- the PDF is generated from charter_source.txt (kept outside docs/) by make_pdf.py
    source = HERE / "charter_source.txt"
    pdf = DOCS / "passenger_charter.pdf"
    if (DOCS / source.name).exists():
        problems.append(f"{source.name} must not be inside docs/")
    if source.exists() and pdf.exists():
        import tempfile

        sys.path.insert(0, str(HERE))
        import make_pdf

        with tempfile.TemporaryDirectory() as tmp:
            fresh = Path(tmp) / pdf.name
            make_pdf.build(source, fresh)
            if fresh.read_bytes() != pdf.read_bytes():
                problems.append(f"{pdf.name} is out of date: run make_pdf.py to rebuild it from {source.name}")
            else:
                print(f"  {pdf.name} is up to date with {source.name}")
    else:
        problems.append(f"missing {source.name} or {pdf.name}")

    # ---- facts
    facts = load_jsonl(HERE / "facts.jsonl", problems)
    unanswerable = load_jsonl(HERE / "unanswerable.jsonl", problems)
    per_doc: Counter = Counter()
    via_alias = 0
    alias_count = 0
    for f in facts:
        fid = f.get("id", "?")
        missing = {"id", "question", "answer", "aliases", "document"} - set(f)
        if missing:
            problems.append(f"{fid}: missing fields {sorted(missing)}")
            continue
        if not isinstance(f["aliases"], list):
            problems.append(f"{fid}: aliases is not a list")
            continue
        alias_count += len(f["aliases"])
        name = f["document"]
        if name not in texts:
            problems.append(f"{fid}: document {name!r} is not in docs/ (or did not parse)")
            continue
        per_doc[name] += 1
        own = texts[name]
        if whole_token(f["answer"], own):
            pass
        elif any(whole_token(a, own) for a in f["aliases"]):
            via_alias += 1
            warnings.append(f"{fid}: answer {f['answer']!r} not verbatim in {name}; found through an alias")
        elif norm(f["answer"]) in own:
            problems.append(f"{fid}: the answer {f['answer']!r} occurs in {name} only inside a longer word or number")
        else:
            problems.append(f"{fid}: neither the answer {f['answer']!r} nor an alias occurs in {name}")
        for form in [f["answer"], *f["aliases"]]:
            others = [n for n, t in texts.items() if n != name and whole_token(form, t)]
            if others:
                warnings.append(f"{fid}: {form!r} also occurs as a whole token in {', '.join(others)}")
        if norm(f["question"]) in own:
            warnings.append(f"{fid}: the question is copied word for word from {name}")

    for u in unanswerable:
        if set(u) != {"id", "question"}:
            problems.append(f"{u.get('id', '?')}: unanswerable rows have exactly the fields id and question")

    # ---- ids and questions
    ids = Counter(r.get("id") for r in facts + unanswerable)
    for i, n in ids.items():
        if n > 1:
            problems.append(f"id {i!r} is used {n} times")
    questions = Counter(norm(r.get("question", "")) for r in facts + unanswerable)
    for q, n in questions.items():
        if n > 1:
            problems.append(f"question repeated {n} times: {q!r}")

    # ---- counts
    if len(facts) < MIN_FACTS:
        problems.append(f"{len(facts)} facts, fewer than {MIN_FACTS}")
    if len(unanswerable) < MIN_UNANSWERABLE:
        problems.append(f"{len(unanswerable)} unanswerable questions, fewer than {MIN_UNANSWERABLE}")
    for name in texts:
        if per_doc[name] == 0:
            problems.append(f"no fact cites {name}")

    print("\nFacts per document")
    for name in sorted(texts):
        print(f"  {name:34} {per_doc[name]:3}")
    print(
        f"  total: {len(facts)} facts ({alias_count} aliases on {sum(1 for f in facts if f.get('aliases'))} facts; "
        f"{via_alias} found only through an alias), "
        f"{len(unanswerable)} unanswerable questions"
    )

    print(f"\nWarnings ({len(warnings)})")
    for w in warnings:
        print("  " + w)
    print(f"\nProblems ({len(problems)})")
    for p in problems:
        print("  " + p)
    print("\nPASS" if not problems else "\nFAIL")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
