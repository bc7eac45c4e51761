"""The /v1 router in-process (FastAPI's TestClient): keys, body limits, request parsing, and
what a request writes to the conversation log."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from assistant.adapters import AdapterCatalog
from assistant.chat import ChatRequest, ChatService
from assistant.conversations import ConversationLog
from assistant.engine import GenerationOptions, require_safetensors
from assistant.errors import ModelError, ValidationError
from assistant.evidence import select_evidence
from assistant.prompting import Passage, Retrieval
from serving.api import ApiConfig, ApiError, install_api, parse_chat_request
from serving.queue import RequestLimiter


@pytest.fixture
def chat(tiny_engine, workspace):
    return ChatService(tiny_engine, ConversationLog(workspace.db), AdapterCatalog(workspace.adapters_dir))


def _client(chat, **config) -> TestClient:
    app = FastAPI()
    install_api(app, chat, RequestLimiter(1, 4, 30), ApiConfig(**config))
    return TestClient(app)


def test_open_on_loopback_without_keys(chat):
    r = _client(chat).get("/v1/models")
    assert r.status_code == 200 and [m["id"] for m in r.json()["data"]] == ["base"]


def test_closed_off_loopback_without_keys(chat):
    r = _client(chat, open_without_key=False).get("/v1/models")
    assert r.status_code == 401
    assert "TAILOR_API_KEYS" in r.json()["error"]["message"] and r.json()["error"]["code"] == "invalid_api_key"


def test_keys_are_checked(chat):
    client = _client(chat, keys=["k-0123456789", "k-abcdefghij"], open_without_key=False)
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer nope-0123456789"}).status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Basic k-0123456789"}).status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer k-abcdefghij"}).status_code == 200
    body = {"model": "base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    assert client.post("/v1/chat/completions", json=body).status_code == 401
    assert chat.log.list() == []  # refused before anything was logged


def test_body_limit_checks_declared_and_actual_size(chat):
    client = _client(chat, max_request_bytes=1024)
    big = {"model": "base", "messages": [{"role": "user", "content": "x" * 2000}]}
    r = client.post("/v1/chat/completions", json=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunks():  # no Content-Length: the size is only known while reading
        yield b'{"model": "base", "messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"y" * 100
        yield b'"}]}'

    r = client.post("/v1/chat/completions", content=chunks())
    assert r.status_code == 413
    assert chat.log.list() == []


def test_chat_completion_in_process_logs_with_source_api(chat):
    client = _client(chat)
    r = client.post(
        "/v1/chat/completions",
        json={
            "model": "base",
            "temperature": 0,
            "max_completion_tokens": 5,
            "messages": [
                {"role": "developer", "content": "Be kind."},
                {"role": "user", "content": [{"type": "text", "text": "hel"}, {"type": "text", "text": "lo"}]},
            ],
        },
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["usage"]["completion_tokens"] == 5 and out["choices"][0]["finish_reason"] == "length"
    conv = chat.log.get(out["tailor"]["conversation_id"])
    assert conv.system_prompt == "Be kind."
    assert [(m.role, m.source) for m in conv.messages] == [("user", "api"), ("assistant", "api")]
    assert conv.messages[0].content == "hello" and conv.messages[1].id == out["tailor"]["message_id"]


def test_stream_in_process_ends_with_done(chat):
    client = _client(chat)
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": "base",
            "stream": True,
            "temperature": 1.0,
            "seed": 3,
            "max_tokens": 12,
            "messages": [{"role": "user", "content": "hello"}],
        },
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    import json

    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events[-1]["choices"][0]["finish_reason"] == "length" and "tailor" in events[-1]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
    assert text == chat.log.message(events[-1]["tailor"]["message_id"]).content


class _FixedRetriever:
    """Returns the same retrieval for every question (the real one: tests/serving/test_api_server.py)."""

    def __init__(self, retrieval: Retrieval):
        self.retrieval = retrieval

    def retrieve(self, query: str, k: int = 4) -> Retrieval:
        return self.retrieval


HOURS = (
    "Lantern Bay Bikes rents city bikes and e-bikes. On weekdays the shop opens at 09:00 and "
    "closes at 18:00. On Sunday the shop opens at 10:00 and closes at 16:00. Returns after "
    "closing cost 15 euro per hour."
)


@pytest.mark.parametrize("abstain", [False, True])
def test_citations_carry_evidence_offsets_into_their_text(tiny_engine, workspace, abstain):
    question = "When does the shop open on Sunday?"
    passages = [
        Passage(id=11, source="opening_hours.md", text=HOURS, heading="Hours", score=0.9),
        Passage(id=12, source="about.md", text="We have rented bikes since 1998.", score=0.4),
    ]
    with_evidence = select_evidence(question, passages, max_sentences=2)
    assert with_evidence[0].evidence  # the setting the test is about
    retrieval = Retrieval(passages=with_evidence, abstain=abstain, reason="too weak" if abstain else "")
    chat = ChatService(
        tiny_engine,
        ConversationLog(workspace.db),
        AdapterCatalog(workspace.adapters_dir),
        retriever=_FixedRetriever(retrieval),
    )
    tailor = {"rag": True, "k": 2, "no_source": "decline"}
    body = {"model": "base", "max_tokens": 3, "messages": [{"role": "user", "content": question}], "tailor": tailor}
    r = _client(chat).post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    info = r.json()["tailor"]
    entries = info["closest"] if abstain else info["citations"]
    assert info["citations"] == ([] if abstain else entries) and entries
    for entry, passage in zip(entries, with_evidence, strict=True):
        assert entry["id"] == passage.id and entry["text"] == passage.text
        assert entry["evidence"] == [{"start": e.start, "end": e.end, "text": e.text} for e in passage.evidence]
        for ev in entry["evidence"]:
            assert 0 <= ev["start"] < ev["end"] <= len(entry["text"])
            assert entry["text"][ev["start"] : ev["end"]] == ev["text"]
    assert any("Sunday" in ev["text"] for ev in entries[0]["evidence"])
    # the reply's stored retrieval keeps the same spans (the chat highlights them)
    stored = chat.log.message(info["message_id"]).retrieval
    assert [p["evidence"] for p in stored["passages"]] == [
        [{**e, "score": p.evidence[i].score} for i, e in enumerate(entry["evidence"])]
        for entry, p in zip(entries, with_evidence, strict=True)
    ]


def test_citations_of_passages_without_evidence_have_an_empty_list(tiny_engine, workspace):
    retrieval = Retrieval(passages=[Passage(id=1, source="a.md", text="Plain text.", score=0.9)])
    chat = ChatService(
        tiny_engine,
        ConversationLog(workspace.db),
        AdapterCatalog(workspace.adapters_dir),
        retriever=_FixedRetriever(retrieval),
    )
    body = {"model": "base", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}], "tailor": {"rag": True}}
    info = _client(chat).post("/v1/chat/completions", json=body).json()["tailor"]
    assert [c["evidence"] for c in info["citations"]] == [[]]


@pytest.mark.parametrize(
    "body,match",
    [
        ([], "JSON object"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model is required"),
        ({"model": "base", "messages": []}, "non-empty"),
        ({"model": "base", "messages": [{"role": "tool", "content": "x"}]}, "not supported"),
        ({"model": "base", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "only text"),
        ({"model": "base", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n must be 1"),
        ({"model": "base", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}, "tools"),
        ({"model": "base", "messages": [{"role": "user", "content": "x"}], "max_tokens": "10"}, "integer"),
        ({"model": "base", "messages": [{"role": "user", "content": "x"}], "tailor": {"k": 99}}, "between 1 and 20"),
        ({"model": "base", "messages": [{"role": "user", "content": "x"}], "tailor": {"rag": "yes"}}, "true or false"),
    ],
)
def test_bad_requests_are_explained(body, match):
    with pytest.raises(ApiError, match=match) as err:
        parse_chat_request(body)
    assert err.value.status == 400


def test_options_map_onto_generation_options():
    req = parse_chat_request(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "q"}],
            "temperature": 0,
            "top_p": 0.5,
            "max_tokens": 7,
            "seed": 1,
            "stream": True,
            "stream_options": {"include_usage": True},
            "tailor": {"rag": True, "k": 3},
        }
    )
    assert req.options == GenerationOptions(temperature=0.0, top_p=0.5, max_new_tokens=7, seed=1)
    assert req.stream and req.include_usage and req.rag is True and req.k == 3 and req.system == ""


def test_history_only_for_new_conversations(chat):
    greedy = GenerationOptions(temperature=0, max_new_tokens=3)
    turn, _ = chat.chat(
        ChatRequest(
            "q2",
            history=[{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}],
            options=greedy,
            source="api",
        )
    )
    conv = chat.log.get(turn.conversation_id)
    assert [m.content for m in conv.messages[:3]] == ["q1", "a1", "q2"]
    with pytest.raises(ValidationError, match="new conversation"):
        chat.send(ChatRequest("q3", conversation_id=conv.id, history=[{"role": "user", "content": "x"}]))
    with pytest.raises(ValidationError, match="earlier message 0"):
        chat.send(ChatRequest("q", history=[{"role": "system", "content": "x"}]))
    assert len(chat.log.list()) == 1  # the refused requests wrote nothing


def test_only_safetensors_weights_are_loaded(tmp_path, tiny_model_dir, tiny_engine):
    import shutil

    from assistant.hardware import pick_hardware
    from assistant.models import ResolvedModel
    from assistant.torch_engine import TorchEngine

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    for f in pickled.glob("*.safetensors"):
        f.unlink()
    (pickled / "pytorch_model.bin").write_bytes(b"not even a pickle")
    with pytest.raises(ModelError, match="safetensors only"):
        require_safetensors(pickled, "model")
    with pytest.raises(ModelError, match="safetensors only"):
        TorchEngine.load(ResolvedModel("pickled", pickled, "folder"), pick_hardware("cpu"))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="safetensors only"):
        tiny_engine.load_adapter("pickled", adapter)
    assert "pickled" not in tiny_engine.adapters
