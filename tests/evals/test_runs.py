"""Evaluation runs end to end on the tiny model: arms base and a tiny LoRA adapter, with and
without retrieval, stored, re-opened and summarised."""

import json
import math
from dataclasses import replace

import pytest

from assistant.chat import NO_SOURCE_REPLY
from assistant.engine import GenerationOptions
from assistant.errors import NotFoundError, ValidationError
from assistant.prompting import build_messages
from evals import open_evals
from evals.reports import (
    aggregate_run,
    all_comparisons,
    compare,
    history_rows,
    metrics_table,
    side_by_side,
    training_example,
)
from evals.runner import RunOptions, answering_order
from evals.sets import load_facts, load_reference_file
from evals.store import EvalStore

OPTS = RunOptions(max_new_tokens=8)


def test_arm_resolution(workspace, chat, tiny_adapter):
    evals = open_evals(workspace, chat)
    arms = evals.runs.resolve_arms()
    assert [a.key for a in arms] == ["base", "base+rag", "tiny-lora", "tiny-lora+rag"]
    tuned = arms[2]
    assert tuned.model == "tiny-lora" and tuned.adapter_version and tuned.adapter_meta["base_model"] == "tiny"
    assert [a.key for a in evals.runs.resolve_arms("base,tuned", "off")] == ["base", "tiny-lora"]
    assert [a.key for a in evals.runs.resolve_arms(["tiny-lora"], ["on"])] == ["tiny-lora+rag"]
    with pytest.raises(NotFoundError):
        evals.runs.resolve_arms("nope")
    with pytest.raises(ValidationError):
        evals.runs.resolve_arms("base", "sideways")


def test_default_arms_skip_retrieval_while_the_knowledge_base_is_empty(workspace, chat, tmp_path):
    from .conftest import EmbeddingRetriever

    empty = EmbeddingRetriever([("a.md", "a passage")])
    empty.passages = []  # every document deleted
    chat.retriever = empty
    evals = open_evals(workspace, chat)
    assert [a.key for a in evals.runs.resolve_arms()] == ["base"]
    assert [a.key for a in evals.runs.resolve_arms("base", "on")] == ["base+rag"]  # asked for: allowed


def test_arm_resolution_without_adapters_or_retriever(workspace, chat):
    chat.retriever = None
    evals = open_evals(workspace, chat)
    assert [a.key for a in evals.runs.resolve_arms()] == ["base"]  # defaults drop what does not exist
    with pytest.raises(ValidationError, match="no tuned adapter"):
        evals.runs.resolve_arms("tuned", "off")
    with pytest.raises(ValidationError, match="knowledge"):
        evals.runs.resolve_arms("base", "on")


