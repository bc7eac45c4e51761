"""Side-by-side comparison (assistant/compare.py): the base side is really the base model even
with the adapter loaded in the same engine, the adapter side is the adapter, a bad request
writes nothing, and a comparison goes on over several turns in two logged conversations."""

import json

import pytest

from assistant.adapters import AdapterCatalog
from assistant.chat import ChatService
from assistant.compare import SideBySide
from assistant.conversations import ConversationLog
from assistant.engine import GenerationOptions
from assistant.errors import NotFoundError, TailorError, ValidationError
from assistant.prompting import Passage, Retrieval, build_messages

GREEDY = GenerationOptions(temperature=0, max_new_tokens=16, repetition_penalty=1.0)
ADAPTER = "compare-pirate"  # a name of its own: the tiny engine is shared by the whole session


@pytest.fixture
def chat(tiny_engine, workspace):
    return ChatService(tiny_engine, ConversationLog(workspace.db), AdapterCatalog(workspace.adapters_dir))


@pytest.fixture
def adapter(chat, tiny_model_dir, workspace, random_lora):
    """A published adapter with random non-zero weights (lora_B is not zero), so it changes replies."""
    random_lora(tiny_model_dir, workspace.adapters_dir / ADAPTER, seed=5)
    return ADAPTER


def test_base_side_is_the_base_model_with_the_adapter_loaded(chat, adapter, tiny_engine):
    info = chat.adapters.get(adapter)
    tiny_engine.load_adapter(info.name, info.path, version=info.version)  # loaded before the comparison
    assert adapter in tiny_engine.adapters
    compare = SideBySide(chat)
    left, right = compare.send("Tell me about bikes.", right_model=adapter, options=GREEDY)
    base_reply, tuned_reply = compare.wait(left, right, timeout=60)

    messages = build_messages([], "Tell me about bikes.", "", None)
    plain_base = tiny_engine.generate(messages, GREEDY, adapter=None).text
    plain_tuned = tiny_engine.generate(messages, GREEDY, adapter=adapter).text
    assert base_reply.content == plain_base
    assert tuned_reply.content == plain_tuned
    assert plain_base != plain_tuned  # the adapter really changes the output: the test can tell them apart
    assert (base_reply.adapter, tuned_reply.adapter) == (None, adapter)
    # each side is an ordinary conversation in the log, with the model it answered with
    assert chat.log.get(left.conversation_id).adapter is None
    assert chat.log.get(right.conversation_id).adapter == adapter


def test_stream_gives_both_sides_text_as_it_grows(chat, adapter):
    compare = SideBySide(chat)
    left, right = compare.send("hello", right_model=adapter, options=GREEDY)
    updates = list(compare.stream(left, right))
    base_reply, tuned_reply = compare.wait(left, right, timeout=60)
    assert updates and updates[-1] == (base_reply.content, tuned_reply.content)


def test_bad_requests_write_nothing(chat, adapter):
    compare = SideBySide(chat)
    first, _ = compare.send("hi", right_model=adapter, options=GREEDY)
    compare.wait(first, _, timeout=60)
    before = [(c.id, c.message_count) for c in chat.log.list()]
    bad = [
        (ValidationError, "empty", dict(text="   ", right_model=adapter)),
        (ValidationError, "unknown model 'nope'", dict(text="hi", right_model="nope")),
        (ValidationError, "unknown model 'nope'", dict(text="hi", left_model="nope", right_model=adapter)),
        (ValidationError, "pick a model for the right side", dict(text="hi", right_model=None)),
        (ValidationError, "two different models", dict(text="hi", left_model=adapter, right_model=adapter)),
        (
            ValidationError,
            "max_new_tokens",
            dict(text="hi", right_model=adapter, options=GenerationOptions(max_new_tokens=0)),
        ),
        (ValidationError, "retrieval is not available", dict(text="hi", right_model=adapter, rag=True)),
        (ValidationError, "retrieval is not available", dict(text="hi", right_model=adapter, right_rag=True)),
        (
            ValidationError,
            "two different models",
            dict(text="hi", left_model=adapter, right_model=adapter, rag=True, right_rag=True),
        ),
        (NotFoundError, "does not exist", dict(text="hi", right_model=adapter, right_conversation_id="missing")),
        (
            ValidationError,
            "its own conversation",
            dict(
                text="hi",
                right_model=adapter,
                left_conversation_id=first.conversation_id,
                right_conversation_id=first.conversation_id,
            ),
        ),
        # the left side exists, the right one does not: the left side must not get the message either
        (
            NotFoundError,
            "does not exist",
            dict(text="hi", right_model=adapter, left_conversation_id=first.conversation_id, right_conversation_id="x"),
        ),
    ]
    for kind, match, kwargs in bad:
        with pytest.raises(kind, match=match):
            compare.send(options=kwargs.pop("options", GREEDY), **kwargs)
    assert [(c.id, c.message_count) for c in chat.log.list()] == before


