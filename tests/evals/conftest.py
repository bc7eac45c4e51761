"""Fixtures for the evaluation tests: an engine of our own on the tiny model (so loading an
adapter into it never changes the session-wide `tiny_engine` other tests use), a tiny LoRA
adapter published into the workspace, a small real retriever, and the chat service."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assistant.prompting import Passage, Retrieval


class EmbeddingRetriever:
    """A small but real retriever for tests: cosine similarity of MiniLM embeddings over a
    list of passages, abstaining when the best score is below `threshold` (the same contract
    as the knowledge package's retriever, without its index)."""

    def __init__(self, passages: list[tuple[str, str]], threshold: float = 0.3):
        from assistant.embeddings import get_embedder

        self.embedder = get_embedder()
        self.passages = [Passage(id=i, source=src, text=text) for i, (src, text) in enumerate(passages)]
        self.vectors = self.embedder.encode([p.text for p in self.passages])
        self.threshold = threshold
        self.queries: list[str] = []

    def documents(self) -> list[str]:
        return sorted({p.source for p in self.passages})

    def retrieve(self, query: str, k: int = 4) -> Retrieval:
        self.queries.append(query)
        scores = self.vectors @ self.embedder.encode([query])[0]
        order = scores.argsort()[::-1][:k]
        found = [Passage(**{**self.passages[i].as_dict(), "score": float(scores[i])}) for i in order]
        if not found or found[0].score < self.threshold:
            return Retrieval(found, abstain=True, reason="best score below threshold")
        return Retrieval(found)


# How the evaluation tests' random LoRA (`random_lora`, tests/conftest.py) is made: random
# non-zero weights, so the tuned arm really answers differently from the base.
EVAL_LORA = dict(target_modules=["q_proj", "v_proj"], meta={"base_model": "tiny", "created_at": "2025-01-01T00:00:00"})


@pytest.fixture(scope="module")
def eval_engine(tiny_model_dir):
    from assistant.hardware import pick_hardware
    from assistant.models import ResolvedModel
    from assistant.torch_engine import TorchEngine

    return TorchEngine.load(ResolvedModel("tiny", tiny_model_dir, "folder"), pick_hardware("cpu"), max_context=512)


@pytest.fixture
def tiny_adapter(workspace, tiny_model_dir, random_lora) -> str:
    random_lora(tiny_model_dir, workspace.adapters_dir / "tiny-lora", **EVAL_LORA)
    return "tiny-lora"


@pytest.fixture(scope="session")
def retriever():
    return EmbeddingRetriever(
        [
            ("bikes.md", "The Harbour Cruiser city bike costs 499 euro and weighs 14.6 kg."),
            ("hours.md", "The shop opens at 9 in the morning and closes at 6 in the evening, Monday to Saturday."),
            ("dog.md", "Bosun, a retired racing greyhound, is the shop dog and sleeps by the door."),
        ],
        threshold=0.35,
    )


@pytest.fixture
def chat(workspace, eval_engine, retriever):
    from assistant.adapters import AdapterCatalog
    from assistant.chat import ChatService
    from assistant.conversations import ConversationLog

    return ChatService(eval_engine, ConversationLog(workspace.db), AdapterCatalog(workspace.adapters_dir), retriever)


FACTS = [
    {
        "id": "f1",
        "question": "What is the name of the shop dog?",
        "answer": "Bosun",
        "aliases": ["greyhound"],
        "document": "dog.md",
    },
    {
        "id": "f2",
        "question": "How much does the Harbour Cruiser cost?",
        "answer": "499 euro",
        "aliases": ["€499"],
        "document": "bikes.md",
    },
    {
        "id": "f3",
        "question": "Who won the 1966 football world cup?",
        "answer": "England",
        "aliases": [],
        "document": "none",
    },
]


@pytest.fixture
def facts_file(tmp_path) -> Path:
    path = tmp_path / "facts.jsonl"
    path.write_text("".join(json.dumps(f) + "\n" for f in FACTS))
    return path
