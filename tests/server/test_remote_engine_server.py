"""A Tailor whose engine is another Tailor (TAILOR_ENGINE_URL), both real server processes on the
tiny model: the path a vLLM server takes, through the same OpenAI routes and the same two adapter
routes. The front starts while the engine is still down (one log line, clear errors, app up);
then the engine starts on the port the front points at, and chat, streaming and the adapter
lifecycle go through it. One pair of processes for the whole module keeps it fast."""

from __future__ import annotations

import json

import httpx
import pytest

from assistant.engine import GenerationOptions
from assistant.hardware import pick_hardware
from assistant.models import ResolvedModel
from assistant.torch_engine import TorchEngine
from assistant.workspace import Workspace

from ..conftest import free_port, read_db, start_server_process, wait_until

pytestmark = pytest.mark.server

KEY = "engine-key-123"  # the engine's /v1 key: the front must send it (TAILOR_ENGINE_API_KEY)
GREEDY = dict(temperature=0, max_tokens=12)
ASK = [{"role": "user", "content": "What is the capital of France?"}]


class Pair:
    def __init__(self, root, model_dir):
        self.root, self.model_dir = root, model_dir
        self.engine_port = free_port()
        self.engine_url = f"http://127.0.0.1:{self.engine_port}/"
        self.front = start_server_process(
            root / "front",
            model_dir,
            env={"TAILOR_ENGINE_URL": self.engine_url, "TAILOR_ENGINE_API_KEY": KEY},
        )
        self.engine = None

    def start_engine(self):
        if self.engine is None:
            self.engine = start_server_process(
                self.root / "engine", self.model_dir, env={"TAILOR_API_KEYS": KEY}, port=self.engine_port
            )
        return self.engine

    def stop(self):
        for server in (self.front, self.engine):
            if server is not None:
                server.stop()


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tiny_model_dir):
    pair = Pair(tmp_path_factory.mktemp("remote-engine"), tiny_model_dir)
    yield pair
    pair.stop()
    print(f"\n---- front log ----\n{pair.front.log()[-3000:]}")
    if pair.engine is not None:
        print(f"\n---- engine log ----\n{pair.engine.log()[-3000:]}")


@pytest.fixture(scope="module")
def local_engine(tiny_model_dir):
    """The same tiny model in this process, to know what the engine must answer."""
    return TorchEngine.load(ResolvedModel("tiny", tiny_model_dir, "folder"), pick_hardware("cpu"), max_context=512)


def _chat(server, model="base", key=None, **extra):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": model, "messages": ASK, **GREEDY, **extra}
    return httpx.post(server.url + "v1/chat/completions", json=body, headers=headers, timeout=120)


