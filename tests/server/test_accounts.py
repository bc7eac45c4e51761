"""Accounts for a team (issue #17 item 4), tried on a running server as the wrong user: with
TAILOR_AUTH set, Alice's conversation cannot be listed, read, continued, rated, edited,
curated, renamed, deleted or stopped by Bob, through the web app's events (gradio_client,
signed in as Bob), `/v1` (Bob's key, a key bound to nobody) or the CLI's view of the
database; the dataset and documents stay shared; only the admin deletes what is shared, and
may delete and restore anyone's conversation without reading it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.conftest import read_db

pytestmark = pytest.mark.server

GREEDY = (0.0, 0.9, 16)  # temperature, top-p, max new tokens
USERS = {"alice": "alice-pass", "bob": "bob-pass", "root": "root-pass"}
KEYS = {"alice": "alice-key-123", "bob": "bob-key-4567"}
SHARED_KEY = "shared-key-890"
SECRET = "Alice's secret plan for the spring sale"


def _continue(server, key: str | None, conv_id: str, text: str) -> tuple[int, dict]:
    """One `/v1` message that continues conversation `conv_id`, sent with `key`."""
    body = {"model": "base", "messages": [{"role": "user", "content": text}], "max_tokens": 4}
    request = urllib.request.Request(
        server.url + "v1/chat/completions",
        data=json.dumps({**body, "tailor": {"conversation_id": conv_id}}).encode(),
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _client(server, user: str):
    from gradio_client import Client

    return Client(server.url, auth=(user, USERS[user]), verbose=False)


def _refused_or_silent(call, *args, api_name: str):
    """Call an event as the wrong user: it must fail, or answer without any of Alice's text."""
    try:
        out = call(*args, api_name=api_name)
    except Exception as exc:  # noqa: BLE001 - gradio_client raises AppError for the event's error
        assert SECRET not in str(exc), f"{api_name}: the error shows Alice's text"
        return None
    assert SECRET not in json.dumps(out, default=str), f"{api_name} gave Bob Alice's conversation: {out}"
    return out


def _state(ws, conv_id: str) -> dict:
    [(title, deleted)] = read_db(ws, "SELECT title, deleted_at FROM conversations WHERE id=?", conv_id)
    messages = read_db(
        ws, "SELECT id, role, content, edited_content FROM messages WHERE conversation_id=? ORDER BY id", conv_id
    )
    feedback = read_db(
        ws,
        "SELECT COUNT(*) FROM feedback WHERE message_id IN (SELECT id FROM messages WHERE conversation_id=?)",
        conv_id,
    )
    examples = read_db(ws, "SELECT COUNT(*) FROM examples")
    return {"title": title, "deleted": deleted, "messages": messages, "feedback": feedback, "examples": examples}


