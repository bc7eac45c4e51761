import pytest

from assistant.adapters import AdapterCatalog
from assistant.chat import NO_SOURCE_REPLY, ChatRequest, ChatService
from assistant.conversations import ConversationLog
from assistant.engine import GenerationOptions
from assistant.errors import NotFoundError, ValidationError
from assistant.prompting import Passage, Retrieval

GREEDY = GenerationOptions(temperature=0, max_new_tokens=16, repetition_penalty=1.0)


@pytest.fixture
def chat(tiny_engine, workspace):
    return ChatService(tiny_engine, ConversationLog(workspace.db), AdapterCatalog(workspace.adapters_dir))


def test_turn_streams_and_stores(chat):
    turn = chat.send(ChatRequest("hello", options=GREEDY, system_prompt="Be kind."))
    texts = list(turn)
    reply = turn.wait(30)
    assert texts and texts[-1] == reply.content
    conv = chat.log.get(turn.conversation_id)
    assert [m.role for m in conv.messages] == ["user", "assistant"]
    assert conv.system_prompt == "Be kind."
    assert reply.model == "tiny" and reply.adapter is None
    assert reply.completion_tokens >= 1 and reply.latency_ms > 0
    assert reply.settings["temperature"] == 0


def test_continuing_sends_history(chat, tiny_engine, monkeypatch):
    first, _ = chat.chat(ChatRequest("first question", options=GREEDY))
    seen = {}
    real_stream = tiny_engine.stream

    def spy(messages, options=None, adapter=None):
        seen["messages"] = messages
        return real_stream(messages, options, adapter)

    monkeypatch.setattr(tiny_engine, "stream", spy)
    chat.chat(ChatRequest("second question", conversation_id=first.conversation_id, options=GREEDY))
    roles = [m["role"] for m in seen["messages"]]
    assert roles == ["user", "assistant", "user"]
    assert seen["messages"][0]["content"] == "first question"
    assert len(chat.log.get(first.conversation_id).messages) == 4


def test_reply_is_stored_even_if_nobody_reads_the_stream(chat):
    turn = chat.send(ChatRequest("hello", options=GREEDY))
    reply = turn.wait(30)  # never iterated
    assert chat.log.message(reply.id).content == reply.content


def test_stop_keeps_partial_reply(chat):
    turn = chat.send(ChatRequest("go on", options=GenerationOptions(temperature=1.0, max_new_tokens=200, seed=2)))
    next(iter(turn))
    assert chat.stop(turn.conversation_id)
    reply = turn.wait(30)
    assert reply.finish_reason in {"stopped", "stop"}
    assert chat.log.get(turn.conversation_id).messages[-1].id == reply.id
    assert not chat.stop(turn.conversation_id)  # nothing running any more


def test_bad_requests(chat):
    with pytest.raises(ValidationError):
        chat.send(ChatRequest("   "))
    with pytest.raises(NotFoundError):
        chat.send(ChatRequest("hi", conversation_id="missing"))
    with pytest.raises(NotFoundError):
        chat.send(ChatRequest("hi", model="no-such-adapter"))
    with pytest.raises(ValidationError, match="retrieval is not available"):
        chat.send(ChatRequest("hi", rag=True))
    assert chat.log.list() == []  # nothing half-saved by rejected requests


class _FakeRetriever:
    """Returns fixed passages; the real retriever is tested in tests/retrieval."""

    def __init__(self, abstain):
        self.abstain = abstain

    def retrieve(self, query, k=4):
        return Retrieval([Passage(7, "doc.md", "The shop opens at 9.", 0.2)], abstain=self.abstain, reason="test")


@pytest.fixture
def prompts_seen(tiny_engine, monkeypatch) -> list:
    """The messages of every generation the chat starts (the engine still generates)."""
    seen = []
    real_stream = tiny_engine.stream

    def spy(messages, options=None, adapter=None):
        seen.append(messages)
        return real_stream(messages, options, adapter)

    monkeypatch.setattr(tiny_engine, "stream", spy)
    return seen