def test_background_run_end_to_end(workspace, chat, tiny_adapter, facts_file, retriever):
    ws = workspace
    evals = open_evals(ws, chat)
    evalset = load_facts(facts_file)
    arms = evals.runs.resolve_arms("base,tuned", "off,on")
    seen = []
    run = evals.runs.start(evalset, arms, replace(OPTS, no_source="decline"), progress=lambda d, t: seen.append((d, t)))
    assert run.status == "queued" and run.total == 3 * 4 and run.options["no_source"] == "decline"
    run = evals.runs.wait(run.id, timeout=300)
    assert run.status == "done", run.error
    assert run.done == run.total == 12 and seen[-1] == (12, 12)
    assert run.set_kind == "facts" and run.base_model == "tiny" and run.set_fingerprint == evalset.fingerprint
    assert {a.key: a.adapter_version for a in run.arms}["tiny-lora"] == chat.adapters.get("tiny-lora").version

    results = {(r.arm, r.item_id): r for r in evals.store.results(run.id)}
    assert len(results) == 12
    # the base arm's reply is exactly what the chat's prompt building + greedy decoding gives
    item = evalset.items[0]
    direct = chat.engine.generate(
        build_messages([], item.question, "", None), GenerationOptions(temperature=0, max_new_tokens=8)
    )
    assert results[("base", "f1")].reply == direct.text
    # retrieval arms: the off-topic question abstains with the chat's no-source reply
    assert results[("base+rag", "f3")].reply == NO_SOURCE_REPLY and results[("base+rag", "f3")].abstained
    assert results[("base+rag", "f1")].passages[0]["source"] == "dog.md"
    assert not results[("base+rag", "f1")].abstained
    # the adapter was really applied: the reference loss differs from the base model's
    assert results[("tiny-lora", "f1")].metrics["ref_loss"] != pytest.approx(
        results[("base", "f1")].metrics["ref_loss"]
    )
    for r in results.values():
        m = r.metrics
        assert 0 <= m["rouge_l"] <= 1 and 0 <= m["f1"] <= 1 and m["exact_match"] in (0.0, 1.0)
        assert m["fact"] in (0.0, 1.0) and -1 <= m["semantic"] <= 1.0001
        if r.abstained:  # declined: the model was not asked
            assert m["ref_loss"] is None and m["latency_s"] is None
        else:
            assert math.isfinite(m["ref_loss"]) and m["latency_s"] > 0

    summary = aggregate_run(evals.store, run.id)
    assert summary.arms == ["base", "base+rag", "tiny-lora", "tiny-lora+rag"]
    for per in summary.metrics.values():
        for key in ("semantic", "fact", "rouge_l", "f1", "exact_match"):
            e = per[key]
            assert e.n == 3 and e.lo <= e.mean <= e.hi
        assert per["perplexity"].mean == pytest.approx(math.exp(per["ref_loss"].mean))
    assert summary.metrics["base+rag"]["abstained"].mean == pytest.approx(1 / 3)

    header, rows = metrics_table(summary)
    assert header[:2] == ["Arm", "n"] and "Fact accuracy" in header and len(rows) == 4
    test = compare(evals.store, run.id, "tiny-lora", "base", "ref_loss")
    assert test.n == 3 and 0 < test.p_value <= 1
    assert len(all_comparisons(evals.store, run.id, "semantic")) == 6

    # stored aggregates feed the history chart; a second store re-opens the same run
    hist = history_rows(evals.store, "semantic")
    assert {r["arm"] for r in hist} == set(summary.arms) and all(r["run_id"] == run.id for r in hist)
    reopened = EvalStore(ws.db)
    assert reopened.get_run(run.id).status == "done"
    again = aggregate_run(reopened, run.id)
    assert again.metrics["base"]["semantic"] == summary.metrics["base"]["semantic"]


def test_retrieval_arm_without_a_source_answers_like_the_plain_arm(workspace, chat, facts_file, retriever):
    """The default "answer" policy: when no passage supports an answer, the retrieval arm's
    prompt has no sources, so its greedy reply is exactly the plain arm's, and the item still
    counts toward the no-source rate."""
    evals = open_evals(workspace, chat)
    run = evals.runs.start(load_facts(facts_file), evals.runs.resolve_arms("base", "off,on"), OPTS, background=False)
    assert run.status == "done" and run.options["no_source"] == "answer"
    results = {(r.arm, r.item_id): r for r in evals.store.results(run.id)}
    off_topic = results[("base+rag", "f3")]
    assert off_topic.abstained and off_topic.reply != NO_SOURCE_REPLY
    assert off_topic.reply == results[("base", "f3")].reply
    assert off_topic.metrics["latency_s"] > 0 and off_topic.passages is None
    assert not results[("base+rag", "f1")].abstained and results[("base+rag", "f1")].passages


