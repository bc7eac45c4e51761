"""Acceptance, end to end on the real default model (SmolLM2-135M-Instruct, greedy): add the
demo documents, ask a fact question with retrieval on, get the right answer with a citation;
change the fact in the document, add it again, ask again, get the new fact.

The question is the rental deposit (facts.jsonl f058). Measured with greedy decoding, the
default model copies the deposit amount from its passage reliably, both the original €150
and the edited €275; many other facts it gets wrong even with the right passage in front of
it (see the README's Knowledge section), which is why this one was picked."""

import shutil

import pytest

from assistant.adapters import AdapterCatalog
from assistant.chat import ChatRequest, ChatService
from assistant.conversations import ConversationLog
from assistant.engine import GenerationOptions
from retrieval import open_knowledge
from ui.chat_display import chat_messages

from .conftest import DEMO_DOCS

QUESTION = "How big is the deposit when I rent a bike?"
GREEDY = GenerationOptions(temperature=0, max_new_tokens=40, repetition_penalty=1.0)


@pytest.mark.real
def test_answer_follows_an_edited_document_without_retuning(real_engine, workspace, embedder, tmp_path, monkeypatch):
    # This checks freshness, not reading: the fact was picked because the base model reads it.
    # Under the default copy bias of 2 the base model copies the neighbouring age rules for this
    # one question instead (one of the flips in the README's reading table, where the bias wins
    # overall, and the tuned adapter gets this fact right); at 1 it reads the deposit, as it did
    # without the bias, and the copying path is still exercised.
    monkeypatch.setenv("TAILOR_COPY_BIAS", "1")
    # Answer focus on: "how big" asks for a quantity, so the candidate spans are €150 and the
    # ages 16, 12 and 15; by likelihood alone the base model picks "15", and ranking (bare
    # numbers yield) leaves €150, then €275 after the edit. The focus follows the span: with
    # +4 on every token of "€275" all through the reply, the base model loops on "2".
    monkeypatch.setenv("TAILOR_ANSWER_FOLLOW", "on")
    docs = tmp_path / "docs"
    shutil.copytree(DEMO_DOCS, docs)
    kb = open_knowledge(workspace, embedder)
    results = kb.add_paths([docs])
    assert all(r.ok for r in results) and len(results) >= 10
    chat = ChatService(real_engine, ConversationLog(workspace.db), AdapterCatalog(workspace.adapters_dir), retriever=kb)

    turn, reply = chat.chat(ChatRequest(QUESTION, rag=True, options=GREEDY))
    assert "150" in reply.content, reply.content
    cited = reply.retrieval["passages"]
    assert not reply.retrieval["abstained"]
    assert any(p["source"] == "rentals.md" and "€150" in p["text"] for p in cited)
    shown = chat_messages(chat.log.get(turn.conversation_id).messages)[-2]["content"]  # the reply's folded sources
    assert "rentals.md" in shown and "[1]" in shown

    rentals = docs / "rentals.md"
    text = rentals.read_text(encoding="utf-8")
    assert "deposit of €150" in text
    rentals.write_text(text.replace("deposit of €150", "deposit of €275"), encoding="utf-8")
    again = kb.add_file(rentals)
    assert again.status == "replaced"

    _, reply2 = chat.chat(ChatRequest(QUESTION, rag=True, options=GREEDY))
    assert "275" in reply2.content and "150" not in reply2.content, reply2.content
    assert any(p["source"] == "rentals.md" and "€275" in p["text"] for p in reply2.retrieval["passages"])
    assert not any("€150" in p["text"] for p in reply2.retrieval["passages"])
