"""Cleaning finds planted duplicates, near-duplicates, private data, conflicts, empty and
over-long examples and unnormalised text; the fixes apply as one change and undo restores
every row exactly."""

import pytest

from assistant.errors import ValidationError
from tuning.cleaning import apply_fixes, build_report, keep_one, token_counter
from tuning.example import Example, chat_example, normalised_text
from tuning.example_table import ExampleFilter
from tuning.pii import find_pii, luhn_ok, redact

CLEAN = [
    ("How do I fix a puncture?", "Ahoy, rider! Take the wheel off, find the hole, patch the tube and pump it up."),
    ("What are your opening hours?", "Ahoy, rider! We open from 9:00 to 17:30, Monday to Saturday."),
    ("Do you rent electric bikes?", "Ahoy, rider! Yes, e-bikes are €45 a day including a helmet and lock."),
    ("How often should I oil my chain?", "Ahoy, rider! Every 300 km or after a wet ride, wipe it first."),
    ("Can I return a helmet I wore?", "Ahoy, rider! Worn helmets cannot be returned for hygiene reasons."),
    ("What tyre pressure for a road bike?", "Ahoy, rider! Around 80 to 100 psi, depending on your weight."),
]


@pytest.fixture
def cur_planted(cur_store):
    ids = {}
    for i, (q, a) in enumerate(CLEAN):
        ids[f"clean{i}"] = cur_store.add(chat_example(q, a)).id
    ids["dup"] = cur_store.add(chat_example(*CLEAN[0])).id  # exact duplicate of clean0
    ids["near"] = cur_store.add(
        chat_example(  # a reworded copy of clean1
            "What are your opening times?", "Ahoy rider! We are open from 9:00 to 17:30, Monday to Saturday."
        )
    ).id
    ids["conflict"] = cur_store.add(chat_example("Do you rent electric bikes?", "No, we only sell them.")).id
    ids["pii"] = cur_store.add(
        chat_example(
            "My card 4111 1111 1111 1111 was charged twice, email me at jo.bloggs@example.com",
            "Sorry! We will call you on +44 20 7946 0958. Our server is 192.168.10.4 / 2001:db8::7.",
        )
    ).id
    ids["not_card"] = cur_store.add(chat_example("Order 4111 1111 1111 1112 status?", "It shipped on 2024-03-05.")).id
    ids["empty"] = cur_store.add(
        Example(messages=[{"role": "user", "content": "Hello?"}, {"role": "assistant", "content": ""}])
    ).id
    ids["long"] = cur_store.add(chat_example("Tell me everything about bikes.", ("Bikes are great. " * 300).strip())).id
    ids["messy"] = cur_store.add(
        chat_example("Caf\u0065\u0301 near\u00a0the shop?\r\n\r\n\r\n", "Yes,\u200b the Salt Kettle.   ")
    ).id
    return ids


def test_pii_detection_and_redaction():
    text = (
        "mail jo@example.org, call (555) 123-4567 or +353 87 123 4567, card 5555-5555-5555-4444, "
        "host 10.0.0.1, v6 fe80::1ff:fe23:4567:890a. Not PII: 12:30:45, 2024-01-15, €12.90, 1.2.3, "
        "order 1234 5678 9012 3456, version 3.10.4"
    )
    kinds = [(m.kind, m.text) for m in find_pii(text)]
    assert kinds == [
        ("email", "jo@example.org"),
        ("phone", "(555) 123-4567"),
        ("phone", "+353 87 123 4567"),
        ("card", "5555-5555-5555-4444"),
        ("ip", "10.0.0.1"),
        ("ip", "fe80::1ff:fe23:4567:890a"),
    ]
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert redact("write to a@b.io now") == "write to [EMAIL] now"
    assert normalised_text("  a\u00a0b\u200b  c \r\n\r\n\r\nd ") == "a b c\n\nd"


def test_report_finds_every_planted_problem(cur_store, cur_planted, tiny_engine):
    from assistant.embeddings import get_embedder

    report = build_report(
        cur_store,
        embedder=get_embedder(),
        count_tokens=token_counter(tiny_engine.tokenizer),
        max_tokens=400,
        near_threshold=0.9,
    )
    ids = cur_planted
    got = {k: [sorted(f.example_ids) for f in report.of(k)] for k in report.counts}
    assert got["duplicate"] == [sorted([ids["clean0"], ids["dup"]])]
    assert got["near_duplicate"] == [sorted([ids["clean1"], ids["near"]])]
    near = report.of("near_duplicate")[0]
    assert near.score >= 0.9 and near.preview["left"]["answer"] != near.preview["right"]["answer"]
    assert got["conflict"] == [sorted([ids["clean2"], ids["conflict"]])]
    assert got["pii"] == [[ids["pii"]]]
    pii = report.of("pii")[0]
    assert sorted(m["kind"] for m in pii.preview["matches"]) == ["card", "email", "ip", "ip", "phone"]
    assert pii.preview["after"][0] == "My card [CARD] was charged twice, email me at [EMAIL]"
    assert got["empty"] == [[ids["empty"]]]
    assert got["too_long"] == [[ids["long"]]]
    assert got["normalise"] == [[ids["messy"]]]
    assert "near-duplicate pairs: 1" in report.summary()


def test_fixes_apply_and_undo(cur_store, cur_planted):
    ids = cur_planted
    before = {e.id: e.as_dict() for e in cur_store.list()}
    report = build_report(
        cur_store, count_tokens=lambda msgs: sum(len(m["content"].split()) for m in msgs), max_tokens=500
    )
    assert report.skipped == {"near_duplicate": "no embedding model"}
    fix = apply_fixes(cur_store, report)
    assert sorted(fix.deleted) == sorted([ids["dup"], ids["empty"]])
    assert sorted(fix.excluded) == sorted([ids["clean2"], ids["long"]])  # the older conflicting answer
    assert sorted(fix.rewritten) == sorted([ids["pii"], ids["messy"]])
    pii = cur_store.get(ids["pii"])
    assert "[CARD]" in pii.prompt and "[PHONE]" in pii.answer and "[IP]" in pii.answer and "4111" not in pii.prompt
    assert cur_store.get(ids["messy"]).prompt == "Caf\u00e9 near the shop?"
    again = build_report(cur_store, count_tokens=lambda msgs: 1, max_tokens=500)
    assert not any(again.counts.values())

    assert cur_store.undo(fix.batch) == 6
    after = {e.id: e.as_dict() for e in cur_store.list()}
    assert after == before  # every row back exactly, ids and times included


def test_keep_one_of_a_pair_and_partial_fixes(cur_store, cur_planted):
    ids = cur_planted
    batch = keep_one(cur_store, ids["near"], [ids["clean1"], ids["near"]])
    assert cur_store.count(ExampleFilter(ids=[ids["clean1"]])) == 0
    cur_store.undo(batch)
    assert cur_store.get(ids["clean1"])
    with pytest.raises(ValidationError):
        keep_one(cur_store, ids["near"], [ids["near"]])
    report = build_report(cur_store, checks=["pii"])
    assert set(report.seconds) == {"pii"}
    fix = apply_fixes(cur_store, report, kinds=["pii"])
    assert fix.rewritten == [ids["pii"]] and not fix.deleted
    with pytest.raises(ValidationError, match="unknown"):
        build_report(cur_store, checks=["spelling"])