def test_side_by_side_sorts_by_difference_and_gives_training_examples(workspace, chat, tiny_adapter, tmp_path):
    ws = workspace
    evals = open_evals(ws, chat)
    ref = tmp_path / "ref.jsonl"
    ref.write_text(
        "".join(
            json.dumps({"prompt": p, "completion": c}) + "\n"
            for p, c in [
                ("hello", "Ahoy, rider! Hello there."),
                ("What is the capital of France?", "Paris."),
                ("Tell me about bikes", "Bikes are great. Fair winds!"),
            ]
        )
    )
    run = evals.runs.start(
        load_reference_file(ref), evals.runs.resolve_arms("base,tuned", "off"), OPTS, background=False
    )
    assert run.status == "done"
    rows = side_by_side(evals.store, run.id, "tiny-lora", "base", "ref_loss", order="a_worse")
    diffs = [r.diff for r in rows]
    assert len(rows) == 3 and diffs == sorted(diffs, reverse=True)  # loss: higher A-B is worse for A first
    rows = side_by_side(evals.store, run.id, "tiny-lora", "base", "rouge_l", order="a_better")
    assert [r.diff for r in rows] == sorted([r.diff for r in rows], reverse=True)
    messages, reply = training_example(evals.store, run.id, "tiny-lora", rows[0].item_id)
    assert messages[-1]["role"] == "user" and reply == evals.store.result(run.id, "tiny-lora", rows[0].item_id).reply
    with pytest.raises(ValidationError):
        side_by_side(evals.store, run.id, "tiny-lora", "base+rag")


def test_labelled_items_get_classification_metrics(workspace, chat, tmp_path):
    chat.retriever = None
    evals = open_evals(workspace, chat)
    ref = tmp_path / "labels.jsonl"
    ref.write_text(
        "".join(
            json.dumps({"prompt": f"Is this good? {i}", "completion": lab, "label": lab}) + "\n"
            for i, lab in enumerate(["good", "bad", "good", "bad"])
        )
    )
    run = evals.runs.start(
        load_reference_file(ref),
        evals.runs.resolve_arms("base", "off"),
        RunOptions(max_new_tokens=4, semantic=False, score_references=False),
        background=False,
    )
    summary = aggregate_run(evals.store, run.id)
    report = summary.classification["base"]
    assert report.labels == ["bad", "good"] and report.n == 4
    assert sum(sum(row.values()) for row in report.confusion.values()) == 4
    assert "accuracy" in summary.metrics["base"] and "macro_f1" in summary.metrics["base"]
    assert "semantic" not in summary.metrics["base"] and "ref_loss" not in summary.metrics["base"]


def test_bad_requests_fail_before_anything_is_stored(workspace, chat, facts_file):
    evals = open_evals(workspace, chat)
    evalset = load_facts(facts_file)
    arms = evals.runs.resolve_arms("base", "off")
    with pytest.raises(ValidationError):
        evals.runs.start(evalset, arms, RunOptions(max_new_tokens=0))
    with pytest.raises(ValidationError):
        evals.runs.start(evalset, [], OPTS)
    assert evals.store.list_runs() == []


def test_cancel_stops_a_run_and_keeps_its_results(workspace, chat, facts_file):
    evals = open_evals(workspace, chat)
    evalset = load_facts(facts_file)
    ids = []
    # cancel from the progress callback, i.e. right after the first item was stored
    run = evals.runs.start(
        evalset,
        evals.runs.resolve_arms("base", "off"),
        OPTS,
        progress=lambda done, total: evals.runs.cancel(ids[0]) if ids else None,
    )
    ids.append(run.id)
    final = evals.runs.wait(run.id, timeout=120)
    if final.done == final.total:  # the run beat the append; cancelling a finished run is a no-op
        assert final.status == "done" and not evals.runs.cancel(run.id)
        return
    assert final.status == "cancelled" and 1 <= final.done < final.total
    assert len(evals.store.results(run.id)) == final.done
    with pytest.raises(NotFoundError):
        evals.store.get_run("nope")


