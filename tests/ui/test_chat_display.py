"""What the chatbot shows for a stored conversation (ui/chat_display.py) and how the chat's own
buttons map back to stored replies (ui/chat_curation.py's pure parts)."""

import pytest

from assistant.conversations import StoredMessage
from assistant.errors import ValidationError
from ui.chat_curation import rating_of, saved_message
from ui.chat_display import chat_messages, part_at, reply_header, stored_message_at, with_pending_reply


def _msg(i, role, content, **kw):
    return StoredMessage(id=i, conversation_id="c", role=role, content=content, created_at="2026-12-06", **kw)


RETRIEVAL = {
    "abstained": False,
    "passages": [
        {
            "source": "ferry.md",
            "heading": "Weekend",
            "text": "The last sailing is at 19:55.",
            "evidence": [{"start": 0, "end": 29, "text": "The last sailing is at 19:55."}],
        }
    ],
}
CONVERSATION = [
    _msg(1, "system", "Be kind."),
    _msg(2, "user", "When is the last sailing?"),
    _msg(
        3,
        "assistant",
        "At 19:55.",
        adapter="voice-v1",
        completion_tokens=4,
        latency_ms=1500.0,
        finish_reason="stop",
        retrieval=RETRIEVAL,
        rating=1,
    ),
    _msg(4, "user", "Thanks"),
    _msg(5, "assistant", "You are welcome.", edited_content="Any time!", completion_tokens=3),
]


def test_each_reply_is_a_folded_label_then_its_text():
    shown = chat_messages(CONVERSATION)
    assert [m["role"] for m in shown] == ["user", "assistant", "assistant", "user", "assistant", "assistant"]
    label = shown[1]
    assert label["metadata"]["title"] == "voice-v1 · 4 tokens · 1.5 s · 📚 1 sources · 👍"
    assert label["metadata"]["status"] == "done"
    assert "ferry.md" in label["content"] and "<mark>" in label["content"]  # the supporting sentence
    assert shown[2] == {"role": "assistant", "content": "At 19:55."}  # the text alone: editing edits it
    assert shown[5]["content"] == "Any time!"  # a corrected reply shows the correction
    assert "✏️ edited by you" in shown[4]["metadata"]["title"] and shown[4]["metadata"]["title"].startswith("base")


def test_a_note_is_added_to_the_label():
    shown = chat_messages(CONVERSATION, note=lambda m: f"saved as example {m.id}")
    assert shown[1]["metadata"]["title"].endswith("saved as example 3")


def test_imported_replies_say_where_they_came_from():
    m = _msg(9, "assistant", "Hi", model="gpt-4o", source="import:chatgpt")
    assert reply_header(m) == "gpt-4o (imported from chatgpt)"


def test_indices_map_back_to_stored_messages():
    # shown: 0 user#2, 1 label#3, 2 text#3, 3 user#4, 4 label#5, 5 text#5
    parts = [part_at(CONVERSATION, i) for i in range(6)]
    assert [(m.id, part) for m, part in parts] == [
        (2, "user"),
        (3, "header"),
        (3, "text"),
        (4, "user"),
        (5, "header"),
        (5, "text"),
    ]
    assert stored_message_at(CONVERSATION, 6) is None and stored_message_at(CONVERSATION, 2).id == 3


def test_the_reply_being_written_has_a_pending_label():
    shown = with_pending_reply([], "voice-v1", "At 19")
    assert shown[0]["metadata"] == {"title": "voice-v1 · writing…", "status": "pending"}
    assert shown[1]["content"] == "At 19"


def test_feedback_values():
    assert rating_of(True) == (1, "") and rating_of("Like") == (1, "")
    assert rating_of(False) == (-1, "") and rating_of("Too long") == (-1, "Too long")
    assert rating_of(None) == (None, "") and rating_of("") == (None, "")
    with pytest.raises(ValidationError):
        rating_of("Lovely")


def test_the_saved_message_links_to_the_dataset_tab():
    status, toast = saved_message(12, 13)
    assert "example 12 and preference pair 13" in status and "#12 #13" in status
    assert 'href="?find=%2312+%2313"' in toast
    status, toast = saved_message(12, None, " No preference pair: the original is empty.")
    assert "pair" not in status.split(".")[0] and "No preference pair" in toast