class OnePassage:
    """A retriever that always finds the same passage (no index, no embedding model)."""

    def retrieve(self, query, k=4):
        return Retrieval([Passage(id=1, source="rent.md", text="Tandems rent for 40 euro a day.", score=0.9)])


def test_each_side_reads_the_documents_or_not(chat, adapter):
    chat.retriever = OnePassage()
    compare = SideBySide(chat)
    # rag for both, overridden for the left side
    left, right = compare.send("Do you rent tandems?", right_model=adapter, options=GREEDY, rag=True, left_rag=False)
    base_reply, tuned_reply = compare.wait(left, right, timeout=60)
    assert base_reply.retrieval is None and tuned_reply.retrieval["passages"][0]["source"] == "rent.md"
    # the same model on both sides, the documents on one side only, is a comparison
    left, right = compare.send("Tandems?", left_model=adapter, right_model=adapter, options=GREEDY, left_rag=True)
    with_docs, without = compare.wait(left, right, timeout=60)
    assert with_docs.retrieval is not None and without.retrieval is None
    assert (chat.log.get(left.conversation_id).rag, chat.log.get(right.conversation_id).rag) == (True, False)


def test_a_side_that_cannot_start_leaves_no_half_comparison(chat, adapter, workspace):
    broken = workspace.adapters_dir / "broken"
    broken.mkdir(parents=True)
    (broken / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    # pickle weights only: refused before the engine touches its model (the engine is shared)
    (broken / "adapter_model.bin").write_bytes(b"")
    compare = SideBySide(chat)
    with pytest.raises(TailorError):
        compare.send("hi", right_model="broken", options=GREEDY)  # base vs broken
    assert chat.log.list() == []
    with pytest.raises(TailorError):  # adapter vs broken: the adapter side had started, and is undone
        compare.send("hi", left_model=adapter, right_model="broken", options=GREEDY)
    assert chat.log.list() == []


def test_multi_turn_keeps_both_conversations(chat, adapter, tiny_engine, monkeypatch):
    compare = SideBySide(chat)
    left, right = compare.send("first question", right_model=adapter, options=GREEDY, system_prompt="Be brief.")
    first_base, first_tuned = compare.wait(left, right, timeout=60)

    seen = {}
    real_stream = tiny_engine.stream

    def spy(messages, options=None, adapter=None):
        seen[adapter] = messages
        return real_stream(messages, options, adapter)

    monkeypatch.setattr(tiny_engine, "stream", spy)
    left2, right2 = compare.send(
        "second question",
        right_model=adapter,
        left_conversation_id=left.conversation_id,
        right_conversation_id=right.conversation_id,
        options=GREEDY,
    )
    compare.wait(left2, right2, timeout=60)
    assert (left2.conversation_id, right2.conversation_id) == (left.conversation_id, right.conversation_id)
    # each side saw its own history: its own first reply, the system prompt kept
    assert [m["content"] for m in seen[None]] == ["Be brief.", "first question", first_base.content, "second question"]
    assert [m["content"] for m in seen[adapter]] == [
        "Be brief.",
        "first question",
        first_tuned.content,
        "second question",
    ]
    for conv_id, name in ((left.conversation_id, None), (right.conversation_id, adapter)):
        conv = chat.log.get(conv_id)
        assert [m.role for m in conv.messages] == ["user", "assistant", "user", "assistant"]
        assert [m.adapter for m in conv.messages if m.role == "assistant"] == [name, name]
    assert len(chat.log.list()) == 2


def test_stop_stops_both_sides(chat, adapter):
    compare = SideBySide(chat)
    long = GenerationOptions(temperature=1.0, max_new_tokens=200, seed=2)
    left, right = compare.send("go on", right_model=adapter, options=long)
    assert compare.stop(left.conversation_id, right.conversation_id)
    base_reply, tuned_reply = compare.wait(left, right, timeout=60)
    assert {base_reply.finish_reason, tuned_reply.finish_reason} <= {"stopped", "stop", "length"}
    assert not compare.stop(left.conversation_id, right.conversation_id, None)


@pytest.fixture
def llama_engine(tiny_model_dir, tiny_gguf):
    """The tiny model on the llama.cpp backend (f32 GGUF), which decodes both sides together."""
    from assistant.backends import load_engine
    from assistant.hardware import pick_hardware
    from assistant.models import ResolvedModel

    engine = load_engine(
        ResolvedModel("tiny", tiny_model_dir, "folder", tiny_gguf),
        pick_hardware("cpu"),
        backend="llamacpp",
        max_context=512,
        parallel=2,
    )
    assert engine.backend == "llamacpp"
    yield engine
    engine.close()


def test_base_side_is_the_base_model_on_llamacpp_too(llama_engine, workspace, adapter):
    """There both sides are decoded in one batch, switching adapters between them each step."""
    chat = ChatService(llama_engine, ConversationLog(workspace.db), AdapterCatalog(workspace.adapters_dir))
    compare = SideBySide(chat)
    left, right = compare.send("Tell me about bikes.", right_model=adapter, options=GREEDY)
    base_reply, tuned_reply = compare.wait(left, right, timeout=120)
    messages = build_messages([], "Tell me about bikes.", "", None)
    assert base_reply.content == llama_engine.generate(messages, GREEDY, adapter=None).text
    assert tuned_reply.content == llama_engine.generate(messages, GREEDY, adapter=adapter).text
    assert base_reply.content != tuned_reply.content


def test_cli_prints_both_replies_labelled(tiny_model_dir, workspace, adapter, capsys):
    import subprocess
    import sys
    from pathlib import Path

    def tailor(*args):
        import os

        return subprocess.run(
            [sys.executable, "-m", "cli.main", *map(str, args)],
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "TAILOR_ENGINE": "torch"},
        )

    common = ["--max-new-tokens", "8", "--workspace", workspace.root, "--model", tiny_model_dir]
    r = tailor("compare", adapter, "hello", "--json", *common)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["left"]["model"], out["right"]["model"]) == ("base", adapter)
    log = ConversationLog(workspace.db)
    for side in ("left", "right"):
        conv = log.get(out[side]["conversation_id"])
        assert conv.messages[-1].content == out[side]["reply"]
    # an open vote on those replies, from the command line (no model needed)
    from cli.main import main

    ids = [out["left"]["conversation_id"], out["right"]["conversation_id"]]
    assert main(["compare-vote", *ids, "right", "--json", "--workspace", str(workspace.root)]) == 0
    vote = json.loads(capsys.readouterr().out)
    assert (vote["left"], vote["right"], vote["winner"], vote["blind"]) == ("base", adapter, adapter, False)
    assert vote["right_message_id"] == out["right"]["message_id"]
    assert main(["compare-vote", *ids, "tie", "--workspace", str(workspace.root)]) == 0
    assert "replaces the earlier vote: right" in capsys.readouterr().out
    assert main(["compare-vote", ids[0], ids[0], "tie", "--workspace", str(workspace.root)]) == 2
    r = tailor("compare", adapter, "hello", *common)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("=== base ===\n") and f"\n=== {adapter} ===\n" in r.stdout
    assert "[vote: tailor compare-vote " in r.stderr
    r = tailor("compare", "no-such-adapter", "hello", *common)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("tailor: error: unknown model 'no-such-adapter'")
