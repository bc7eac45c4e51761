"""Accounts for a team (issue #17 item 4), in the core: the conversation log acts for the
current user; the rules of assistant/accounts.py, one by one. tests/server/test_accounts.py
tries the same on a running server, route by route."""

from __future__ import annotations

import pytest

from assistant.accounts import AccessDenied, Accounts, acting_as, as_user
from assistant.conversations import ConversationLog
from assistant.errors import NotFoundError
from assistant.settings import Settings


@pytest.fixture
def log(workspace):
    return ConversationLog(workspace.db, Accounts(["alice", "bob", "root"], ["root"]))


def test_admins_default_to_the_first_user_and_must_be_users():
    assert Accounts(["alice", "bob"]).admins == {"alice"}
    assert not Accounts().enabled and Accounts(["a"]).enabled
    with pytest.raises(ValueError, match="TAILOR_ADMINS names carol, who is not among TAILOR_AUTH's users"):
        Accounts(["alice", "bob"], ["carol"])
    assert Settings(auth="alice:x1,bob:x2", admins="bob").accounts().admins == {"bob"}


def test_api_keys_bound_to_users():
    settings = Settings(auth="alice:pw,bob:pw", api_keys="alice:key-of-alice, shared-key-1,carol:not-a-user-key")
    assert settings.api_key_users() == {"key-of-alice": "alice", "shared-key-1": None, "carol:not-a-user-key": None}
    assert Settings(api_keys="alice:short").api_key_users() == {"alice:short": None}  # no accounts: a plain key
    with pytest.raises(ValueError, match="at least 8"):
        Settings(auth="alice:pw", api_keys="alice:short").api_key_users()


def test_each_users_conversations_are_their_own(log):
    with acting_as("alice"):
        mine = log.create()
        log.add_message(mine.id, "user", "alice's question")
        reply = log.add_message(mine.id, "assistant", "an answer")
        assert [c.id for c in log.list()] == [mine.id] and log.get(mine.id).owner == "alice"
    with acting_as("bob"):
        assert log.list() == [] and log.list(query="alice") == []
        for attempt in (
            lambda: log.get(mine.id),
            lambda: log.add_message(mine.id, "user", "bob writes in"),
            lambda: log.add_history(mine.id, [{"role": "user", "content": "x"}]),
            lambda: log.update(mine.id, title="bob's"),
            lambda: log.rename(mine.id, "bob's"),
            lambda: log.delete(mine.id),
            lambda: log.restore(mine.id),
            lambda: log.purge(mine.id),
            lambda: log.message(reply.id),
            lambda: log.set_feedback(reply.id, -1, "rude"),
            lambda: log.edit_reply(reply.id, "bob's words"),
        ):
            with pytest.raises(NotFoundError, match="does not exist"):  # as for an unknown id: nothing leaks
                attempt()
    with acting_as("alice"):
        conv = log.get(mine.id)
        assert conv.title == "alice's question" and [m.content for m in conv.messages] == [
            "alice's question",
            "an answer",
        ]
        assert conv.messages[1].rating is None and conv.messages[1].edited_content is None
    assert [c.id for c in log.list()] == [mine.id]  # no request (the CLI, the app's threads): everything


def test_admins_delete_and_restore_anyones_without_reading_it(log):
    with acting_as("alice"):
        mine = log.create()
        log.add_message(mine.id, "user", "a private matter")
    with acting_as("root"):
        assert log.list() == []
        with pytest.raises(NotFoundError):
            log.get(mine.id)
        gone = log.delete(mine.id)
        assert not gone.readable and gone.title == "a conversation of alice" and gone.messages == []
        back = log.restore(mine.id)
        assert not back.readable and "private" not in back.title
    with acting_as("alice"):
        assert log.get(mine.id).title == "a private matter"


def test_conversations_from_before_accounts_are_the_admins(workspace):
    before = ConversationLog(workspace.db).create(title="old")  # no accounts then: no owner
    log = ConversationLog(workspace.db, Accounts(["alice", "root"], ["root"]))
    assert before.owner is None
    with acting_as("alice"):
        assert log.list() == []
    with acting_as("root"):
        assert [c.id for c in log.list()] == [before.id] and log.get(before.id).title == "old"


def test_only_admins_delete_what_is_shared():
    accounts = Accounts(["alice", "root"], ["root"])
    with acting_as("alice"), pytest.raises(AccessDenied, match="only an admin may delete documents.*alice"):
        accounts.require_admin("delete documents")
    with acting_as("root"):
        accounts.require_admin("delete documents")
    accounts.require_admin("delete documents")  # the CLI: the workspace's owner
    Accounts().require_admin("delete documents")  # no accounts: everyone


def test_as_user_carries_the_user_into_another_thread(log):
    import threading

    made = []
    thread = threading.Thread(target=lambda: made.append(as_user("bob", log.create)()))
    thread.start()
    thread.join()
    assert made[0].owner == "bob"