def _served(pair) -> list[str]:
    r = httpx.get(pair.engine.url + "v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert r.status_code == 200, r.text
    return [card["id"] for card in r.json()["data"]]


def test_an_engine_that_is_down_is_a_clear_error_and_the_app_stays_up(pair):
    from gradio_client import Client

    if pair.engine is not None:  # run alone or first, as the module orders it
        pytest.skip("the engine is already up")
    front = pair.front
    url = pair.engine_url.rstrip("/") + "/v1"
    startup = [line for line in front.log().splitlines() if "could not be reached" in line]
    assert len(startup) == 1 and url in startup[0], front.log()[-2000:]
    for stream in (False, True):
        r = _chat(front, stream=stream)
        assert r.status_code == 502, r.text
        error = r.json()["error"]
        assert error["code"] == "engine_unavailable"
        assert url in error["message"] and "could not be reached" in error["message"]
    # The chat says the same; nothing half-done was logged; the app and /v1 still answer.
    client = Client(front.url, verbose=False)
    with pytest.raises(Exception, match="could not be reached"):
        client.predict("hello", "", "base", "", 0.0, 0.9, 16, api_name="/send")
    assert read_db(pair.root / "front", "SELECT COUNT(*) FROM conversations") == [(0,)]
    assert httpx.get(front.url, timeout=30).status_code == 200
    assert [m["id"] for m in httpx.get(front.url + "v1/models", timeout=30).json()["data"]] == ["base"]
    assert front.proc.poll() is None


def test_chat_and_streaming_go_through_the_engine(pair, local_engine):
    engine = pair.start_engine()
    front = pair.front
    r = _chat(front)  # errored until now; the engine is back, so the chat works without a restart
    assert r.status_code == 200, r.text
    reply = r.json()
    expected = local_engine.generate(ASK, GenerationOptions(temperature=0, max_new_tokens=12))
    assert reply["choices"][0]["message"]["content"] == expected.text
    assert reply["usage"]["completion_tokens"] == expected.completion_tokens
    assert reply["usage"]["prompt_tokens"] == expected.prompt_tokens
    # The engine generated it: its own log has the request, as an API conversation.
    logged = read_db(pair.root / "engine", "SELECT content FROM messages WHERE role='user' AND source='api'")
    assert (ASK[0]["content"],) in logged
    # The sampling options reach the engine: the same seed there directly and through the front
    # gives the same text (the tiny model's greedy reply decodes to nothing, a sampled one does not).
    sampled = dict(temperature=1.0, top_p=0.95, seed=7, max_tokens=16)
    direct = _chat(engine, key=KEY, **sampled).json()["choices"][0]["message"]["content"]
    through = _chat(front, **sampled).json()["choices"][0]["message"]["content"]
    assert direct == through and through
    assert through != _chat(front, **{**sampled, "seed": 8}).json()["choices"][0]["message"]["content"]
    # Streaming: the chunks arrive one by one and add up to the stored reply.
    deltas = []
    with httpx.stream(
        "POST",
        front.url + "v1/chat/completions",
        json={"model": "base", "messages": ASK, "stream": True, "temperature": 1.0, "seed": 7, "max_tokens": 16},
        timeout=120,
    ) as stream:
        assert stream.status_code == 200
        for line in stream.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                deltas += [c["delta"].get("content") or "" for c in chunk["choices"]]
                if "tailor" in chunk:
                    message_id = chunk["tailor"]["message_id"]
    assert len([d for d in deltas if d]) > 1
    stored = read_db(pair.root / "front", "SELECT content FROM messages WHERE id=?", message_id)
    assert "".join(deltas) == stored[0][0] and stored[0][0]
    assert engine.proc.poll() is None


def test_a_published_adapter_is_served_by_the_engine_until_deleted(pair, local_engine, random_lora, tiny_model_dir):
    from tuning.registry import AdapterRegistry

    pair.start_engine()
    front = pair.front
    registry = AdapterRegistry(Workspace(pair.root / "front"))
    registry.publish("tone-v1", random_lora(tiny_model_dir, seed=3))
    # Published -> registered with the engine (by the front's watcher, without a chat).
    wait_until(lambda: "tone-v1" in _served(pair), timeout=30, message="the engine never listed tone-v1")
    r = _chat(front, model="tone-v1")
    assert r.status_code == 200, r.text
    local_engine.load_adapter("tone-v1", pair.root / "front" / "adapters" / "tone-v1")
    tuned = local_engine.generate(ASK, GenerationOptions(temperature=0, max_new_tokens=12), adapter="tone-v1")
    assert r.json()["choices"][0]["message"]["content"] == tuned.text
    assert tuned.text != local_engine.generate(ASK, GenerationOptions(temperature=0, max_new_tokens=12)).text
    assert ("tone-v1",) in read_db(pair.root / "engine", "SELECT DISTINCT adapter FROM conversations")
    # Deleted -> unregistered; neither server answers with it any more.
    registry.delete("tone-v1")
    wait_until(lambda: "tone-v1" not in _served(pair), timeout=30, message="the engine still lists tone-v1")
    assert _chat(front, model="tone-v1").status_code == 404
    assert _chat(pair.engine, model="tone-v1", key=KEY).status_code == 404


def test_the_engine_adapter_routes_check_keys_and_paths(pair, tmp_path):
    engine = pair.start_engine()
    auth = {"Authorization": f"Bearer {KEY}"}

    def post(route, body, headers=auth):
        return httpx.post(engine.url + "v1/" + route, json=body, headers=headers, timeout=60)

    assert post("load_lora_adapter", {"lora_name": "x", "lora_path": str(tmp_path)}, headers={}).status_code == 401
    not_adapter = post("load_lora_adapter", {"lora_name": "x", "lora_path": str(tmp_path)})
    assert not_adapter.status_code == 400 and "not a LoRA adapter folder" in not_adapter.json()["error"]["message"]
    relative = post("load_lora_adapter", {"lora_name": "x", "lora_path": "adapters/x"})
    assert relative.status_code == 400 and "absolute path" in relative.json()["error"]["message"]
    missing = post("load_lora_adapter", {"lora_name": "x", "lora_path": str(tmp_path / "nope")})
    assert missing.status_code == 400 and "not a folder" in missing.json()["error"]["message"]
    assert post("load_lora_adapter", {"lora_name": "x"}).status_code == 400
    gone = post("unload_lora_adapter", {"lora_name": "never-loaded"})
    assert gone.status_code == 404 and "cannot be found" in gone.json()["error"]["message"]


def test_an_evaluation_generates_on_the_engine_and_scores_locally(pair, tiny_model_dir, tmp_path, random_lora):
    """Base vs tuned through the remote engine: the replies come from the engine (its log has
    the questions), the reference loss from the local model (finite, and different under the
    adapter: it was applied locally too)."""
    from assistant.adapters import AdapterCatalog
    from assistant.chat import ChatService
    from assistant.conversations import ConversationLog
    from assistant.remote_engine import load_remote_engine
    from evals import open_evals
    from evals.runner import RunOptions
    from evals.sets import load_facts

    pair.start_engine()
    ws = Workspace(tmp_path / "ws")
    random_lora(tiny_model_dir, ws.adapters_dir / "eval-lora", target_modules=["q_proj", "v_proj"])
    catalog = AdapterCatalog(ws.adapters_dir)
    engine = load_remote_engine(
        ResolvedModel("tiny", tiny_model_dir, "folder"),
        pick_hardware("cpu"),
        url=pair.engine_url,
        api_key=KEY,
        catalog=catalog,
        max_context=512,
    )
    try:
        chat = ChatService(engine, ConversationLog(ws.db), catalog)
        facts = tmp_path / "facts.jsonl"
        asked = ["What is the name of the shop dog?", "Which day is the shop closed?"]
        facts.write_text(
            "".join(json.dumps({"id": f"q{i}", "question": q, "answer": "x"}) + "\n" for i, q in enumerate(asked))
        )
        evals = open_evals(ws, chat)
        arms = evals.runs.resolve_arms("base,eval-lora", "off")
        run = evals.runs.start(load_facts(facts), arms, RunOptions(max_new_tokens=8, semantic=False))
        run = evals.runs.wait(run.id, timeout=300)
        assert run.status == "done", run.error
        results = {(r.arm, r.item_id): r for r in evals.store.results(run.id)}
        assert len(results) == 4
        for r in results.values():
            assert r.metrics["ref_loss"] is not None and r.metrics["latency_s"] > 0
        assert results[("eval-lora", "q0")].metrics["ref_loss"] != results[("base", "q0")].metrics["ref_loss"]
        on_engine = read_db(pair.root / "engine", "SELECT adapter, COUNT(*) FROM conversations GROUP BY adapter")
        by_adapter = dict(on_engine)
        assert by_adapter.get("eval-lora", 0) >= 2 and by_adapter.get(None, 0) >= 2
    finally:
        engine.close()
