"""The FAISS wrapper (ids = chunk ids, in-place add/remove, flat and HNSW, persistence) and
BM25 and reciprocal rank fusion."""

import numpy as np
import pytest

from retrieval.index import FLAT, HNSW, IVF, BM25Index, VectorIndex, reciprocal_rank_fusion, tokenize


def _vectors(n, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", [FLAT, HNSW, IVF])
def test_add_search_remove_and_round_trip(kind, tmp_path):
    x = _vectors(200)
    ids = np.arange(1000, 1200)
    index = VectorIndex(16, kind)
    index.add(ids, x)
    scores, found = index.search(x[5:6], 3)
    assert found[0, 0] == 1005 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    index.remove([1005, 1006])
    assert index.count == 198
    _, found = index.search(x[5:6], 10)
    assert 1005 not in found[0] and 1006 not in found[0] and (found[0] >= 0).all()
    assert set(index.ids().tolist()) == set(ids.tolist()) - {1005, 1006}
    copy = VectorIndex.from_bytes(index.to_bytes(), kind, index.deleted)
    assert copy.count == 198 and np.array_equal(np.sort(copy.ids()), np.sort(index.ids()))
    assert np.allclose(copy.reconstruct(1010), x[10])
    _, again = copy.search(x[5:6], 10)
    assert np.array_equal(again, found)
    index.write(tmp_path / "k.faiss")  # straight to the file, renamed into place
    assert [p.name for p in tmp_path.iterdir()] == ["k.faiss"]
    from_file = VectorIndex.read(tmp_path / "k.faiss", kind, index.deleted)
    assert np.array_equal(from_file.search(x[5:6], 10)[1], found)


def test_hnsw_tombstones_are_compacted_and_kind_mismatch_is_refused():
    x = _vectors(2000, seed=1)
    index = VectorIndex(16, HNSW)
    index.add(np.arange(2000), x)
    index.remove(range(1200))  # more than a quarter: the graph is rebuilt without them
    assert index.deleted == set() and index.index.ntotal == 800 and index.count == 800
    with pytest.raises(ValueError, match="metadata says flat"):
        VectorIndex.from_bytes(index.to_bytes(), FLAT)


@pytest.mark.parametrize("kind", [HNSW, IVF])
def test_approximate_recall_against_exact(kind):
    rng = np.random.default_rng(2)
    centers = rng.standard_normal((50, 32)).astype(np.float32)
    x = centers[rng.integers(0, 50, 5000)] + 0.5 * rng.standard_normal((5000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:50] + 0.05 * rng.standard_normal((50, 32)).astype(np.float32)
    flat, approx_index = VectorIndex(32, FLAT), VectorIndex(32, kind)
    for idx in (flat, approx_index):
        idx.add(np.arange(5000), x)
    _, exact = flat.search(q, 10)
    _, approx = approx_index.search(q, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall > 0.9


def test_empty_index_search():
    scores, ids = VectorIndex(8).search(np.ones((1, 8), np.float32), 3)
    assert (ids == -1).all()


def test_tokenize_folds_plurals_and_splits_prices():
    assert tokenize("What are the tyres' prices?") == ["tyre", "price"]
    toks = tokenize("The Breakwater costs €1,349 and form LB-W1")
    assert "1,349" in toks and "349" in toks and "lb-w1" in toks and "w1" in toks and "the" not in toks


def test_bm25_ranks_by_rare_terms_and_updates_in_place():
    bm = BM25Index()
    bm.add(1, "The ferry leaves Port Alder at seven.")
    bm.add(2, "Bicycles travel free on the ferry.")
    bm.add(3, "The harbour cafe sells ferry tickets.")
    assert bm.search("bicycle ferry", 3)[0][0] == 2
    assert bm.coverage("bicycle ferry", 2) == pytest.approx(1.0)
    assert bm.coverage("wetsuit ferry", 2) < 0.5  # the unknown term weighs most
    bm.remove([2])
    assert 2 not in dict(bm.search("bicycle ferry", 3))
    assert len(bm) == 2
    bm.add(1, "Bicycles now go on the seven o'clock boat.")  # replacing a chunk's text
    assert bm.search("bicycle", 3)[0][0] == 1
    assert bm.df("ferry") == 1 and bm.scores_for("ferry", [1, 3]) == {
        1: 0.0,
        3: pytest.approx(bm.search("ferry", 1)[0][1]),
    }


def test_reciprocal_rank_fusion():
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 1]], k=60)
    assert fused[1] == pytest.approx(1 / 61 + 1 / 62)
    assert fused[3] == pytest.approx(1 / 63 + 1 / 61)
    assert fused[2] == pytest.approx(1 / 62)
    assert max(fused, key=fused.get) == 1