def test_retrieval_passages_reach_prompt_and_log(chat, prompts_seen):
    chat.retriever = _FakeRetriever(abstain=False)
    _, reply = chat.chat(ChatRequest("when do you open?", rag=True, options=GREEDY))
    assert "The shop opens at 9." in prompts_seen[-1][-1]["content"]
    assert reply.retrieval["passages"][0]["id"] == 7
    assert chat.log.get(reply.conversation_id).rag is True


def test_reading_options_reach_the_engine_only_with_sources(chat, tiny_engine, monkeypatch):
    """The decoding settings for answering from sources (TAILOR_COPY_BIAS,
    TAILOR_PENALIZE_SOURCES) apply to retrieval replies, are recorded with them, and leave a
    plain chat as it was."""
    monkeypatch.setenv("TAILOR_COPY_BIAS", "2")
    monkeypatch.setenv("TAILOR_PENALIZE_SOURCES", "off")
    seen = []
    real_stream = tiny_engine.stream
    monkeypatch.setattr(
        tiny_engine, "stream", lambda m, o=None, adapter=None: seen.append(o) or real_stream(m, o, adapter)
    )
    chat.retriever = _FakeRetriever(abstain=False)
    _, reply = chat.chat(ChatRequest("when do you open?", rag=True, options=GREEDY))
    assert seen[-1].copy_bias == 2 and seen[-1].penalize_prompt is False
    assert "The shop opens at 9." in seen[-1].copy_source
    assert reply.settings["copy_bias"] == 2 and reply.settings["penalize_prompt"] is False
    _, plain = chat.chat(ChatRequest("hello", options=GREEDY))
    assert seen[-1] == GREEDY and plain.settings["copy_bias"] == 0
    monkeypatch.setenv("TAILOR_COPY_BIAS", "lots")
    with pytest.raises(ValidationError, match="TAILOR_COPY_BIAS must be a number"):
        chat.chat(ChatRequest("when do you open?", rag=True, options=GREEDY))


class _PriceRetriever:
    def retrieve(self, query, k=4):
        text = "A basic service costs €45 and a full overhaul €145; both come with a wash."
        return Retrieval([Passage(3, "prices.txt", text, 0.3)], abstain=False, reason="test")


def test_answer_focus_chooses_a_span_with_the_engine_and_records_it(chat, tiny_engine, prompts_seen, monkeypatch):
    """With TAILOR_ANSWER_FOCUS and TAILOR_ANSWER_HINT the chat (and so /v1) scores the
    candidate spans with the engine under the conversation's adapter, favours the chosen one
    and names it in the prompt; the reply records which span it was."""
    monkeypatch.setenv("TAILOR_ANSWER_FOCUS", "3")
    monkeypatch.setenv("TAILOR_ANSWER_HINT", "on")
    scored = []
    real = tiny_engine.span_logprobs
    monkeypatch.setattr(
        tiny_engine,
        "span_logprobs",
        lambda m, p, spans, adapter=None: scored.append(spans) or real(m, p, spans, adapter),
    )
    chat.retriever = _PriceRetriever()
    _, reply = chat.chat(ChatRequest("How much is a full overhaul?", rag=True, options=GREEDY))
    assert scored == [["€45", "€145"]]
    chosen = reply.settings["focus_text"]
    assert chosen in {"€45", "€145"} and reply.settings["focus_bias"] == 3
    assert reply.settings["focus_follow"] is True  # the default: the span is followed, token by token
    assert (
        f"Answer found in the sources: {chosen}\n\nQuestion: How much is a full overhaul?"
        in prompts_seen[-1][-1]["content"]
    )
    # a plain chat is untouched
    _, plain = chat.chat(ChatRequest("hello", options=GREEDY))
    assert plain.settings["focus_bias"] == 0 and len(scored) == 1


def test_abstention_with_decline_does_not_guess(chat):
    chat.retriever = _FakeRetriever(abstain=True)
    turn, reply = chat.chat(ChatRequest("what is the meaning of life?", rag=True, options=GREEDY, no_source="decline"))
    assert reply.content == NO_SOURCE_REPLY and reply.finish_reason == "no_source"
    assert reply.retrieval["abstained"] is True and reply.retrieval["declined"] is True
    assert reply.retrieval["passages"]  # the closest passages are kept to show the user
    assert turn.declined and not turn.grounded


