"""Preference pairs: made from edits and from ratings in the chat, stored beside the examples
(search, splits, versions, cleaning and undo alike), imported and exported in TRL's
prompt/chosen/rejected formats (strings, conversational, implicit prompt)."""

from __future__ import annotations

import json

import pytest

from assistant.errors import ValidationError
from tuning.dataset_export import export_examples
from tuning.dataset_import import import_file
from tuning.example import make_example
from tuning.example_table import ExampleFilter
from tuning.trainer import read_split


def test_an_edit_makes_an_example_and_a_pair_with_the_original_rejected(cur_store, cur_log, cur_conversation):
    second = cur_conversation["second"]
    edit = "Ahoy, rider! On Sundays we open from 10:00 to 16:00."
    example = cur_store.from_message(cur_log, second.id, edited_text=edit)
    pair = cur_store.pair_from_edit(cur_log, second.id, edit)
    assert pair is not None and pair.is_pair and not example.is_pair
    assert pair.answer == edit and pair.rejected == "We open at 9."
    # the pair's prompt is the reply's whole context: system prompt, earlier turns, passages
    assert pair.messages[:-1] == example.messages[:-1] and pair.passages == example.passages
    assert pair.provenance["pair_from"] == "edit" and pair.provenance["message_id"] == second.id
    # saving the same edit again returns the stored pair instead of adding another
    assert cur_store.pair_from_edit(cur_log, second.id, edit + "  ").id == pair.id
    assert cur_store.count(ExampleFilter(kind="pair")) == 1 and cur_store.count(ExampleFilter(kind="example")) == 1
    # an edit that changes nothing is no preference
    assert cur_store.pair_from_edit(cur_log, second.id, "We open at 9.") is None


def test_opposite_ratings_on_two_replies_to_the_same_prompt_make_a_pair(cur_store, cur_log):
    def chat(reply: str, system: str = "Be kind."):
        conv = cur_log.create(system_prompt=system)
        cur_log.add_message(conv.id, "user", "How do I fix a puncture?")
        return cur_log.add_message(conv.id, "assistant", reply)

    good, bad = chat("Patch the tube, then pump it up."), chat("Buy a new bike.")
    other_prompt = chat("Buy a new bike, really.", system="Be rude.")  # a different system prompt
    cur_log.set_feedback(bad.id, -1)
    assert cur_store.pairs_from_rating(cur_log, bad.id) == []  # no counterpart yet
    cur_log.set_feedback(other_prompt.id, 1)
    assert cur_store.pairs_from_rating(cur_log, other_prompt.id) == []  # not the same prompt
    cur_log.set_feedback(good.id, 1)
    [pair] = cur_store.pairs_from_rating(cur_log, good.id)
    assert (pair.answer, pair.rejected) == ("Patch the tube, then pump it up.", "Buy a new bike.")
    assert pair.system == "Be kind." and pair.provenance["rejected_message_id"] == bad.id
    assert pair.provenance["pair_from"] == "ratings" and pair.provenance["message_id"] == good.id
    # rating again finds the same pair: nothing new is stored
    assert cur_store.pairs_from_rating(cur_log, bad.id) == []
    assert cur_store.count(ExampleFilter(kind="pair")) == 1


def test_a_pair_needs_two_different_replies():
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    with pytest.raises(ValidationError, match="the same"):
        make_example(messages, rejected=" Hello! ")
    with pytest.raises(ValidationError, match="empty"):
        make_example(messages, rejected="   ")