def test_ivf_retrains_as_it_grows_without_losing_vectors():
    """Adds one document's chunks at a time: lists trained on the first few vectors would
    leave a grown index scanning nearly everything, so it retrains (from its own vectors) once
    it has grown ~4x; every id stays findable and exact."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6100, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = VectorIndex(16, IVF)
    index.add(np.arange(100), x[:100])
    first_lists = index.index.nlist
    for start in range(100, 6100, 500):
        index.add(np.arange(start, start + 500), x[start : start + 500])
    assert index.index.nlist > 4 * first_lists and index.count == 6100
    assert np.array_equal(np.sort(index.ids()), np.arange(6100))
    assert np.allclose(index.vectors([0, 6099]), x[[0, 6099]])
    _, ids = index.search(x[:50], 1)
    assert (ids[:, 0] == np.arange(50)).mean() >= 0.9  # a vector finds itself through the probed lists


def test_ivf_is_8_bit_at_scale_retrains_from_the_stored_vectors_and_reads_old_flat_files(tmp_path, monkeypatch):
    """From IVF_SQ8_FROM vectors (lowered here) the lists hold 8-bit residuals, a quarter of the
    bytes; a retraining given the exact stored vectors re-encodes from them, so the error stays
    that of one encoding however often the index grows; below the threshold and in IVF-Flat
    files written before, vectors stay float32, and such a file still loads, searches and grows."""
    import faiss

    import retrieval.index as index_module

    monkeypatch.setattr(index_module, "IVF_SQ8_FROM", 1000)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = VectorIndex(32, IVF)
    calls = []

    def stored():
        calls.append(1)
        return np.arange(3000), x  # the database holds every chunk, some not yet indexed

    index.add(np.arange(50), x[:50], stored=stored)
    assert isinstance(index.index, faiss.IndexIVFFlat)  # small: exact float32
    assert np.allclose(index.vectors(range(50)), x[:50])
    for start in range(50, 3000, 50):
        index.add(np.arange(start, start + 50), x[start : start + 50], stored=stored)
    assert isinstance(index.index, faiss.IndexIVFScalarQuantizer) and index.index.code_size == 32
    assert calls and index.count == 3000 and np.array_equal(np.sort(index.ids()), np.arange(3000))
    err = np.abs(index.vectors(range(3000)) - x).max()
    assert err < 0.01
    scores, found = index.search(x[5:6], 3)
    assert found[0, 0] == 5 and scores[0, 0] == pytest.approx(1.0, abs=0.01)
    index.remove([5])
    copy = VectorIndex.read(_written(index, tmp_path / "sq8.faiss"), IVF)
    assert copy.count == 2999 and 5 not in copy.search(x[5:6], 10)[1][0]
    # without the stored copy it re-encodes its own decoded vectors: close, never exact
    own = VectorIndex(32, IVF)
    for start in range(0, 3000, 50):
        own.add(np.arange(start, start + 50), x[start : start + 50])
    assert own.count == 3000 and np.abs(own.vectors(range(3000)) - x).max() < 0.02

    # a file from before: IVF-Flat with a hash-table direct map, as the old code wrote it
    old = faiss.IndexIVFFlat(faiss.IndexFlatIP(32), 32, 16, faiss.METRIC_INNER_PRODUCT)
    old.train(x[:1000])
    old.set_direct_map_type(faiss.DirectMap.Hashtable)
    old.add_with_ids(x[:1000], np.arange(1000))
    faiss.write_index(old, str(tmp_path / "old.faiss"))
    loaded = VectorIndex.read(tmp_path / "old.faiss", IVF)
    _, found = loaded.search(x[:20], 1)
    assert (found[:, 0] == np.arange(20)).mean() >= 0.9
    loaded.add(np.arange(1000, 3000), x[1000:3000])  # grown 3x: retrains from its float32 codes
    assert isinstance(loaded.index, faiss.IndexIVFScalarQuantizer) and loaded.count == 3000
    assert np.abs(loaded.vectors([0, 2999]) - x[[0, 2999]]).max() < 0.01


def _written(index, path):
    index.write(path)
    return path


def test_the_index_check_accepts_8_bit_codes_of_the_stored_vectors_only(monkeypatch):
    import retrieval.index as index_module
    from retrieval.index_check import _same_vectors

    monkeypatch.setattr(index_module, "IVF_SQ8_FROM", 100)
    x = _vectors(400, dim=64, seed=5)
    index = VectorIndex(64, IVF)
    index.add(np.arange(400), x)
    decoded = index.vectors(range(10))
    assert not np.array_equal(decoded, x[:10])  # 8-bit: close, not equal
    assert _same_vectors(decoded, x[:10], IVF)
    assert not _same_vectors(decoded, x[10:20], IVF)  # other chunks' vectors
    assert not _same_vectors(decoded, x[:10], FLAT)  # float32 kinds compare exactly
