import pytest

from assistant.conversations import ConversationLog
from assistant.errors import NotFoundError, ValidationError


def test_messages_are_logged_with_their_figures(workspace):
    log = ConversationLog(workspace.db)
    conv = log.create(system_prompt="Be brief.", model="m")
    log.add_message(conv.id, "user", "Hello there, how are you doing today?")
    reply = log.add_message(
        conv.id,
        "assistant",
        "Fine.",
        model="m",
        adapter="a1",
        settings={"temperature": 0.3},
        latency_ms=120.5,
        ttft_ms=40.0,
        prompt_tokens=12,
        completion_tokens=3,
        finish_reason="stop",
        retrieval={"passages": [{"id": 1}]},
    )
    got = log.get(conv.id)
    assert [m.role for m in got.messages] == ["user", "assistant"]
    assert got.title.startswith("Hello there")
    assert got.system_prompt == "Be brief."
    m = got.messages[1]
    assert (m.id, m.adapter, m.settings, m.latency_ms, m.prompt_tokens, m.completion_tokens) == (
        reply.id,
        "a1",
        {"temperature": 0.3},
        120.5,
        12,
        3,
    )
    assert m.retrieval == {"passages": [{"id": 1}]}


def test_log_survives_reopening(tmp_path):
    from assistant.workspace import Workspace

    log = ConversationLog(Workspace(tmp_path / "w").db)
    conv = log.create()
    log.add_message(conv.id, "user", "persist me")
    again = ConversationLog(Workspace(tmp_path / "w").db)  # a new process would do this
    assert [m.content for m in again.get(conv.id).messages] == ["persist me"]
    assert again.list()[0].id == conv.id


def test_list_orders_by_recent_activity_and_searches(workspace):
    log = ConversationLog(workspace.db)
    a = log.create()
    log.add_message(a.id, "user", "about tyres")
    b = log.create()
    log.add_message(b.id, "user", "about brakes")
    log.add_message(a.id, "assistant", "tyre pressure matters")
    assert [c.id for c in log.list()] == [a.id, b.id]
    assert [c.id for c in log.list(query="brakes")] == [b.id]
    assert [c.id for c in log.list(query="pressure")] == [a.id]
    assert log.list()[0].message_count == 2


def test_feedback(workspace):
    log = ConversationLog(workspace.db)
    c = log.create()
    u = log.add_message(c.id, "user", "q")
    a = log.add_message(c.id, "assistant", "a")
    log.set_feedback(a.id, 1, "nice")
    assert log.message(a.id).rating == 1
    log.set_feedback(a.id, -1)
    assert log.message(a.id).rating == -1
    log.set_feedback(a.id, None)
    assert log.message(a.id).rating is None
    with pytest.raises(ValidationError):
        log.set_feedback(u.id, 1)
    with pytest.raises(ValidationError):
        log.set_feedback(a.id, 5)


def test_missing_things_are_not_found(workspace):
    log = ConversationLog(workspace.db)
    with pytest.raises(NotFoundError):
        log.get("nope")
    with pytest.raises(NotFoundError):
        log.add_message("nope", "user", "x")
    with pytest.raises(NotFoundError):
        log.message(12345)
    with pytest.raises(ValidationError):
        log.update(log.create().id, colour="red")


def test_search_treats_percent_and_underscore_literally(workspace):
    """`%` and `_` in a search are the characters themselves, not LIKE wildcards."""
    log = ConversationLog(workspace.db)
    five_hundred = log.create(title="budget")
    log.add_message(five_hundred.id, "user", "The price is 500 euros")
    half = log.create(title="discount")
    log.add_message(half.id, "user", "We give 50% off today")
    axb = log.create(title="axb notes")
    ab = log.create(title="file a_b.txt")
    back = log.create(title=r"path C:\temp")
    assert [c.id for c in log.list(query="50%")] == [half.id]
    assert [c.id for c in log.list(query="a_b")] == [ab.id]
    assert [c.id for c in log.list(query="%")] == [half.id]
    assert [c.id for c in log.list(query="_")] == [ab.id]
    assert [c.id for c in log.list(query="C:\\temp")] == [back.id]
    assert axb.id in [c.id for c in log.list(query="axb")]


def test_a_long_history_is_logged_in_one_transaction(workspace, monkeypatch):
    """A /v1 request re-sends its history: 999 turns were 999 transactions while the request
    held the engine's queue slot (issue #12)."""
    from assistant.conversations import ConversationLog

    log = ConversationLog(workspace.db)
    conv = log.create(system_prompt="", model="m", adapter=None, rag=False)
    opened = []
    real = workspace.db.transaction
    monkeypatch.setattr(workspace.db, "transaction", lambda: opened.append(1) or real())
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"} for i in range(999)]
    assert log.add_history(conv.id, turns, source="api") == 999
    assert len(opened) == 1
    stored = log.get(conv.id)
    assert [m.content for m in stored.messages] == [t["content"] for t in turns]
    assert stored.title == "turn 0" and {m.source for m in stored.messages} == {"api"}


def test_delete_goes_to_the_trash_and_can_be_undone(workspace):
    log = ConversationLog(workspace.db)
    keep = log.create()
    log.add_message(keep.id, "user", "keep me")
    gone = log.create()
    log.add_message(gone.id, "user", "delete me")
    log.delete(gone.id)
    assert [c.id for c in log.list()] == [keep.id]
    assert log.list(query="delete me") == []
    with pytest.raises(NotFoundError):
        log.get(gone.id)
    assert log.get(gone.id, deleted=True).deleted_at is not None
    restored = log.restore(gone.id)
    assert restored.deleted_at is None and restored.message_count == 1
    assert {c.id for c in log.list()} == {keep.id, gone.id}


def test_the_trash_is_purged_after_its_time(workspace):
    log = ConversationLog(workspace.db)
    conv = log.create()
    log.add_message(conv.id, "user", "old")
    log.delete(conv.id)
    assert log.purge_trash(older_than_s=3600) == 0  # deleted just now: still restorable
    assert log.purge_trash(older_than_s=-1) == 1
    with pytest.raises(NotFoundError):
        log.restore(conv.id)


def test_rename(workspace):
    log = ConversationLog(workspace.db)
    conv = log.create()
    log.add_message(conv.id, "user", "What are your opening hours?")
    assert log.rename(conv.id, "  Opening   hours ").title == "Opening hours"
    with pytest.raises(ValidationError):
        log.rename(conv.id, "   ")
    log.delete(conv.id)
    with pytest.raises(NotFoundError):
        log.rename(conv.id, "x")


def test_a_reply_corrected_in_place_keeps_what_the_model_said(workspace):
    log = ConversationLog(workspace.db)
    conv = log.create()
    asked = log.add_message(conv.id, "user", "Hours?")
    said = log.add_message(conv.id, "assistant", "We never open.")
    edited = log.edit_reply(said.id, "  Nine to five.  ")
    assert (edited.content, edited.edited_content, edited.shown) == ("We never open.", "Nine to five.", "Nine to five.")
    assert [m.as_chat()["content"] for m in log.get(conv.id).messages] == ["Hours?", "Nine to five."]
    assert log.edit_reply(said.id, "We never open.").edited_content is None  # back to the original
    with pytest.raises(ValidationError):
        log.edit_reply(asked.id, "something else")
    with pytest.raises(ValidationError):
        log.edit_reply(said.id, "  ")
