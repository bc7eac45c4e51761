"""The remote engine in process, against a small scripted OpenAI server (stdlib http.server in a
thread): what it sends for each option, how it reads a stream (with and without `usage`, broken
off midway), and its errors. The real round trip, Tailor to Tailor, is
tests/server/test_remote_engine_server.py."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from assistant.errors import EngineUnavailable, ModelError, ValidationError
from assistant.generation import GenerationOptions
from assistant.hardware import pick_hardware
from assistant.remote_engine import RemoteEngine, api_root

from ..conftest import free_port

ASK = [{"role": "user", "content": "What is the capital of France?"}]


class Script:
    """What the scripted server answers, and what it was sent."""

    def __init__(self):
        self.requests: list[tuple[str, dict]] = []
        self.chunks: list[dict] = [
            {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
            {"choices": [{"index": 0, "delta": {"content": "Paris"}}]},
            {"choices": [{"index": 0, "delta": {"content": " is it."}, "finish_reason": "length"}]},
            {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}},
        ]
        self.done = True  # send "data: [DONE]" (False: end the body without it, as a dying server)
        self.status = 200
        self.loaded: set[str] = set()  # adapters registered through the two routes


@pytest.fixture
def scripted():
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output clean
            pass

        def _send(self, status: int, body: bytes, ctype="application/json"):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            script.requests.append((self.path, {}))
            cards = [{"id": "org/model", "parent": None}, {"id": "other-lora", "parent": "org/model"}]
            cards += [{"id": name, "parent": "org/model"} for name in sorted(script.loaded)]
            self._send(200, json.dumps({"object": "list", "data": cards}).encode())

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            script.requests.append((self.path, body))
            if self.path != "/v1/chat/completions":
                if self.path == "/v1/load_lora_adapter":
                    script.loaded.add(body["lora_name"])
                else:
                    script.loaded.discard(body["lora_name"])
                self._send(200, b"Success", "text/plain")
                return
            if script.status != 200:
                self._send(script.status, json.dumps({"error": {"message": "no such model"}}).encode())
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for chunk in script.chunks:  # a str goes as it is (a broken line)
                line = chunk if isinstance(chunk, str) else json.dumps(chunk)
                self.wfile.write(f"data: {line}\n\n".encode())
            if script.done:
                self.wfile.write(b"data: [DONE]\n\n")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    script.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield script
    server.shutdown()


def _engine(tiny_engine, url: str, **kwargs) -> RemoteEngine:
    return RemoteEngine(
        tiny_engine.tokenizer,
        name="tiny",
        url=url,
        hardware=pick_hardware("cpu"),
        context_window=512,
        **kwargs,
    )


def test_the_url_may_name_the_v1_root_or_the_server():
    assert api_root("http://gpu:8000") == api_root("http://gpu:8000/v1/") == "http://gpu:8000/v1"
    with pytest.raises(ModelError, match="http:// or https://"):
        api_root("gpu:8000")


def test_options_become_openai_fields_and_the_stream_becomes_the_reply(scripted, tiny_engine):
    engine = _engine(tiny_engine, scripted.url, top_k=50)
    options = GenerationOptions(temperature=0.7, top_p=0.8, max_new_tokens=20, seed=5)
    gen = engine.stream(ASK, options)
    texts = list(gen)
    result = gen.wait()
    assert texts == ["Paris", "Paris is it."]
    assert (result.text, result.finish_reason, result.error) == ("Paris is it.", "length", None)
    assert (result.prompt_tokens, result.completion_tokens) == (11, 3)  # the server's own counts
    path, sent = scripted.requests[-1]
    assert path == "/v1/chat/completions"
    assert sent["model"] == "org/model"  # the base: the first model without a parent
    assert sent["messages"] == ASK and sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"], sent["seed"]) == (0.7, 0.8, 20, 5)
    assert sent["top_k"] == 50 and sent["repetition_penalty"] == options.repetition_penalty
    assert "logit_bias" not in sent

    # Greedy below the sampling threshold; the copy bias as OpenAI's logit_bias on the sources' ids.
    reading = GenerationOptions(temperature=0.001, copy_bias=2.0, copy_source="Paris is the capital.")
    engine.generate(ASK, reading)
    sent = scripted.requests[-1][1]
    assert sent["temperature"] == 0.0 and sent["top_p"] == 1.0 and "top_k" not in sent
    assert sent["logit_bias"] == {str(t): 2.0 for t in engine.copy_ids(reading)} and sent["logit_bias"]
    # the chosen answer span's tokens carry the focus bias instead
    focused = GenerationOptions(
        temperature=0, copy_bias=2.0, copy_source="Paris is the capital.", focus_bias=5.0, focus_text="Paris"
    )
    engine.generate(ASK, focused)
    sent = scripted.requests[-1][1]
    assert sent["logit_bias"] == {str(t): b for t, b in engine.logit_biases(focused).items()}
    assert 5.0 in sent["logit_bias"].values() and 2.0 in sent["logit_bias"].values()
    # a server takes one bias for the whole reply: a followed span is favoured whole there
    engine.generate(ASK, replace(focused, focus_follow=True))
    assert scripted.requests[-1][1]["logit_bias"] == sent["logit_bias"]
    engine.close()


def test_without_usage_the_local_tokenizer_counts(scripted, tiny_engine):
    scripted.chunks = scripted.chunks[:3]
    engine = _engine(tiny_engine, scripted.url)
    result = engine.generate(ASK)
    assert result.prompt_tokens == tiny_engine.count_tokens(ASK)
    assert result.completion_tokens == len(tiny_engine.tokenizer("Paris is it.", add_special_tokens=False)["input_ids"])


def test_a_stream_broken_off_keeps_the_partial_reply_and_says_why(scripted, tiny_engine):
    engine = _engine(tiny_engine, scripted.url)
    scripted.chunks = [*scripted.chunks[:2], "{not json"]
    result = engine.generate(ASK)
    assert result.finish_reason == "error" and result.text == "Paris"
    assert scripted.url in result.error and "broke off" in result.error
    # A connection that just ends (no finish reason, no [DONE]) is not a finished reply either.
    scripted.chunks, scripted.done = scripted.chunks[:2], False
    result = engine.generate(ASK)
    assert result.finish_reason == "error" and result.text == "Paris"
    assert "ended before the reply was complete" in result.error


def test_a_refusal_and_an_unreachable_engine_name_the_url(scripted, tiny_engine):
    scripted.status = 404
    engine = _engine(tiny_engine, scripted.url)
    with pytest.raises(EngineUnavailable, match="HTTP 404: no such model") as refused:
        engine.stream(ASK)
    assert refused.value.status == 404 and scripted.url in str(refused.value)
    down = _engine(tiny_engine, f"http://127.0.0.1:{free_port()}")
    assert "could not be reached" in down.check()
    for call in (lambda: down.stream(ASK), lambda: down.unload_adapter("x")):
        with pytest.raises(EngineUnavailable, match="could not be reached") as exc:
            call()
        assert down.url in str(exc.value) and "TAILOR_ENGINE_URL" in str(exc.value)


def test_adapters_are_registered_by_the_path_the_remote_sees(
    scripted, tiny_engine, tmp_path, random_lora, tiny_model_dir
):
    folder = random_lora(tiny_model_dir, tmp_path / "adapters" / "tone-v1")
    engine = _engine(tiny_engine, scripted.url, remote_adapter_dir="/shared/adapters")
    engine.load_adapter("tone-v1", folder, version="1")
    engine.load_adapter("tone-v1", folder, version="1")  # the same version: nothing sent
    assert [r for r in scripted.requests if r[0].endswith("_lora_adapter")] == [
        ("/v1/load_lora_adapter", {"lora_name": "tone-v1", "lora_path": "/shared/adapters/tone-v1"})
    ]
    engine.load_adapter("tone-v1", folder, version="2")  # re-published: replaced
    assert [r[0] for r in scripted.requests[-2:]] == ["/v1/unload_lora_adapter", "/v1/load_lora_adapter"]
    engine.generate(ASK, adapter="tone-v1")
    assert scripted.requests[-1][1]["model"] == "tone-v1"
    with pytest.raises(ValidationError, match="not loaded"):
        engine.stream(ASK, adapter="never-loaded")
    assert _engine(tiny_engine, scripted.url).remote_path(folder) == str(Path(folder).resolve())


def test_reference_loss_is_computed_locally_never_remotely(scripted, tiny_engine):
    engine = _engine(tiny_engine, scripted.url, scorer=lambda: tiny_engine)
    assert engine.score(ASK, "Paris.") == tiny_engine.score(ASK, "Paris.")
    # answer spans are scored by the same local model (assistant/answer_choice.py)
    spans = ["Paris", "Lyon"]
    assert engine.span_logprobs(ASK, "The answer is ", spans) == tiny_engine.span_logprobs(ASK, "The answer is ", spans)
    assert not any(path.endswith("completions") for path, _ in scripted.requests)
    # Where the local model cannot load, the loss is unavailable (what an evaluation records as
    # no value), once: the load is not retried for every item.
    calls = []

    def broken():
        calls.append(1)
        raise ModelError("no weights here")

    engine = _engine(tiny_engine, scripted.url, scorer=broken)
    for _ in range(2):
        with pytest.raises(ValidationError, match="scoring is unavailable.*no weights here"):
            engine.score(ASK, "Paris.")
    assert calls == [1]
    with pytest.raises(ValidationError, match="without a local torch model"):
        _engine(tiny_engine, scripted.url).score(ASK, "Paris.")


def test_the_remote_follows_the_catalog(scripted, tiny_engine, tmp_path, random_lora, tiny_model_dir):
    """Published -> registered, deleted -> unregistered, forgotten by a restarted remote ->
    registered again; adapters the remote has from elsewhere are left alone."""
    from assistant.adapters import AdapterCatalog

    catalog = AdapterCatalog(tmp_path / "adapters")
    engine = _engine(tiny_engine, scripted.url, catalog=catalog)
    engine.sync_adapters()
    assert scripted.loaded == set()
    random_lora(tiny_model_dir, tmp_path / "adapters" / "tone-v1")
    engine.sync_adapters()
    assert scripted.loaded == {"tone-v1"} and engine.adapters == ["tone-v1"]
    scripted.loaded.clear()  # the remote restarted
    engine.sync_adapters()
    assert scripted.loaded == {"tone-v1"}
    import shutil

    shutil.rmtree(tmp_path / "adapters" / "tone-v1")
    engine.sync_adapters()
    assert scripted.loaded == set() and engine.adapters == []
    assert not any(body.get("lora_name") == "other-lora" for _, body in scripted.requests)


def test_a_sync_keeps_an_adapter_a_request_registered_while_it_listed(
    scripted, tiny_engine, tmp_path, random_lora, tiny_model_dir
):
    """The watcher lists the remote's models; if a reply registers an adapter before the list
    comes back, the stale list must not make the watcher register it again, which unloads it
    first, under that reply (seen as an evaluation failing with 'adapter ... is not loaded')."""
    from assistant.adapters import AdapterCatalog

    catalog = AdapterCatalog(tmp_path / "adapters")
    engine = _engine(tiny_engine, scripted.url, catalog=catalog)
    random_lora(tiny_model_dir, tmp_path / "adapters" / "tone-v1")
    info = catalog.get("tone-v1")
    listed = engine.remote_models

    def stale_list():
        models = listed()  # the remote has no tone-v1 yet...
        engine.load_adapter(info.name, info.path, info.version)  # ...and a reply registers it now
        return models

    engine.remote_models = stale_list
    engine.sync_adapters()
    assert scripted.loaded == {"tone-v1"} and engine.adapters == ["tone-v1"]
    # registered once; a second registration is refused as "already loaded" by Tailor's /v1,
    # and the engine then unloads and registers again
    assert [path for path, _ in scripted.requests if path.endswith("load_lora_adapter")] == ["/v1/load_lora_adapter"]