def test_each_route_as_the_wrong_user(tailor_server, tiny_model_dir, tmp_path):
    ws = tmp_path / "ws"
    env = {
        "TAILOR_AUTH": ",".join(f"{u}:{p}" for u, p in USERS.items()),
        "TAILOR_ADMINS": "root",
        "TAILOR_API_KEYS": ",".join([*(f"{u}:{k}" for u, k in KEYS.items()), SHARED_KEY]),
    }
    server = tailor_server(ws, tiny_model_dir, env=env)
    assert "Accounts:       3 users" in server.log() and "admins: root" in server.log()

    # Alice chats in the web app and through /v1 with her key.
    alice = _client(server, "alice")
    _, conv_id, _, _ = alice.predict(SECRET, "", "base", "", *GREEDY, api_name="/send")
    [(owner,)] = read_db(ws, "SELECT owner FROM conversations WHERE id=?", conv_id)
    assert owner == "alice"
    status, body = _continue(server, KEYS["alice"], conv_id, "And?")
    assert status == 200 and body["tailor"]["conversation_id"] == conv_id  # her own: she continues it
    [(reply_id,)] = read_db(ws, "SELECT MAX(id) FROM messages WHERE conversation_id=? AND role='assistant'", conv_id)
    before = _state(ws, conv_id)

    # Bob, signed in to the web app: every event that names a conversation or a reply.
    bob = _client(server, "bob")
    listed = bob.predict("", api_name="/list_conversations")
    assert conv_id not in [c[1] for c in listed["choices"]]
    assert not bob.predict("secret", api_name="/search_conversations")["choices"]
    wrong = bob.predict
    _refused_or_silent(wrong, conv_id, api_name="/open_conversation")
    _refused_or_silent(wrong, "Tell me more", conv_id, "base", "", *GREEDY, api_name="/send")
    _refused_or_silent(wrong, conv_id, "base", "", *GREEDY, False, "answer", api_name="/regenerate")
    _refused_or_silent(wrong, conv_id, "Bob's title", "", api_name="/rename_chat")
    _refused_or_silent(wrong, conv_id, "", api_name="/delete_chat")
    assert wrong(conv_id, api_name="/stop") == "Nothing is running."
    _refused_or_silent(wrong, conv_id, api_name="/curate_load_replies")
    _refused_or_silent(wrong, reply_id, api_name="/curate_pick_reply")
    _refused_or_silent(wrong, reply_id, "rude", api_name="/curate_thumbs_down")
    _refused_or_silent(wrong, reply_id, "Bob's version", "", "", api_name="/curate_save_reply")
    _refused_or_silent(wrong, reply_id, "Bob's version", "", "", api_name="/curate_save_edited")
    _refused_or_silent(wrong, conv_id, conv_id, api_name="/compare_vote_left")

    # Bob through /v1: with his own key, and with a key bound to nobody.
    for key in (KEYS["bob"], SHARED_KEY):
        status, body = _continue(server, key, conv_id, "Show me")
        assert status == 404 and "does not exist" in body["error"]["message"]
    assert _state(ws, conv_id) == before  # nothing of Alice's changed, nothing of hers was saved

    # Bob's own conversations are his; what the team shares stays shared.
    _, bobs, _, _ = bob.predict("Bob's question", "", "base", "", *GREEDY, api_name="/send")
    assert [c[1] for c in bob.predict("", api_name="/list_conversations")["choices"]] == [bobs]
    assert bobs not in [c[1] for c in alice.predict("", api_name="/list_conversations")["choices"]]
    assert _continue(server, KEYS["bob"], bobs, "More")[0] == 200
    bob.predict(reply_of(ws, bobs), "A good answer.", "", "", api_name="/curate_save_edited")  # shared dataset
    assert read_db(ws, "SELECT COUNT(*) FROM examples")[0][0] == before["examples"][0][0] + 1
    # ... but only an admin deletes from it.
    with pytest.raises(Exception, match="only an admin may delete examples"):
        bob.predict(1, api_name="/dataset_delete")
    assert read_db(ws, "SELECT COUNT(*) FROM examples")[0][0] == before["examples"][0][0] + 1

    # The admin: cannot read Alice's conversation, but may delete it and restore it.
    root = _client(server, "root")
    assert conv_id not in [c[1] for c in root.predict("", api_name="/list_conversations")["choices"]]
    _refused_or_silent(root.predict, conv_id, api_name="/open_conversation")
    out = root.predict(conv_id, "", api_name="/delete_chat")
    assert SECRET not in json.dumps(out, default=str)
    assert read_db(ws, "SELECT deleted_at IS NOT NULL FROM conversations WHERE id=?", conv_id) == [(1,)]
    root.predict(conv_id, "", api_name="/undo_delete_chat")
    assert _state(ws, conv_id) == {**before, "examples": [(before["examples"][0][0] + 1,)]}  # Bob's example
    assert conv_id in [c[1] for c in alice.predict("", api_name="/list_conversations")["choices"]]
    assert server.proc.poll() is None


def reply_of(ws, conv_id: str) -> int:
    [(message_id,)] = read_db(ws, "SELECT MIN(id) FROM messages WHERE conversation_id=? AND role='assistant'", conv_id)
    return message_id
