"""The startup check: an index file that disagrees with the database (corrupt, missing,
wrong ids or count, other vectors, another embedding model or dimension) is found and rebuilt
from the database, and search works again."""

import json

import numpy as np
import pytest

from retrieval import open_knowledge
from retrieval.index import VectorIndex


@pytest.fixture
def filled(workspace, embedder, docs_dir):
    kb = open_knowledge(workspace, embedder)
    kb.add_paths([docs_dir])
    return kb


def _reopen_and_check(filled, embedder, expect):
    kb = open_knowledge(filled.workspace, embedder)
    check = kb.last_check
    assert not check.ok and check.rebuilt
    assert any(expect in p for p in check.problems), check.problems
    assert np.array_equal(np.sort(kb.index.ids()), kb.store.chunk_ids())
    assert kb.search("Are dogs allowed on the car deck?", k=1)[0].source == "rules.pdf"
    again = open_knowledge(filled.workspace, embedder)  # the rebuilt file was saved
    assert again.last_check.ok and not again.last_check.rebuilt
    return kb


def test_a_consistent_index_passes(filled, embedder):
    kb = open_knowledge(filled.workspace, embedder)
    assert kb.last_check.ok and not kb.last_check.rebuilt and kb.last_check.chunks == kb.index.count


def test_corrupt_file_is_rebuilt(filled, embedder):
    filled.index_path.write_bytes(b"\x00garbage" * 100)
    _reopen_and_check(filled, embedder, "cannot be read")


def test_truncated_file_is_rebuilt(filled, embedder):
    data = filled.index_path.read_bytes()
    filled.index_path.write_bytes(data[: len(data) // 2])
    _reopen_and_check(filled, embedder, "cannot be read")


def test_missing_file_is_rebuilt(filled, embedder):
    filled.index_path.unlink()
    _reopen_and_check(filled, embedder, "missing")


def test_index_with_a_missing_chunk_is_rebuilt(filled, embedder):
    index = VectorIndex.from_bytes(filled.index_path.read_bytes(), "flat")
    index.remove([int(index.ids()[0])])
    filled.index_path.write_bytes(index.to_bytes())
    _reopen_and_check(filled, embedder, "holds")


def test_index_with_other_ids_is_rebuilt(filled, embedder):
    index = VectorIndex.from_bytes(filled.index_path.read_bytes(), "flat")
    ids = index.ids()
    vecs = index.vectors(ids)
    other = VectorIndex(index.dim)
    other.add(ids + 1000, vecs)
    filled.index_path.write_bytes(other.to_bytes())
    _reopen_and_check(filled, embedder, "ids differ")


def test_index_with_other_vectors_is_rebuilt(filled, embedder):
    index = VectorIndex.from_bytes(filled.index_path.read_bytes(), "flat")
    ids = index.ids()
    vecs = np.roll(index.vectors(ids), 1, axis=0)  # same ids, shuffled vectors
    other = VectorIndex(index.dim)
    other.add(ids, vecs)
    filled.index_path.write_bytes(other.to_bytes())
    _reopen_and_check(filled, embedder, "vectors differ")


def test_index_of_another_dimension_is_rebuilt(filled, embedder):
    ids = filled.store.chunk_ids()
    other = VectorIndex(8)
    other.add(ids, np.ones((len(ids), 8), np.float32))
    filled.index_path.write_bytes(other.to_bytes())
    meta = json.loads(filled.meta_path.read_text())
    filled.meta_path.write_text(json.dumps(meta | {"dim": 8}))
    _reopen_and_check(filled, embedder, "dimensional")


def test_another_embedding_model_is_detected_and_chunks_are_re_embedded(filled, embedder):
    # As if the documents had been embedded with an older model: the index and the stored
    # vectors are labelled with it, so every chunk must be embedded again with the current one.
    meta = json.loads(filled.meta_path.read_text())
    filled.meta_path.write_text(json.dumps(meta | {"model": "old-model"}))
    with filled.workspace.db.transaction() as conn:
        conn.execute("UPDATE chunks SET embedding_model='old-model', embedding=zeroblob(16)")
    kb = _reopen_and_check(filled, embedder, "embedding model")
    ids, vecs = kb.store.vectors(embedder.name)
    assert len(ids) == kb.store.chunk_count() and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-4)
