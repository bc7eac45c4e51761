"""Adding, replacing, removing and searching documents through the knowledge service, with
per-file results, and the Retriever contract the chat relies on."""

import numpy as np
import pytest

from assistant.errors import NotFoundError, ValidationError
from retrieval import open_knowledge

from .conftest import HOURS_MD, encrypt_pdf, make_pdf


def _db_ids(kb):
    return set(kb.store.chunk_ids().tolist())


def test_folder_add_reports_each_file_and_keeps_the_good_ones(kb, docs_dir, monkeypatch):
    (docs_dir / "notes.docx").write_bytes(b"PK\x03\x04")
    (docs_dir / "locked.pdf").write_bytes(encrypt_pdf(make_pdf([["secret plans"]])))
    (docs_dir / "latin1.txt").write_bytes("Caf\u00e9".encode("latin-1"))
    (docs_dir / ".hidden.md").write_text("# hidden", encoding="utf-8")
    (docs_dir / "sub").mkdir()
    (docs_dir / "sub" / "big.md").write_text("# Big\n\n" + "lorem ipsum " * 400, encoding="utf-8")
    monkeypatch.setenv("TAILOR_MAX_DOCUMENT_MB", "0.004")  # ~4 KB: big.md is over, the others under
    steps = []
    results = kb.add_paths(
        [docs_dir, docs_dir / "missing.md"], progress=lambda done, total=None, message="": steps.append(done / total)
    )
    by_name = {r.name: r for r in results}
    assert {n for n, r in by_name.items() if r.status == "added"} == {
        "timetable.md",
        "fares.html",
        "lost_property.txt",
        "rules.pdf",
    }
    assert "unsupported" in by_name["notes.docx"].message
    assert "encrypted" in by_name["locked.pdf"].message
    assert "UTF-8" in by_name["latin1.txt"].message
    assert "limit" in by_name["sub/big.md"].message
    assert "no such file" in by_name[str(docs_dir / "missing.md")].message
    assert ".hidden.md" not in by_name
    assert steps and steps[-1] == 1.0 and steps == sorted(steps)
    docs = {d.name: d for d in kb.documents()}
    assert set(docs) == {"timetable.md", "fares.html", "lost_property.txt", "rules.pdf"}
    assert sum(d.chunk_count for d in docs.values()) == len(_db_ids(kb)) == kb.index.count


def test_same_content_is_detected(kb, docs_dir):
    first = kb.add_file(docs_dir / "timetable.md")
    again = kb.add_file(docs_dir / "timetable.md")
    assert first.status == "added" and again.status == "unchanged"
    copy = docs_dir / "timetable_copy.md"
    copy.write_bytes((docs_dir / "timetable.md").read_bytes())
    twin = kb.add_file(copy)
    assert twin.status == "duplicate" and "timetable.md" in twin.message
    assert [d.name for d in kb.documents()] == ["timetable.md"]


def test_changed_file_replaces_old_chunks_and_search_follows(kb, docs_dir):
    path = docs_dir / "timetable.md"
    kb.add_file(path)
    kb.add_file(docs_dir / "fares.html")
    old_ids = {c.id for c in kb.document("timetable.md").chunks}
    before = kb.search("winter fare for a foot passenger", k=1)[0]
    assert "6.40 euro" in before.text
    path.write_text(HOURS_MD.replace("6.40 euro", "7.90 euro"), encoding="utf-8")
    result = kb.add_file(path)
    assert result.status == "replaced"
    assert "kept their vectors" in result.message  # unchanged sections were not re-embedded
    doc = kb.document("timetable.md")
    new_ids = {c.id for c in doc.chunks}
    assert not (old_ids & new_ids)
    assert not (old_ids & _db_ids(kb)) and not (old_ids & set(kb.index.ids().tolist()))
    assert _db_ids(kb) == set(kb.index.ids().tolist())
    after = kb.search("winter fare for a foot passenger", k=1)[0]
    assert "7.90 euro" in after.text and "6.40" not in after.text
    assert [d.name for d in kb.documents()] == ["fares.html", "timetable.md"]


