"""Structure-following chunking: within a section, about the target size, with overlap."""

from retrieval.chunking import approx_tokens, chunk_document, context_line, embed_text
from retrieval.documents import Block, ParsedDocument


def _doc(blocks):
    return ParsedDocument("Guide", "md", [Block(h, t) for h, t in blocks])


def test_chunks_never_cross_a_heading_and_keep_positions():
    doc = _doc([(("Guide", "A"), "alpha one."), (("Guide", "A"), "alpha two."), (("Guide", "B"), "beta one.")])
    chunks = chunk_document(doc, approx_tokens, target_tokens=200)
    assert [(c.position, c.heading) for c in chunks] == [(0, "Guide > A"), (1, "Guide > B")]
    assert chunks[0].text == "alpha one.\n\nalpha two."


def test_long_section_is_split_to_target_with_overlap():
    sentences = [f"Sentence number {i} talks about ferry item {i}." for i in range(60)]
    doc = _doc([(("Guide", "Long"), " ".join(sentences))])
    chunks = chunk_document(doc, approx_tokens, target_tokens=60, overlap_tokens=15)
    assert len(chunks) > 3
    for c in chunks:
        assert c.token_count <= 60 + 12  # the target, give or take one sentence of slack
        assert c.heading == "Guide > Long"
    # consecutive chunks share text (the overlap), and together they cover every sentence
    for a, b in zip(chunks, chunks[1:]):
        last_sentence = a.text.split(". ")[-1].rstrip(".")
        assert last_sentence in b.text
    joined = " ".join(c.text for c in chunks)
    assert all(s.rstrip(".") in joined for s in sentences)


def test_a_single_huge_word_run_is_still_split():
    doc = _doc([(("Guide",), "word " * 2000)])
    chunks = chunk_document(doc, approx_tokens, target_tokens=100, overlap_tokens=0)
    assert len(chunks) >= 18
    assert all(c.token_count <= 120 for c in chunks)


def test_real_tokenizer_counts_and_context_line(embedder):
    doc = _doc([(("Guide", "Tides"), "High tide at Port Alder is at 06:12 today. " * 40)])
    chunks = chunk_document(doc, embedder.count_tokens, target_tokens=128, overlap_tokens=24)
    assert len(chunks) >= 3
    for c in chunks:
        assert c.token_count == embedder.count_tokens(embed_text("Guide", c.heading, c.text))
        assert c.token_count <= 128 + 16
    assert context_line("Guide", "Guide > Tides") == "Guide > Tides"
    assert context_line("Guide", "page 2") == "Guide > page 2"
    assert context_line("Guide", "") == "Guide"
