"""Bring your old chats (assistant/chat_import.py, `tailor conversations import`): ChatGPT and
Open WebUI exports land in the conversation log with their titles, dates, message order and
models; only the branch each conversation last showed; re-importing adds nothing; a bad file is
refused with its reason and leaves nothing behind. The exports under data/chat_exports/ were
written by hand in the shapes the two apps export."""

from __future__ import annotations

import copy
import json
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from assistant import chat_import
from assistant.chat_import import import_chats, parse_export
from assistant.conversations import ConversationLog
from assistant.errors import ValidationError

DATA = Path(__file__).parent / "data" / "chat_exports"
CHATGPT = DATA / "chatgpt_conversations.json"
OPENWEBUI = DATA / "openwebui_export.json"


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="microseconds")


@pytest.fixture
def log(workspace):
    return ConversationLog(workspace.db)


def by_title(log: ConversationLog) -> dict:
    return {c.title: log.get(c.id) for c in log.list()}


def turns(conv) -> list[tuple]:
    return [(m.role, m.content, m.model, m.created_at) for m in conv.messages]


def test_chatgpt_export_lands_with_the_current_branch_dates_and_models(log):
    result = import_chats(log, CHATGPT)
    assert (result.format, result.imported, result.duplicates, result.empty, result.messages) == (
        "chatgpt",
        2,
        0,
        0,
        6,
    )
    convs = by_title(log)
    assert set(convs) == {"Trip plan", "Quick sum"}
    trip = convs["Trip plan"]
    assert (trip.created_at, trip.updated_at, trip.external_id) == (
        iso(1700000000.5),
        iso(1700000300.25),
        "chatgpt:c-trip",
    )
    # The regenerated reply ("a-old", gpt-4) is another branch: not imported. The hidden system
    # node is left out; the image part of the second question is left out with a note.
    assert turns(trip) == [
        ("user", "Plan a day in Lisbon for me.", None, iso(1700000010.25)),
        ("assistant", "Morning: Alfama. Afternoon: Belém.", "gpt-4o", iso(1700000030.5)),
        ("user", "What is this tower?", None, iso(1700000100.0)),
        # no model_slug on this reply: the conversation's default model
        ("assistant", "That is the Belém Tower.", "gpt-4o-mini", iso(1700000110.0)),
    ]
    assert all(m.source == "import:chatgpt" and m.adapter is None for m in trip.messages)
    assert trip.system_prompt == "" and trip.adapter is None
    # Custom instructions (hidden), the call to Python, its output and an empty reply: left out.
    assert turns(convs["Quick sum"]) == [
        ("user", "What is 6 times 7? Check it with Python.", None, iso(1705000000.0)),
        ("assistant", "6 times 7 is 42.", "gpt-4o", iso(1705000003.0)),
    ]
    assert result.notes == ["left out 1 non-text part (image_asset_pointer)"]
    assert result.summary() == (
        "Imported 2 conversations (ChatGPT export, 6 messages). Left out 1 non-text part (image_asset_pointer)."
    )
    # Listed by their own dates: the newer one first.
    assert [c.title for c in log.list()] == ["Quick sum", "Trip plan"]


def test_openwebui_export_lands_with_its_branch_models_and_system_prompt(log):
    result = import_chats(log, OPENWEBUI)
    assert (result.format, result.imported, result.messages, result.notes) == ("openwebui", 2, 6, [])
    convs = by_title(log)
    bread = convs["Sourdough"]
    assert (bread.created_at, bread.updated_at, bread.external_id, bread.model, bread.system_prompt) == (
        iso(1710000000),
        iso(1710000500),
        "openwebui:3f1c-bread",
        "llama3:8b",
        "You are a baker.",
    )
    # m2b (a sibling reply from mistral) is not on the branch that ends at currentId.
    assert turns(bread) == [
        ("user", "How long should sourdough proof?", None, iso(1710000010)),
        ("assistant", "About 4 to 6 hours at room temperature.", "llama3:8b", iso(1710000020)),
        ("user", "And in the fridge?", None, iso(1710000100)),
        ("assistant", "Overnight, 12 to 16 hours.", "llama3:8b", iso(1710000110)),
    ]
    haiku = convs["Rain haiku"]
    # The reply names no model of its own: the chat's model.
    assert [(m.role, m.model) for m in haiku.messages] == [("user", None), ("assistant", "qwen2:7b")]
    assert haiku.messages[1].content.splitlines()[0] == "Soft rain on the roof"
    assert {m.source for c in convs.values() for m in c.messages} == {"import:openwebui"}