def test_abstention_with_answer_policy_answers_without_sources(chat, prompts_seen):
    """The default: no good source means the model answers on its own, with no passage in the
    prompt, and the stored reply says it was not grounded."""
    chat.retriever = _FakeRetriever(abstain=True)
    assert chat.no_source == "answer"
    turn, reply = chat.chat(ChatRequest("how do I fix a puncture?", rag=True, options=GREEDY))
    assert prompts_seen[-1][-1]["content"] == "how do I fix a puncture?"  # no sources, no instruction
    assert reply.content != NO_SOURCE_REPLY and reply.finish_reason != "no_source"
    assert reply.retrieval["abstained"] is True and reply.retrieval["declined"] is False
    assert reply.retrieval["no_source"] == "answer" and not turn.declined and not turn.grounded


def test_no_source_policy_is_checked(chat):
    chat.retriever = _FakeRetriever(abstain=True)
    with pytest.raises(ValidationError, match="no_source must be one of answer, decline"):
        chat.send(ChatRequest("hi", rag=True, no_source="guess"))
    with pytest.raises(ValidationError):
        ChatService(chat.engine, chat.log, chat.adapters, no_source="maybe")


def test_models_lists_published_adapters(chat, workspace):
    assert chat.models() == ["base"] and chat.default_model() == "base"
    folder = workspace.adapters_dir / "voice-v1"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    assert chat.models() == ["base", "voice-v1"]
    chat.adapters.set_active("voice-v1")
    assert chat.default_model() == "voice-v1"
    chat.adapters.set_active(None)
    assert chat.default_model() == "base"


def test_regenerate_replaces_the_last_reply_and_keeps_the_old_one(chat, prompts_seen):
    first, _ = chat.chat(ChatRequest("first question", options=GREEDY))
    conv_id = first.conversation_id
    _, old = chat.chat(ChatRequest("second question", conversation_id=conv_id, options=GREEDY))
    chat.log.set_feedback(old.id, -1, "too vague")
    sampled = GenerationOptions(temperature=1.0, max_new_tokens=8, seed=5)
    turn, new = chat.chat(ChatRequest("", conversation_id=conv_id, options=sampled, regenerate=True))
    # asked again from the turns before the question, not with the old reply in the prompt
    asked = prompts_seen[-1]
    assert [m["content"] for m in asked if m["role"] == "user"] == ["first question", "second question"]
    assert len(asked) == 3
    conv = chat.log.get(conv_id)
    assert [m.role for m in conv.messages] == ["user", "assistant", "user", "assistant"]
    assert conv.messages[-1].id == new.id and turn.user_message.content == "second question"
    kept = chat.log.message(old.id)
    assert kept.superseded_by == new.id and kept.rating == -1  # out of the thread, rating kept
    assert conv.message_count == 4


def test_regenerate_needs_a_last_reply(chat):
    with pytest.raises(ValidationError, match="no conversation"):
        chat.send(ChatRequest("", regenerate=True))
    conv = chat.log.create()
    chat.log.add_message(conv.id, "user", "a question with no reply yet")
    with pytest.raises(ValidationError, match="only the last reply"):
        chat.send(ChatRequest("", conversation_id=conv.id, regenerate=True))


def test_switching_model_mid_conversation_is_recorded(chat, workspace, tiny_model_dir, random_lora):
    random_lora(tiny_model_dir, workspace.adapters_dir / "switch-v1", seed=3)
    turn, first = chat.chat(ChatRequest("hello", options=GREEDY))
    _, second = chat.chat(ChatRequest("again", conversation_id=turn.conversation_id, model="switch-v1", options=GREEDY))
    assert (first.adapter, second.adapter) == (None, "switch-v1")
    assert chat.log.get(turn.conversation_id).adapter == "switch-v1"