def test_remove(kb, docs_dir):
    kb.add_paths([docs_dir])
    info = kb.remove("fares.html")
    assert info.name == "fares.html"
    assert "fares.html" not in {p.source for p in kb.search("price of a car single", k=10)}
    assert _db_ids(kb) == set(kb.index.ids().tolist())
    with pytest.raises(NotFoundError):
        kb.remove("fares.html")
    for d in kb.documents():
        kb.remove(d.name)
    assert kb.index is None and kb.search("anything", k=3) == []


def test_search_modes_and_scores(kb, docs_dir):
    kb.add_paths([docs_dir])
    for mode in ("hybrid", "dense", "bm25"):
        hits = kb.search("Are dogs allowed on the car deck?", k=3, mode=mode)
        assert hits[0].source == "rules.pdf" and hits[0].heading == "rules > page 1"
        s = hits[0].scores
        assert set(s) >= {"dense", "bm25", "fused", "coverage"}
        assert hits[0].score == {"hybrid": s["fused"], "dense": s["dense"], "bm25": s["bm25"]}[mode]
    scores = [h.score for h in kb.search("Are dogs allowed on the car deck?", k=5)]
    assert scores == sorted(scores, reverse=True)
    with pytest.raises(ValidationError):
        kb.search("   ", k=3)
    with pytest.raises(ValidationError):
        kb.search("dogs", k=3, mode="magic")


def test_retrieve_answers_or_abstains(kb, docs_dir):
    empty = kb.retrieve("When does the first summer ferry leave?")
    assert empty.abstain and "empty" in empty.reason and empty.passages == []
    kb.add_paths([docs_dir])
    good = kb.retrieve("When does the first summer ferry leave on weekdays?", k=3)
    # the passages cited are those holding the sentences the model reads (at most k)
    assert not good.abstain and 1 <= len(good.passages) <= 3
    assert all(p.evidence for p in good.passages)
    assert "07:10" in good.passages[0].text and "07:10" in good.passages[0].shown_text
    off_topic = kb.retrieve("Who wrote the novel Moby-Dick?", k=3)
    assert off_topic.abstain and off_topic.passages  # the closest passages are still shown
    assert "support" in off_topic.reason


def test_a_second_process_sees_changes(workspace, embedder, docs_dir):
    writer = open_knowledge(workspace, embedder)
    reader = open_knowledge(workspace, embedder)
    writer.add_file(docs_dir / "lost_property.txt")
    hits = reader.search("how long are umbrellas kept", k=1)  # reloads: the generation moved
    assert hits and hits[0].source == "lost_property.txt"
    writer.remove("lost_property.txt")
    assert reader.search("how long are umbrellas kept", k=1) == []


def test_index_switches_to_hnsw_beyond_the_threshold(workspace, embedder, docs_dir):
    kb = open_knowledge(workspace, embedder, hnsw_threshold=4)
    kb.add_file(docs_dir / "lost_property.txt")
    assert kb.index.kind == "flat"
    kb.add_paths([docs_dir])
    assert kb.index.kind == "hnsw" and kb.index.count > 4
    assert kb.search("Are dogs allowed on the car deck?", k=1)[0].source == "rules.pdf"
    reopened = open_knowledge(workspace, embedder, hnsw_threshold=4)
    assert reopened.last_check.ok and reopened.index.kind == "hnsw"
    forced = open_knowledge(workspace, embedder, index_kind="flat")
    assert forced.index.kind == "flat"
    assert np.array_equal(np.sort(forced.index.ids()), forced.store.chunk_ids())


def test_ivf_by_setting(workspace, embedder, docs_dir, monkeypatch):
    monkeypatch.setenv("TAILOR_INDEX_KIND", "ivf")
    kb = open_knowledge(workspace, embedder)
    kb.add_paths([docs_dir])
    kb.remove("fares.html")
    assert kb.index.kind == "ivf" and set(kb.index.ids().tolist()) == set(kb.store.chunk_ids().tolist())
    assert kb.search("Are dogs allowed on the car deck?", k=1)[0].source == "rules.pdf"
    reopened = open_knowledge(workspace, embedder)
    assert reopened.last_check.ok and reopened.index.kind == "ivf"
    monkeypatch.setenv("TAILOR_INDEX_KIND", "annoy")
    with pytest.raises(ValidationError):
        open_knowledge(workspace, embedder)