def test_the_chatgpt_zip_is_read_and_importing_again_adds_nothing(log, tmp_path):
    archive = tmp_path / "chatgpt-export.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("chat.html", "<html></html>")
        z.writestr("user.json", "{}")
        z.write(CHATGPT, "conversations.json")
        z.writestr("file-abc.png", b"\x89PNG")
    first = import_chats(log, archive)
    assert (first.format, first.imported, first.messages) == ("chatgpt", 2, 6)
    again = import_chats(log, archive)
    assert (again.imported, again.duplicates, again.messages) == (0, 2, 0)
    assert again.summary().startswith("Imported 0 conversations (ChatGPT export, 0 messages; 2 already here)")
    also_json = import_chats(log, CHATGPT)  # the same conversations from the bare .json
    assert also_json.duplicates == 2 and len(log.list()) == 2
    assert sum(c.message_count for c in log.list()) == 6


def test_a_conversation_in_the_trash_counts_as_already_here(log):
    import_chats(log, OPENWEBUI)
    log.delete(by_title(log)["Sourdough"].id)
    again = import_chats(log, OPENWEBUI)
    assert (again.imported, again.duplicates) == (0, 2)


def test_single_open_webui_chat_fallback_to_messages_and_empty_conversations(log, tmp_path):
    chats = json.loads(OPENWEBUI.read_text())
    one = tmp_path / "chat.json"
    one.write_text(json.dumps(chats[0]))  # one record, not in a list
    assert import_chats(log, one).imported == 1

    inner = copy.deepcopy(chats[1]["chat"])  # the chat object alone, without history
    del inner["history"]
    inner["id"] = "haiku-inner"
    empty = {"id": "nothing", "title": "Blank", "chat": {"history": {"messages": {}, "currentId": None}}}
    listed = tmp_path / "more.json"
    listed.write_text(json.dumps([{"id": "x1", "title": "From the list", "chat": inner}, empty]))
    result = import_chats(log, listed)
    assert (result.imported, result.empty) == (1, 1)
    assert "1 without any text skipped" in result.summary()
    conv = by_title(log)["From the list"]
    assert [(m.role, m.model) for m in conv.messages] == [("user", None), ("assistant", "qwen2:7b")]


def test_an_export_without_ids_is_still_imported_once(log, tmp_path):
    convs = json.loads(CHATGPT.read_text())
    for conv in convs:
        del conv["id"], conv["conversation_id"]
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps(convs))
    assert import_chats(log, path).imported == 2
    assert import_chats(log, path).duplicates == 2


def _chatgpt_without_content(tmp_path) -> Path:
    convs = json.loads(CHATGPT.read_text())
    del convs[1]["mapping"]["a-3"]["message"]["content"]
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps(convs))
    return path


def _written(tmp_path, name, data) -> Path:
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
    return path


def _openwebui_changed(change):
    chats = json.loads(OPENWEBUI.read_text())
    change(chats)
    return chats


