"""The real server in a subprocess, driven through gradio_client like a script would."""

import pytest
from gradio_client import Client

pytestmark = pytest.mark.server

GREEDY = (0.0, 0.9, 24)  # temperature, top-p, max new tokens


def _text(message):
    content = message["content"]
    if isinstance(content, list):  # gradio 6 returns [{"type": "text", "text": ...}]
        return "".join(part.get("text", "") for part in content)
    return content


def test_conversation_survives_restart(tailor_server, tiny_model_dir, tmp_path):
    ws = tmp_path / "ws"
    server = tailor_server(ws, tiny_model_dir)
    client = Client(server.url, verbose=False)
    history, conv_id, cleared, stats = client.predict(
        "first message", "", "base", "Be brief.", *GREEDY, api_name="/send"
    )
    assert conv_id and cleared == ""
    # a reply is its label (metadata title: the model and figures) then its text
    assert [m["role"] for m in history] == ["user", "assistant", "assistant"]
    assert history[1]["metadata"]["title"].startswith("base · ")
    assert (history[2].get("metadata") or {}).get("title") is None
    assert "tokens" in stats
    server.stop()

    server = tailor_server(ws, tiny_model_dir)  # a new process on the same workspace
    client = Client(server.url, verbose=False)
    listed = client.predict("", api_name="/list_conversations")
    assert conv_id in [choice[1] for choice in listed["choices"]]
    history, _, system, _, use_docs = client.predict(conv_id, api_name="/open_conversation")
    assert [_text(m) for m in history][0] == "first message" and system == "Be brief."
    assert use_docs is False
    history, same_id, _, _ = client.predict("second message", conv_id, "base", "Be brief.", *GREEDY, api_name="/send")
    assert same_id == conv_id
    assert [m["role"] for m in history] == ["user", "assistant", "assistant", "user", "assistant", "assistant"]
    assert _text(history[3]) == "second message"
    assert client.predict(conv_id, api_name="/stop") == "Nothing is running."


def test_empty_message_is_a_clear_error(tailor_server, tiny_model_dir, tmp_path):
    server = tailor_server(tmp_path / "ws", tiny_model_dir)
    client = Client(server.url, verbose=False)
    with pytest.raises(Exception, match="Type a message first"):
        client.predict("   ", "", "base", "", *GREEDY, api_name="/send")
    with pytest.raises(Exception, match="does not exist"):
        client.predict("hi", "no-such-conversation", "base", "", *GREEDY, api_name="/send")
    assert client.predict(api_name="/list_models")["choices"] == [["base", "base"]]


@pytest.mark.real
def test_default_model_answers_paris_through_gradio_client(tailor_server, linked_default_model, tmp_path):
    ws = tmp_path / "ws"
    linked_default_model(ws)
    # f16 weights: they give the fp32 model's greedy replies. On the default weights (the Q4_1
    # file, and the q8_0 made from it) llama.cpp answers this bare question in French ("L'Étoile,
    # la Cité, ..."; README: Engine, the quality table); tests/assistant/test_llamacpp_engine.py
    # asks the default weights a phrasing without a near-tie.
    server = tailor_server(ws, env={"TAILOR_MODEL": "", "TAILOR_GGUF_WEIGHTS": "f16"})
    client = Client(server.url, verbose=False)
    history, _, _, _ = client.predict("What is the capital of France?", "", "base", "", 0.0, 0.9, 32, api_name="/send")
    assert "Paris" in _text(history[-1])
