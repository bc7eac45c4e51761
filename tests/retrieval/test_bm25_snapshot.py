"""BM25's snapshot: saved and read back exactly, written when the knowledge base loads, caught up
by chunk id on the next start (no rebuild from every text), and distrusted when it does not
match the database (another database's snapshot, a damaged file)."""

import numpy as np
import pytest

from retrieval.bm25 import BM25Index
from retrieval.live_index import BM25_FILE
from retrieval.service import open_knowledge


def _same(a: BM25Index, b: BM25Index, queries):
    for q in queries:
        assert a.search(q, 10) == b.search(q, 10)
        assert a.coverage_many(q, range(1, 40)) == b.coverage_many(q, range(1, 40))
    assert np.array_equal(a.chunk_ids(), b.chunk_ids()) and a.total_length == b.total_length


def test_save_and_load_give_the_same_index_through_adds_removals_and_the_tail(tmp_path):
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(200)] + ["ferry", "bike", "deposit", "€1,349"]
    bm = BM25Index(tail_postings=50)
    bm.add_many((cid, " ".join(rng.choice(words, 20))) for cid in range(1, 30))
    for cid in range(30, 40):  # some in the tail, some folded
        bm.add(cid, " ".join(rng.choice(words, 15)))
    bm.remove([3, 31])
    bm.save(tmp_path / "b.npz")
    loaded = BM25Index.load(tmp_path / "b.npz")
    queries = ["ferry bike", "w1 w2 w3", "deposit €1,349", "nothing here"]
    _same(bm, loaded, queries)
    for index in (bm, loaded):  # and both change alike afterwards
        index.add(40, "ferry deposit ferry")
        index.remove([5])
    _same(bm, loaded, queries)
    assert [p.name for p in tmp_path.iterdir()] == ["b.npz"]  # written under a temporary name, renamed
    (tmp_path / "b.npz").write_bytes(b"not a zip")
    with pytest.raises(Exception):
        BM25Index.load(tmp_path / "b.npz")


def test_a_start_catches_up_from_the_snapshot_instead_of_reading_every_text(workspace, embedder, docs_dir, monkeypatch):
    open_knowledge(workspace, embedder).add_paths([docs_dir])  # changes alone write no snapshot
    assert not (workspace.indexes_dir / BM25_FILE).exists()
    kb = open_knowledge(workspace, embedder)
    snapshot = kb.live.bm25_path
    assert snapshot.name == BM25_FILE and snapshot.exists()  # written when the knowledge base loaded
    queries = ["Are dogs allowed on the car deck?", "ferry fares", "bicycles"]
    expected = {q: kb.live.bm25.search(q, 5) for q in queries}
    first_doc = kb.store.documents()[0].name
    kb.remove(first_doc)  # a change after the snapshot: the next start catches up by id
    expected_after = {q: kb.live.bm25.search(q, 5) for q in queries}
    assert expected_after != expected

    read_all = []
    real = kb.store.chunk_texts

    def spy(ids=None):
        read_all.append(ids is None)
        return real(ids)

    reopened = open_knowledge(workspace, embedder)
    monkeypatch.setattr(reopened.store, "chunk_texts", spy)
    reopened.live.generation = -1  # as at a start: from the file
    reopened.checker.check()
    assert read_all and not any(read_all)  # only the spot checks and the changed ids were read
    assert {q: reopened.live.bm25.search(q, 5) for q in queries} == expected_after
    # a fresh start from the file the catch-up just wrote reads no text but the spot checks
    read_all.clear()
    reopened.live.generation = -1
    reopened.checker.check()
    assert not any(read_all) and {q: reopened.live.bm25.search(q, 5) for q in queries} == expected_after


def test_a_snapshot_that_does_not_match_the_database_is_rebuilt(workspace, embedder, docs_dir, tmp_path):
    open_knowledge(workspace, embedder).add_paths([docs_dir])
    kb = open_knowledge(workspace, embedder)
    queries = ["Are dogs allowed on the car deck?", "ferry fares"]
    expected = {q: kb.live.bm25.search(q, 5) for q in queries}
    # another database's snapshot with the same chunk ids but other texts
    other = BM25Index()
    other.add_many((int(cid), "completely different words here") for cid in kb.store.chunk_ids())
    other.save(kb.live.bm25_path)
    kb.live.generation = -1
    kb.checker.check()
    assert {q: kb.live.bm25.search(q, 5) for q in queries} == expected
    # a damaged file: rebuilt from the texts, with a log line, and saved again
    kb.live.bm25_path.write_bytes(b"\x00" * 100)
    kb.live.generation = -1
    kb.checker.check()
    assert {q: kb.live.bm25.search(q, 5) for q in queries} == expected
    assert BM25Index.load(kb.live.bm25_path).chunk_ids().tolist() == kb.store.chunk_ids().tolist()


def test_a_change_by_another_process_is_caught_up_in_memory(workspace, embedder, docs_dir, tmp_path, monkeypatch):
    """The server's copy follows the CLI's additions by id, reading only the new chunks (it
    used to rebuild BM25 from every chunk text each time another process changed anything)."""
    files = sorted(docs_dir.iterdir())
    server = open_knowledge(workspace, embedder)
    server.add_paths(files[:1])
    before = len(server.store.chunk_ids())
    cli = open_knowledge(workspace, embedder)
    cli.add_paths(files[1:])
    read = []
    real = server.store.chunk_texts

    def spy(ids=None):
        read.append(None if ids is None else len(ids))
        return real(ids)

    monkeypatch.setattr(server.store, "chunk_texts", spy)
    hits = server.search("Are dogs allowed on the car deck?", k=1)  # notices the new generation
    assert hits[0].source == "rules.pdf" and None not in read
    added = len(cli.store.chunk_ids()) - before
    assert 0 < sum(read) <= added + before  # the new chunks and the spot checks, never every text twice
    assert np.array_equal(server.live.bm25.chunk_ids(), cli.store.chunk_ids())