def test_pairs_import_and_export_round_trip_in_trl_formats(cur_store, tmp_path):
    records = [
        {"prompt": "Short or long?", "chosen": "Short.", "rejected": "Well, it depends, let me explain at length."},
        {  # conversational, with a system prompt and an earlier turn
            "prompt": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Tyre pressure?"},
            ],
            "chosen": [{"role": "assistant", "content": "Check the sidewall."}],
            "rejected": [{"role": "assistant", "content": "Pressure is a big topic..."}],
            "tags": ["tyres"],
        },
        {  # implicit prompt: two whole conversations that differ in their last message
            "chosen": [{"role": "user", "content": "Chain noise?"}, {"role": "assistant", "content": "Oil it."}],
            "rejected": [{"role": "user", "content": "Chain noise?"}, {"role": "assistant", "content": "Ignore it."}],
        },
        {"prompt": "Only chosen", "chosen": "Yes."},
        {"prompt": "Same", "chosen": "Same.", "rejected": "Same."},
        {
            "chosen": [{"role": "user", "content": "A?"}, {"role": "assistant", "content": "x"}],
            "rejected": [{"role": "user", "content": "B?"}, {"role": "assistant", "content": "y"}],
        },
        {"prompt": "An example", "completion": "Not a pair."},
    ]
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    result = import_file(cur_store, src)
    assert result.imported == 4 and result.formats == {"preference": 3, "prompt-completion": 1}
    reasons = {b.line: b.reason for b in result.bad}
    assert "both 'chosen' and 'rejected'" in reasons[4] and "the same" in reasons[5]
    assert "same conversation" in reasons[6]
    assert import_file(cur_store, src).duplicates == 4  # importing again adds nothing

    pairs = cur_store.list(ExampleFilter(kind="pair"))
    out = export_examples(pairs + cur_store.list(ExampleFilter(kind="example")), tmp_path / "out.jsonl", "preference")
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 3  # the pairs only
    assert lines[0] == {k: records[0][k] for k in ("prompt", "chosen", "rejected")}  # strings stay strings
    assert lines[1]["prompt"] == records[1]["prompt"] and lines[1]["tags"] == ["tyres"]
    assert lines[2] == {"prompt": "Chain noise?", "chosen": "Oil it.", "rejected": "Ignore it."}  # one turn: strings
    # an examples export leaves the pairs out (it has no place for the rejected reply)
    assert export_examples(pairs, tmp_path / "ex.jsonl").read_text(encoding="utf-8") == ""
    # the export imports back into a fresh store as the same pairs
    from assistant.db import Database
    from tuning.example_store import ExampleStore

    fresh = ExampleStore(Database(tmp_path / "fresh.db"))
    assert import_file(fresh, out).imported == 3
    assert sorted((p.prompt, p.answer, p.rejected) for p in fresh.list()) == sorted(
        (p.prompt, p.answer, p.rejected) for p in pairs
    )


def test_pairs_are_searched_split_versioned_undone_and_left_out_of_sft(cur_curation, tmp_path):
    store, versions = cur_curation.store, cur_curation.versions
    for i in range(30):
        store.add(make_example([{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": f"A{i}"}]))
        store.add(
            make_example(
                [{"role": "user", "content": f"P{i}"}, {"role": "assistant", "content": f"good {i}"}],
                rejected=f"rambling {i}",
            )
        )
    assert store.count(ExampleFilter(query="rambling")) == 30  # the rejected reply is searched too
    assert {p.split for p in store.list(ExampleFilter(kind="pair"))} == {"train", "validation", "test"}
    v = versions.snapshot()
    assert sum(v.counts.values()) == 30 and sum(v.pairs.values()) == 30
    sft_rows = read_split(v.path, "train")
    assert sft_rows and all("rejected" not in r and r["completion"][0]["content"].startswith("A") for r in sft_rows)
    from tuning.preference import pair_rows

    rows = pair_rows(v.path, "train")
    assert len(rows) == v.pairs["train"] and rows[0]["rejected"][0]["content"].startswith("rambling")
    # a pair's split is frozen like an example's: snapshotting again changes nothing
    assert versions.snapshot().id == v.id
    # editing the rejected reply is undoable
    pair = store.list(ExampleFilter(kind="pair"), limit=1)[0]
    store.update(pair.id, rejected="something else")
    assert store.get(pair.id).rejected == "something else"
    store.undo()
    assert store.get(pair.id).rejected == pair.rejected
    # the cleaning report does not call a pair and an example with one prompt a conflict
    from tuning.cleaning import build_report

    store.add(make_example([{"role": "user", "content": "P0"}, {"role": "assistant", "content": "other"}]))
    assert not build_report(store, checks=["conflict"]).of("conflict")