def test_cancel_keeps_every_reply_measured_before_it(workspace, chat, tiny_adapter, facts_file):
    evals = open_evals(workspace, chat)
    ids: list[str] = []
    seen: list[int] = []

    def progress(done, total):
        seen.append(done)
        if ids and done == 2:
            evals.runs.cancel(ids[0])

    run = evals.runs.start(
        load_facts(facts_file), evals.runs.resolve_arms("base,tuned", "off"), OPTS, progress=progress
    )
    ids.append(run.id)
    final = evals.runs.wait(run.id, timeout=120)
    stored = evals.store.results(run.id)
    assert seen[:2] == [1, 2]  # progress moves reply by reply, not item by item
    assert len(stored) == final.done and len({(r.arm, r.item_id) for r in stored}) == final.done
    if final.done < final.total:  # cancelled before the last reply (the usual case)
        assert final.status == "cancelled" and final.done >= 2


def test_replies_are_asked_for_one_adapter_at_a_time_within_a_block():
    # arms base, base+rag, tuned, tuned+rag: keys (engine, adapter) equal in pairs
    keys = [("e", None), ("e", None), ("e", "t"), ("e", "t")]
    order = answering_order(keys, n_items=5, block=2)
    assert sorted(order) == [(a, i) for a in range(4) for i in range(5)]  # each reply once
    assert order[:8] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1)]
    assert order[-4:] == [(0, 4), (1, 4), (2, 4), (3, 4)]  # the last block holds what is left
    # arms that share an adapter go together even when they are not neighbours
    mixed = answering_order(["a", "b", "a"], n_items=2, block=8)
    assert mixed == [(0, 0), (0, 1), (2, 0), (2, 1), (1, 0), (1, 1)]
    assert answering_order(["a"], n_items=0, block=8) == []


def test_interrupted_runs_are_marked_failed_on_restart(workspace, chat, facts_file):
    import subprocess
    import sys

    ws = workspace
    evals = open_evals(ws, chat)
    evalset = load_facts(facts_file)
    arms = evals.runs.resolve_arms("base", "off")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        runs = {}
        for name, pid in (("dead", int(dead.stdout)), ("live", live.pid)):
            run = evals.store.create_run(
                set_kind="facts",
                set_name=name,
                set_fingerprint=evalset.fingerprint,
                dataset_version=None,
                base_model="tiny",
                arms=arms,
                options={},
                items=evalset.items,
            )
            evals.store.set_status(run.id, "running")
            with ws.db.transaction() as conn:
                conn.execute("UPDATE eval_runs SET pid=? WHERE id=?", (pid, run.id))
            runs[name] = run.id
        open_evals(ws, chat)  # a process starting up beside a live `tailor eval`
        gone = evals.store.get_run(runs["dead"])
        assert gone.status == "failed" and "interrupted" in gone.error
        assert evals.store.get_run(runs["live"]).status == "running"
    finally:
        live.kill()
        live.wait()


def test_retrieval_arms_decode_with_the_reading_options(workspace, chat, facts_file, retriever, monkeypatch):
    """An evaluation's retrieval arm gets the same decoding for sources as the chat."""
    monkeypatch.setenv("TAILOR_COPY_BIAS", "1.5")
    seen = []
    real_stream = chat.engine.stream
    monkeypatch.setattr(
        chat.engine, "stream", lambda m, o=None, adapter=None: seen.append(o) or real_stream(m, o, adapter)
    )
    evals = open_evals(workspace, chat)
    run = evals.runs.start(load_facts(facts_file), evals.runs.resolve_arms("base", "off,on"), OPTS, background=False)
    assert run.status == "done"
    grounded = [o for o in seen if o.copy_source]
    assert grounded and all(o.copy_bias == 1.5 for o in grounded)
    assert any(o.copy_bias == 0 and not o.copy_source for o in seen)  # the plain arm and sourceless items
    # answer focus: a span chosen from the sources the model reads, favoured while decoding
    monkeypatch.setenv("TAILOR_ANSWER_FOCUS", "3")
    seen.clear()
    run = evals.runs.start(load_facts(facts_file), evals.runs.resolve_arms("base", "on"), OPTS, background=False)
    focused = [o for o in seen if o.focus_text]
    assert focused and all(o.focus_bias == 3 and o.focus_text in o.copy_source for o in focused)
    assert evals.store.get_run(run.id).options["reading"]["answer_focus"] == 3
