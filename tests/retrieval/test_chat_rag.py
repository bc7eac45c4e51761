"""The chat with retrieval on: passages go into the prompt, the retrieved chunk ids are stored
with the reply, abstention answers without the model, and citations render under replies."""

import pytest

from assistant.adapters import AdapterCatalog
from assistant.chat import NO_SOURCE_REPLY, ChatRequest, ChatService
from assistant.conversations import ConversationLog
from assistant.engine import GenerationOptions
from ui.chat_display import chat_messages
from ui.knowledge_format import citations_markdown

GREEDY = GenerationOptions(temperature=0, max_new_tokens=8, repetition_penalty=1.0)


@pytest.fixture
def rag_chat(tiny_engine, workspace, kb, docs_dir):
    kb.add_paths([docs_dir])
    return ChatService(tiny_engine, ConversationLog(workspace.db), AdapterCatalog(workspace.adapters_dir), retriever=kb)


def test_rag_turn_puts_sources_in_the_prompt_and_stores_chunk_ids(rag_chat, tiny_engine, monkeypatch, kb):
    seen = {}
    real = tiny_engine.stream

    def spy(messages, options=None, adapter=None):
        seen["messages"] = messages
        return real(messages, options, adapter)

    monkeypatch.setattr(tiny_engine, "stream", spy)
    turn, reply = rag_chat.chat(
        ChatRequest("When does the first weekday summer ferry leave?", rag=True, k=3, options=GREEDY)
    )
    prompt = seen["messages"][-1]["content"]
    assert "07:10" in prompt and "[1] timetable.md" in prompt
    stored = rag_chat.log.message(reply.id).retrieval
    # cited: the passages holding the sentences the model read (at most k), with their spans
    assert stored["abstained"] is False and 1 <= len(stored["passages"]) <= 3
    assert all(
        p["evidence"] and p["text"][e["start"] : e["end"]] == e["text"]
        for p in stored["passages"]
        for e in p["evidence"]
    )
    ids = [p["id"] for p in stored["passages"]]
    assert set(ids) <= set(kb.store.chunk_ids().tolist())
    assert rag_chat.log.get(turn.conversation_id).rag is True
    history = chat_messages(rag_chat.log.get(turn.conversation_id).messages)  # as the chat shows it
    label = history[-2]  # the reply's label: its sources are folded there
    assert "**Sources**" in label["content"] and "[1] *timetable.md" in label["content"]
    assert "📚 " in label["metadata"]["title"] and history[-1]["content"] == turn.reply.content
    assert history[0]["content"] == "When does the first weekday summer ferry leave?"


def test_unsupported_question_abstains_without_generating(rag_chat, tiny_engine, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the model must not be asked")

    monkeypatch.setattr(tiny_engine, "stream", boom)
    turn, reply = rag_chat.chat(
        ChatRequest("Who painted the Mona Lisa?", rag=True, options=GREEDY, no_source="decline")
    )
    assert reply.content == NO_SOURCE_REPLY and reply.finish_reason == "no_source"
    assert reply.retrieval["abstained"] is True and reply.retrieval["passages"]
    shown = citations_markdown(reply.retrieval)
    assert "Closest passages" in shown and "model's own" not in shown


def test_unsupported_question_answered_without_sources_is_marked(rag_chat):
    turn, reply = rag_chat.chat(ChatRequest("Who painted the Mona Lisa?", rag=True, options=GREEDY))
    assert reply.finish_reason != "no_source" and reply.retrieval["abstained"] is True
    shown = citations_markdown(reply.retrieval)
    # the note comes first, then the closest passages, labelled as not used
    assert shown.index("not from your documents") < shown.index("Closest passages (not used to answer)")


def test_replies_stored_before_the_policy_read_as_declined():
    old = {"abstained": True, "reason": "x", "passages": [{"source": "a.md", "text": "t"}]}
    assert "model's own" not in citations_markdown(old)


def test_rag_off_keeps_plain_chat(rag_chat):
    _, reply = rag_chat.chat(ChatRequest("hello", rag=False, options=GREEDY))
    assert reply.retrieval is None
    assert citations_markdown(reply.retrieval) == ""
