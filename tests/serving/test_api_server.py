"""The OpenAI-compatible API on the real server, driven by the official `openai` client."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from assistant.chat import NO_SOURCE_REPLY
from assistant.conversations import ConversationLog
from assistant.engine import GenerationOptions
from assistant.hardware import pick_hardware
from assistant.models import ResolvedModel
from assistant.torch_engine import TorchEngine
from assistant.workspace import Workspace

pytestmark = pytest.mark.server

PROMPTS = ["What is the capital of France?", "Pump your tyres before every ride."]


@pytest.fixture
def local_engine(tiny_model_dir):
    """The same tiny model in this process, to know what the server must answer."""
    return TorchEngine.load(ResolvedModel("tiny", tiny_model_dir, "folder"), pick_hardware("cpu"), max_context=512)


def test_models_chat_base_and_adapter_stream_and_log(
    tailor_server, tiny_model_dir, tmp_path, random_lora, openai_for, local_engine
):
    ws = tmp_path / "ws"
    adapter_dir = random_lora(tiny_model_dir, ws / "adapters" / "pirate")
    server = tailor_server(ws, tiny_model_dir)
    client = openai_for(server)

    assert [m.id for m in client.models.list()] == ["base", "pirate"]
    assert client.models.retrieve("pirate").id == "pirate"

    local_engine.load_adapter("pirate", adapter_dir)
    greedy = GenerationOptions(temperature=0, max_new_tokens=12)
    for prompt in PROMPTS:
        messages = [{"role": "user", "content": prompt}]
        tuned = client.chat.completions.create(model="pirate", messages=messages, temperature=0, max_tokens=12)
        expected = local_engine.generate(messages, greedy, adapter="pirate")
        assert tuned.choices[0].message.content == expected.text
        assert tuned.usage.completion_tokens == expected.completion_tokens
        assert tuned.usage.prompt_tokens == expected.prompt_tokens
        base = client.chat.completions.create(model="base", messages=messages, temperature=0, max_tokens=12)
        assert base.choices[0].message.content == local_engine.generate(messages, greedy).text
        # the adapter really changes the answer, so the two checks above tell them apart
        assert base.choices[0].message.content != tuned.choices[0].message.content
        assert tuned.model == "pirate" and tuned.object == "chat.completion"
        assert tuned.tailor["conversation_id"] and tuned.tailor["citations"] == []

    # Streaming gives the same text as a plain call with the same seed, chunk by chunk.
    sampled = dict(
        model="base",
        temperature=1.0,
        seed=7,
        max_tokens=24,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}],
    )
    whole = client.chat.completions.create(**sampled)
    chunks = list(client.chat.completions.create(**sampled, stream=True, stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert sum(1 for d in deltas if d) >= 2, "the reply did not arrive in pieces"
    assert "".join(deltas) == whole.choices[0].message.content != ""
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason in {"stop", "length"}
    assert finals[0].tailor["message_id"] and finals[0].tailor["citations"] == []
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens

    # A multi-turn request is logged as a new conversation holding the whole exchange,
    # and tailor.conversation_id continues a logged conversation server-side.
    history = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second"},
    ]
    multi = client.chat.completions.create(model="pirate", messages=history, temperature=0, max_tokens=8)
    conv_id = multi.tailor["conversation_id"]
    more = client.chat.completions.create(
        model="pirate",
        messages=[{"role": "user", "content": "third"}],
        temperature=0,
        max_tokens=8,
        extra_body={"tailor": {"conversation_id": conv_id}},
    )
    assert more.tailor["conversation_id"] == conv_id

    log = ConversationLog(Workspace(ws).db)
    conv = log.get(conv_id)
    assert conv.system_prompt == "You are terse."
    assert [(m.role, m.content) for m in conv.messages[:4]] == [
        ("user", "first"),
        ("assistant", "ok"),
        ("user", "second"),
        ("assistant", multi.choices[0].message.content),
    ]
    assert [m.role for m in conv.messages[4:]] == ["user", "assistant"] and conv.messages[4].content == "third"
    assert {m.source for m in conv.messages} == {"api"}
    reply = conv.messages[-1]
    assert reply.adapter == "pirate" and reply.latency_ms > 0 and reply.completion_tokens >= 1
    all_convs = log.list(limit=100)
    assert len(all_convs) == 2 * len(PROMPTS) + 3  # every request is logged, like a chat-tab message

    # The web UI is still served from the same port.
    assert httpx.get(server.url, timeout=30).status_code == 200


def test_clear_errors(tailor_server, tiny_model_dir, tmp_path, openai_for, wait_until):
    server = tailor_server(
        tmp_path / "ws", tiny_model_dir, env={"TAILOR_MAX_REQUEST_KB": "4", "TAILOR_MAX_UPLOAD_MB": "1"}
    )
    client = openai_for(server)
    user = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="no-such-adapter", messages=user)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="base", messages=user, temperature=3)
    with pytest.raises(openai.BadRequestError, match="last message"):
        client.chat.completions.create(model="base", messages=[{"role": "assistant", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="unknown tailor option"):
        client.chat.completions.create(model="base", messages=user, extra_body={"tailor": {"rga": True}})
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="base", messages=user, extra_body={"tailor": {"conversation_id": "nope"}})
    with pytest.raises(openai.APIStatusError) as too_big:
        client.chat.completions.create(model="base", messages=[{"role": "user", "content": "x" * 8000}])
    assert too_big.value.status_code == 413 and "TAILOR_MAX_REQUEST_KB" in str(too_big.value)
    # web uploads are capped too (Gradio's upload route, limit from TAILOR_MAX_UPLOAD_MB)
    big = httpx.post(
        server.url + "gradio_api/upload",
        timeout=60,
        files={"files": ("big.txt", b"x" * (2 * 1024 * 1024), "text/plain")},
    )
    assert big.status_code == 413
    small = httpx.post(server.url + "gradio_api/upload", timeout=60, files={"files": ("s.txt", b"x", "text/plain")})
    assert small.status_code == 200
    r = httpx.post(
        server.url + "v1/chat/completions",
        content=b"{not json",
        timeout=30,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    # nothing above was logged: rejected requests leave no half-saved conversations
    assert ConversationLog(Workspace(tmp_path / "ws").db).list() == []
    assert client.chat.completions.create(model="base", messages=user, max_tokens=4).choices[0].finish_reason
    # Retrieval on with an empty knowledge base: no source. "decline" gives the no-source reply
    # (no guess); the default "answer" lets the model answer, flagged as not from the documents.
    r = client.chat.completions.create(
        model="base", messages=user, extra_body={"tailor": {"rag": True, "no_source": "decline"}}
    )
    assert r.tailor["abstained"] and r.tailor["declined"] and r.tailor["citations"] == []
    assert "empty" in r.tailor["reason"] and r.choices[0].message.content == NO_SOURCE_REPLY
    r = client.chat.completions.create(model="base", messages=user, max_tokens=4, extra_body={"tailor": {"rag": True}})
    assert r.tailor["abstained"] and not r.tailor["declined"] and r.choices[0].message.content != NO_SOURCE_REPLY
    with pytest.raises(openai.BadRequestError, match="no_source must be one of answer, decline"):
        client.chat.completions.create(model="base", messages=user, extra_body={"tailor": {"no_source": "guess"}})

    # A client that goes away mid-stream stops its generation; the partial reply is kept.
    log = ConversationLog(Workspace(tmp_path / "ws").db)
    before = {c.id for c in log.list()}
    with httpx.stream(
        "POST",
        server.url + "v1/chat/completions",
        timeout=60,
        json={
            "model": "base",
            "stream": True,
            "temperature": 0,
            "max_tokens": 256,
            "messages": [{"role": "user", "content": "a long answer please"}],
        },
    ) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                break  # the first chunk arrived: hang up

    def logged_reply():
        new = [c for c in log.list() if c.id not in before]
        return new and len(log.get(new[0].id).messages) == 2 and log.get(new[0].id).messages[-1]

    reply = wait_until(logged_reply, timeout=60, interval=0.2, message="the hung-up request's reply was not logged")
    assert reply.finish_reason == "stopped" and reply.completion_tokens < 256, reply


def test_citations_with_retrieval(tailor_server, tiny_model_dir, tmp_path, openai_for):
    from retrieval import open_knowledge

    ws = tmp_path / "ws"
    kb = open_knowledge(Workspace(ws))
    docs = Path(__file__).resolve().parents[2] / "demo" / "lantern_bay" / "docs"
    for name in ("opening_hours.md", "warranty.md", "about.md"):
        assert kb.add_file(docs / name).ok
    server = tailor_server(ws, tiny_model_dir)
    client = openai_for(server)
    question = [{"role": "user", "content": "What are the opening hours of Lantern Bay Bikes on Sunday?"}]
    r = client.chat.completions.create(
        model="base", messages=question, temperature=0, max_tokens=8, extra_body={"tailor": {"rag": True, "k": 4}}
    )
    info = r.tailor
    # k=4: with k=2 neither passage mentions Sunday and the gate rightly declines
    assert not info["abstained"], info
    assert 1 <= len(info["citations"]) <= 4
    assert info["citations"][0]["source"] == "opening_hours.md"
    assert {"index", "id", "source", "heading", "text", "score", "evidence"} <= set(info["citations"][0])
    # The sentences the answer rests on, as offsets into each citation's own text (the first
    # citation always holds one: the retriever cites the passages its evidence came from).
    assert info["citations"][0]["evidence"], info["citations"][0]
    for c in info["citations"]:
        for ev in c["evidence"]:
            assert set(ev) == {"start", "end", "text"} and 0 <= ev["start"] < ev["end"] <= len(c["text"])
            assert c["text"][ev["start"] : ev["end"]] == ev["text"]
    stored = ConversationLog(Workspace(ws).db).message(info["message_id"])
    assert [p["source"] for p in stored.retrieval["passages"]] == [c["source"] for c in info["citations"]]
    assert [[(e["start"], e["end"]) for e in p["evidence"]] for p in stored.retrieval["passages"]] == [
        [(e["start"], e["end"]) for e in c["evidence"]] for c in info["citations"]
    ]

    stream = client.chat.completions.create(
        model="base",
        messages=question,
        temperature=0,
        max_tokens=8,
        stream=True,
        extra_body={"tailor": {"rag": True, "k": 4}},
    )
    final = [c for c in stream if c.choices and c.choices[0].finish_reason][0]
    assert final.tailor["citations"] == info["citations"]

    # Retrieval is per call: without it, no citations.
    plain = client.chat.completions.create(model="base", messages=question, max_tokens=4)
    assert plain.tailor["citations"] == [] and not plain.tailor["abstained"]


def test_access_control_off_localhost(tailor_server, tiny_model_dir, tmp_path, openai_for):
    from gradio_client import Client

    key = "test-key-0123456789"
    server = tailor_server(
        tmp_path / "ws",
        tiny_model_dir,
        args=["--host", "0.0.0.0", "--auth", "ann:pw-123"],
        env={"TAILOR_API_KEYS": key},
    )
    with pytest.raises(openai.AuthenticationError, match="API key"):
        openai_for(server).models.list()
    with pytest.raises(openai.AuthenticationError):
        openai_for(server, "wrong-key-0123456789").models.list()
    assert [m.id for m in openai_for(server, key).models.list()] == ["base"]
    assert (
        httpx.get(server.url + "v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=30).status_code == 200
    )
    # The web UI needs the credentials (and the API key is not one).
    assert httpx.get(server.url + "config", timeout=30).status_code == 401
    with pytest.raises(Exception):
        Client(server.url, verbose=False)
    client = Client(server.url, auth=("ann", "pw-123"), verbose=False)
    assert client.predict(api_name="/list_models")["choices"] == [["base", "base"]]
