"""The ONNX Runtime backend of the embedding model gives the torch backend's vectors and
rankings (retrieval/onnx_encoder.py), and the knowledge base picks it by setting."""

from __future__ import annotations

import json

import numpy as np
import pytest

from assistant.errors import ValidationError
from retrieval import encoder as encoder_module
from retrieval.chunking import chunk_document, embed_text
from retrieval.config import KnowledgeConfig
from retrieval.documents import parse_document
from retrieval.encoder import Encoder
from retrieval.onnx_encoder import OnnxEmbedder

from .conftest import DEMO_DOCS


def test_onnx_vectors_and_rankings_match_torch(embedder, tmp_path, monkeypatch):
    monkeypatch.setattr(encoder_module, "_onnx", {})  # export here, whatever ran before
    texts = []
    for path in sorted(DEMO_DOCS.iterdir())[:3]:
        doc = parse_document(path.name, path.read_bytes())
        texts += [embed_text(doc.title, c.heading, c.text) for c in chunk_document(doc)]
    facts = [json.loads(x) for x in (DEMO_DOCS.parent / "facts.jsonl").read_text().splitlines() if x.strip()]
    questions = [f["question"] for f in facts[::12]]

    encoder = Encoder(embedder.name, embedder, "auto", tmp_path / "onnx")
    onnx = encoder.runner
    assert isinstance(onnx, OnnxEmbedder) and encoder.backend_used == "onnx"
    assert onnx.path.exists() and onnx.path.parent == tmp_path / "onnx"
    got, want = onnx.encode(texts, batch_size=8), embedder.encode(texts, batch_size=16)
    assert np.abs(got - want).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    q_got, q_want = onnx.encode(questions), embedder.encode(questions)
    top = lambda q, x: np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10]  # noqa: E731
    assert np.array_equal(top(q_got, got), top(q_want, want))
    assert np.allclose(encoder.encode_query(questions[0]), q_want[0], atol=1e-5)

    again = Encoder(embedder.name, embedder, "auto", tmp_path / "other")
    assert again.runner is onnx  # one runner per embedder per process: not exported again
    assert not (tmp_path / "other").exists()
    torch_only = Encoder(embedder.name, embedder, "torch", tmp_path / "other")
    assert torch_only.runner is embedder and torch_only.backend_used == "torch"
    # sorted by length inside, returned in the caller's order
    assert np.abs(torch_only.encode(texts[:6]) - want[:6]).max() < 1e-5
    assert np.abs(encoder.encode(texts[:6]) - want[:6]).max() < 1e-5


def test_backend_setting():
    assert KnowledgeConfig.resolve().embed_backend == "auto"
    with pytest.raises(ValidationError, match="embedding backend must be auto, torch or onnx"):
        KnowledgeConfig.resolve(embed_backend="tensorflow")
    with pytest.raises(ValueError, match="embedding backend must be one of"):
        Encoder("m", None, "tpu")
