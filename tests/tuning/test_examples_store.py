"""The example store: saving from the chat (with context, passages and provenance),
rendering for the trainer, search and filters, edits, bulk tags, delete and undo."""

import pytest

from assistant.errors import NotFoundError, ValidationError
from assistant.prompting import build_messages
from tuning.example import chat_example, preview_text, render_messages
from tuning.example_table import ExampleFilter


def test_save_edited_reply_keeps_context_passages_and_provenance(cur_store, cur_log, cur_conversation):
    second = cur_conversation["second"]
    ex = cur_store.from_message(cur_log, second.id, edited_text="  We open at 10:00 on Sundays.  ", tags="hours")
    assert ex.id is not None and ex.source == "chat"
    assert [m["role"] for m in ex.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert ex.answer == "We open at 10:00 on Sundays."
    assert ex.prompt == "When do you open on Sundays?"
    assert ex.passages and ex.passages[0]["text"] == cur_conversation["passage"].text
    prov = ex.provenance
    assert prov["conversation_id"] == cur_conversation["conversation"].id
    assert prov["message_id"] == second.id and prov["message_time"] == second.created_at
    assert prov["edited"] is True and prov["original_text"] == "We open at 9."
    assert ex.tags == ["hours"] and ex.split in ("train", "validation", "test")
    assert cur_store.find_by_message(second.id)[0].id == ex.id


def test_unedited_save_and_bad_messages(cur_store, cur_log, cur_conversation):
    first = cur_conversation["first"]
    ex = cur_store.from_message(cur_log, first.id)
    assert ex.edited is False and ex.answer == first.content and ex.passages is None
    assert [m["role"] for m in ex.messages] == ["system", "user", "assistant"]
    same = cur_store.from_message(cur_log, first.id, edited_text=first.content)
    assert same.edited is False
    user_msg = cur_conversation["conversation"].messages[0]
    with pytest.raises(ValidationError, match="assistant reply"):
        cur_store.from_message(cur_log, user_msg.id)
    with pytest.raises(ValidationError, match="empty"):
        cur_store.from_message(cur_log, first.id, edited_text="   ")
    with pytest.raises(NotFoundError):
        cur_store.from_message(cur_log, 99999)
    assert cur_store.count() == 2  # the failures saved nothing


def test_render_messages_formats_passages_like_the_chat(cur_store, cur_log, cur_conversation, tiny_engine):
    ex = cur_store.from_message(cur_log, cur_conversation["second"].id, edited_text="10:00 to 16:00.")
    rendered = render_messages(ex)
    # The chat's prompt for that turn, built the chat's way, then the (edited) answer.
    conv = cur_conversation["conversation"]
    history = [m.as_chat() for m in conv.messages[:2]]
    expected = build_messages(
        history, "When do you open on Sundays?", conv.system_prompt, [cur_conversation["passage"]]
    )
    assert rendered == expected + [{"role": "assistant", "content": "10:00 to 16:00."}]
    assert "opening_hours.md" in rendered[-2]["content"]
    text = preview_text(ex, tiny_engine.tokenizer)
    assert text.startswith("<|im_start|>system\nYou are Lantern Bay's assistant.<|im_end|>")
    assert text.rstrip().endswith("10:00 to 16:00.<|im_end|>")


def test_search_filters_edit_bulk_tag_delete_undo(cur_store):
    a = cur_store.add(chat_example("How do I pump a tyre?", "Use a track pump.", tags=["maintenance"], label="howto"))
    b = cur_store.add(chat_example("Where is the shop?", "On the harbour front.", tags=["shop"]))
    c = cur_store.add(chat_example("Tyre pressure for gravel?", "About 35 psi.", source="import"))
    assert [e.id for e in cur_store.list(ExampleFilter(query="tyre"))] == [a.id, c.id]
    assert [e.id for e in cur_store.list(ExampleFilter(tag="shop"))] == [b.id]
    assert [e.id for e in cur_store.list(ExampleFilter(source="import"))] == [c.id]
    assert [e.id for e in cur_store.list(ExampleFilter(label="howto"))] == [a.id]
    assert cur_store.facets()["tag"] == ["maintenance", "shop"]

    edited = cur_store.update(
        b.id,
        messages=[
            {"role": "user", "content": "Where is the shop?"},
            {"role": "assistant", "content": "12 Quay Street."},
        ],
        label="where",
    )
    assert edited.answer == "12 Quay Street." and edited.label == "where" and edited.split == b.split
    cur_store.bulk_tag([a.id, b.id], add=["reviewed"])
    assert "reviewed" in cur_store.get(a.id).tags and "reviewed" in cur_store.get(b.id).tags

    cur_store.delete([a.id, c.id])
    assert cur_store.count() == 1
    assert cur_store.undo() == 2  # the latest change: the delete
    assert cur_store.get(a.id).tags == ["maintenance", "reviewed"] and cur_store.get(c.id).answer == "About 35 psi."
    cur_store.undo()  # the bulk tag
    assert cur_store.get(a.id).tags == ["maintenance"]
    cur_store.undo()  # the edit
    assert cur_store.get(b.id).answer == "On the harbour front." and cur_store.get(b.id).label is None
    with pytest.raises(ValidationError, match="nothing to undo"):
        cur_store.undo()


def test_invalid_examples_are_refused(cur_store):
    with pytest.raises(ValidationError, match="end with a user message"):
        cur_store.add(chat_example("q", "a").__class__(messages=[{"role": "user", "content": "only a question"}]))
    with pytest.raises(ValidationError, match="system prompt may only come first"):
        from tuning.example import make_example

        make_example(
            [
                {"role": "user", "content": "q"},
                {"role": "system", "content": "s"},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
            ]
        )
    with pytest.raises(NotFoundError):
        cur_store.delete([12345])
    assert cur_store.count() == 0


def test_search_treats_percent_and_underscore_literally(cur_store):
    """`%` and `_` in a search are the characters themselves, not LIKE wildcards."""
    five_hundred = cur_store.add(chat_example("How much is it?", "It costs 500 euros."))
    half = cur_store.add(chat_example("Any discount?", "50% off on Mondays."))
    axb = cur_store.add(chat_example("Which file, axb?", "The axb one."))
    ab = cur_store.add(chat_example("Which file?", "Open a_b.txt."))

    def ids(query):
        return [e.id for e in cur_store.list(ExampleFilter(query=query))]

    assert ids("50%") == [half.id]
    assert ids("a_b") == [ab.id]
    assert ids("%") == [half.id] and ids("_") == [ab.id]
    assert ids("500") == [five_hundred.id] and ids("axb") == [axb.id]
    assert cur_store.count(ExampleFilter(query="50% off")) == 1


def test_search_by_id(cur_store):
    """`#12 #15` finds those examples (the chat's toast links to its saved example this way)."""
    a = cur_store.add(chat_example("How much is it?", "It costs 500 euros."))
    b = cur_store.add(chat_example("Any discount?", "50% off on Mondays."))
    cur_store.add(chat_example("Which file?", "Open a_b.txt."))

    def ids(query):
        return sorted(e.id for e in cur_store.list(ExampleFilter(query=query)))

    assert ids(f"#{a.id}") == [a.id]
    assert ids(f"#{a.id} #{b.id}") == sorted([a.id, b.id])
    assert ids(f"#{a.id} discount") == []  # ids and words both hold
    assert ids("#x") == []  # not an id: searched as a word