BAD_FILES = {
    "not json": (lambda t: _written(t, "c.json", b'[{"title": "x",'), "is not JSON: Expecting"),
    "not utf-8": (
        lambda t: _written(t, "c.json", json.dumps([{"title": "Café"}], ensure_ascii=False).encode("latin-1")),
        "is not UTF-8 text (byte 0xe9",
    ),
    "wrong shape": (
        lambda t: _written(t, "c.json", {"examples": [], "version": 1}),
        "not a ChatGPT or Open WebUI export: the top level is an object with keys examples, version",
    ),
    "list of strings": (
        lambda t: _written(t, "c.json", ["hello"]),
        "not a ChatGPT or Open WebUI export: its first item is a string",
    ),
    "empty list": (lambda t: _written(t, "c.json", []), "is an empty list: there are no conversations in it"),
    "empty file": (lambda t: _written(t, "c.json", b"  \n"), "c.json is empty"),
    "message without content": (
        _chatgpt_without_content,
        "conversation 2 (“Quick sum”): message a-3 has no content. Nothing was imported",
    ),
    "branch to a missing node": (
        lambda t: _written(
            t,
            "c.json",
            _openwebui_changed(lambda c: c[0]["chat"]["history"]["messages"]["m3"].update(parentId="gone")),
        ),
        "conversation 1 (“Sourdough”): message gone (message m3's parent) is not in the conversation",
    ),
    "open webui message without content": (
        lambda t: _written(
            t, "c.json", _openwebui_changed(lambda c: c[1]["chat"]["history"]["messages"]["p2"].pop("content"))
        ),
        "conversation 2 (“Rain haiku”): message p2 has no content",
    ),
    "not a zip": (lambda t: _written(t, "c.zip", b"PK\x03\x04 truncated"), "c.zip is not a readable zip file"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_are_refused_with_the_reason_and_nothing_is_written(log, tmp_path, case):
    make, reason = BAD_FILES[case]
    path = make(tmp_path)
    with pytest.raises(ValidationError) as err:
        import_chats(log, path)
    assert reason in str(err.value)
    assert log.list() == []


def test_forced_format_that_does_not_fit_is_refused(log):
    with pytest.raises(ValidationError, match=r"conversation 1 \(“Sourdough”\): it has no 'mapping'"):
        import_chats(log, OPENWEBUI, "chatgpt")
    with pytest.raises(ValidationError, match=r"conversation 1 \(“Trip plan”\): it has no 'chat' with a 'history'"):
        import_chats(log, CHATGPT, "openwebui")
    assert import_chats(log, CHATGPT, "chatgpt").imported == 2


def test_size_cap_and_zips_without_conversations(log, tmp_path, monkeypatch):
    monkeypatch.setattr(chat_import, "MAX_IMPORT_BYTES", 1000)
    with pytest.raises(ValidationError, match=r"over the 0 MB limit"):
        import_chats(log, CHATGPT)
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("conversations.json", json.dumps([{"mapping": {}, "pad": "x" * 5000}]))
    assert archive.stat().st_size < 1000
    with pytest.raises(ValidationError, match=r"conversations.json in big.zip is 0 MB, over"):
        import_chats(log, archive)
    monkeypatch.undo()
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("a.json", "[]")
        z.writestr("b.json", "[]")
    with pytest.raises(ValidationError, match="a zip without conversations.json"):
        import_chats(log, other)
    assert log.list() == []


def test_parse_export_notes_and_merges_a_reply_split_around_a_tool(tmp_path):
    convs = json.loads(CHATGPT.read_text())
    # A reply written before a tool call and finished after it reads as one reply.
    convs[1]["mapping"]["empty-3"]["message"]["content"]["parts"] = ["Let me check."]
    parsed = parse_export(json.dumps(convs).encode(), name="x.json")
    replies = [m.content for m in parsed.conversations[1].messages if m.role == "assistant"]
    assert replies == ["Let me check.\n\n6 times 7 is 42."]
    with pytest.raises(ValidationError, match="unknown export format 'claude'"):
        parse_export(b"[]", "claude")


def test_cli_imports_and_lists(tmp_path, capsys):
    from cli.main import main

    ws = ["--workspace", str(tmp_path / "ws")]
    assert main(["conversations", "import", str(OPENWEBUI), "--json", *ws]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["format"], out["imported"], out["already_present"], out["messages"]) == ("openwebui", 2, 0, 6)
    assert main(["conversations", "import", str(OPENWEBUI), *ws]) == 0
    assert capsys.readouterr().out.startswith(
        "Imported 0 conversations (Open WebUI export, 0 messages; 2 already here)"
    )
    assert main(["conversations", "list", "--json", *ws]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["title"], r["messages"], r["imported_from"]) for r in rows] == [
        ("Rain haiku", 2, "openwebui"),
        ("Sourdough", 4, "openwebui"),
    ]
    assert main(["conversations", "list", "--query", "fridge", *ws]) == 0
    assert "Sourdough" in capsys.readouterr().out

    bad = _written(tmp_path, "bad.json", {"hello": 1})
    assert main(["conversations", "import", str(bad), *ws]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tailor: error: bad.json is not a ChatGPT or Open WebUI export") and "Traceback" not in err
