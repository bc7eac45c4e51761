"""The "prompted" arm: the base weights with a style system prompt, built by default from a few
of the user's train pairs (evals/style_prompt.py), on the tiny model."""

import json
from collections import Counter
from dataclasses import replace

import pytest

from assistant.errors import ValidationError
from evals import open_evals
from evals.runner import NO_STYLE_PROMPT, RunOptions
from evals.sets import load_facts, load_reference_file
from evals.store import EvalStore
from evals.style_prompt import (
    INSTRUCTION,
    MAX_EXAMPLE_CHARS,
    default_style_prompt,
    pick_style_examples,
    style_prompt_from_store,
)
from tuning.example import chat_example, make_example
from tuning.example_store import ExampleStore

OPTS = RunOptions(max_new_tokens=8, semantic=False)
STYLE = "Ahoy! Answer like a cheerful bike-shop sailor."


def spy_on_generation(chat, monkeypatch) -> list[tuple[list[dict], str | None]]:
    """Every prompt the engine is asked to answer, with the adapter it answers with."""
    seen: list[tuple[list[dict], str | None]] = []
    real_stream = chat.engine.stream
    monkeypatch.setattr(
        chat.engine,
        "stream",
        lambda m, o=None, adapter=None: seen.append((list(m), adapter)) or real_stream(m, o, adapter),
    )
    return seen


def systems(messages: list[dict]) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "system"]


def test_prompted_arms_answer_with_the_base_weights_and_the_style_prompt(
    workspace, chat, tiny_adapter, tmp_path, monkeypatch
):
    ref = tmp_path / "ref.jsonl"
    ref.write_text(
        "".join(
            json.dumps({"messages": [{"role": "system", "content": "Be formal."}, *turns]}) + "\n"
            for turns in (
                [
                    {"role": "user", "content": "How much is the Harbour Cruiser?"},
                    {"role": "assistant", "content": "499"},
                ],
                [{"role": "user", "content": "Who is Bosun?"}, {"role": "assistant", "content": "The shop dog."}],
            )
        )
    )
    seen = spy_on_generation(chat, monkeypatch)
    evals = open_evals(workspace, chat)
    arms = evals.runs.resolve_arms("base,prompted,tuned", "off,on")
    assert [a.key for a in arms] == ["base", "base+rag", "prompted", "prompted+rag", "tiny-lora", "tiny-lora+rag"]
    run = evals.runs.start(load_reference_file(ref), arms, RunOptions(max_new_tokens=8, style_prompt=STYLE), False)
    assert run.status == "done", run.error

    prompted = [(m, a) for m, a in seen if STYLE in systems(m)]
    assert len(prompted) == 2 * 2  # two items × prompted, prompted+rag
    for messages, adapter in prompted:
        assert adapter is None  # the base weights, although an adapter exists
        assert systems(messages) == [STYLE]  # the style prompt replaces the item's own
    others = [(m, a) for m, a in seen if STYLE not in systems(m)]
    assert len(others) == 2 * 4 and all(systems(m) == ["Be formal."] for m, _ in others)  # kept as before
    assert {a for _, a in others} == {None, "tiny-lora"}
    # the retrieval arm really retrieves: its prompt holds the sources, the plain arm's does not
    results = {(r.arm, r.item_id): r for r in evals.store.results(run.id)}
    assert results[("prompted+rag", "line-1")].passages and results[("prompted", "line-1")].passages is None


def test_system_prompt_option_does_not_reach_the_prompted_arm(workspace, chat, facts_file, monkeypatch):
    chat.retriever = None
    seen = spy_on_generation(chat, monkeypatch)
    evals = open_evals(workspace, chat)
    options = RunOptions(max_new_tokens=8, semantic=False, score_references=False)
    options = replace(options, system_prompt="Be brief.", style_prompt=STYLE)
    run = evals.runs.start(
        load_facts(facts_file), evals.runs.resolve_arms("base,prompted", "off"), options, background=False
    )
    assert run.status == "done"
    assert Counter(systems(m)[0] for m, _ in seen) == {"Be brief.": 3, STYLE: 3}  # base: --system
    assert run.options["system_prompt"] == "Be brief." and run.options["style_prompt"] == STYLE


def test_a_prompted_arm_without_a_style_prompt_is_refused(workspace, chat, facts_file):
    chat.retriever = None
    store = ExampleStore(workspace.db)
    store.add_many(  # pairs exist, but none in the train split: nothing may be built from them
        [chat_example("What is on test?", "The held-out answer.", split="test")]
        + [chat_example("What is on validation?", "Another held-out answer.", split="validation")],
        assign_splits=False,
    )
    evals = open_evals(workspace, chat, examples=store)
    evalset = load_facts(facts_file)
    arms = evals.runs.resolve_arms("base,prompted", "off")
    for style in ("", "  \n\t ", None):  # written empty, or the default from no usable pairs
        with pytest.raises(ValidationError, match="the prompted arm needs a style prompt") as err:
            evals.runs.start(evalset, arms, RunOptions(max_new_tokens=8, style_prompt=style))
        assert str(err.value) == NO_STYLE_PROMPT
    with pytest.raises(ValidationError, match="needs a style prompt"):  # no example store at all
        open_evals(workspace, chat).runs.start(evalset, arms, OPTS)
    with pytest.raises(ValidationError, match="context"):  # cannot fit the tiny model's 512 tokens
        evals.runs.start(evalset, arms, RunOptions(max_new_tokens=8, style_prompt="sail " * 600))
    assert evals.store.list_runs() == []  # refused before a run existed
    # without a prompted arm nothing is needed, and nothing is recorded
    run = evals.runs.start(evalset, evals.runs.resolve_arms("base", "off"), OPTS, background=False)
    assert run.status == "done" and run.options["style_prompt"] is None


def test_the_run_stores_the_style_prompt_it_built(workspace, chat, facts_file, monkeypatch):
    chat.retriever = None
    store = ExampleStore(workspace.db)
    store.add_many(
        [
            chat_example(f"Any tips for the rain, part {i}?", f"Ahoy! Pump your tyres, rider {i}.", split="train")
            for i in range(3)
        ],
        assign_splits=False,
    )
    seen = spy_on_generation(chat, monkeypatch)
    evals = open_evals(workspace, chat, examples=store)
    built = evals.runs.default_style_prompt()
    assert built.startswith(INSTRUCTION) and "rider 2" in built
    run = evals.runs.start(load_facts(facts_file), evals.runs.resolve_arms("prompted", "off"), OPTS, background=False)
    assert run.status == "done", run.error
    assert run.options["style_prompt"] == built  # the text used, not None
    assert EvalStore(workspace.db).get_run(run.id).options["style_prompt"] == built  # and it survives a reopen
    assert seen and all(systems(m) == [built] for m, _ in seen)


# ---- the default style prompt, on its own ------------------------------------------------------


def example(prompt, answer, split="train", status="active", passages=None, earlier=()):
    turns = [{"role": r, "content": c} for r, c in earlier]
    messages = turns + [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return make_example(messages, passages=passages, split=split, status=status)


def test_the_default_uses_only_active_train_pairs_preferring_plain_short_ones():
    long_answer = "Fair winds! " + "Keep the chain oiled and the tyres pumped. " * 20
    examples = [
        example("TEST question?", "TEST answer.", split="test"),
        example("VALIDATION question?", "VALIDATION answer.", split="validation"),
        example("UNASSIGNED question?", "UNASSIGNED answer.", split=None),
        example("EXCLUDED question?", "EXCLUDED answer.", status="excluded"),
        example("SOURCED question?", "SOURCED answer.", passages=[{"text": "a passage", "source": "a.md"}]),
        example("MULTITURN question?", "MULTITURN answer.", earlier=[("user", "hi"), ("assistant", "hello")]),
        example("PLAIN one?", "Ahoy, PLAIN one."),
        example("LONG one?", long_answer),
        example("PLAIN two?", "Ahoy, PLAIN two."),
    ]
    prompt = default_style_prompt(examples)
    assert prompt == default_style_prompt(list(examples))  # deterministic
    assert prompt.splitlines()[0] == INSTRUCTION
    for word in ("TEST", "VALIDATION", "UNASSIGNED", "EXCLUDED"):  # held out or not trained on: never shown
        assert word not in prompt
    # plain single-turn pairs first, then a long one (trimmed) before sources or earlier turns
    assert [p for p, _ in pick_style_examples(examples)] == ["PLAIN one?", "PLAIN two?", "LONG one?"]
    assert "SOURCED" not in prompt and "MULTITURN" not in prompt
    long_reply = next(line for line in prompt.splitlines() if line.startswith("Reply: Fair winds"))
    assert len(long_reply) <= len("Reply: ") + MAX_EXAMPLE_CHARS and long_reply.endswith("…")
    # with fewer plain pairs, the next best fill in (sources before earlier turns would be wrong)
    assert [p for p, _ in pick_style_examples(examples, n=5)][-2:] == ["MULTITURN question?", "SOURCED question?"]


def test_the_default_is_empty_without_pairs_and_stops_reading_early(workspace):
    assert default_style_prompt([]) == "" and style_prompt_from_store(None) == ""
    assert default_style_prompt([example("q?", "a.", split="test")]) == ""
    assert style_prompt_from_store(ExampleStore(workspace.db)) == ""

    def endless():
        for i in range(3):
            yield example(f"question {i}?", f"answer {i}.")
        raise AssertionError("read past three ideal pairs")

    assert len(pick_style_examples(endless())) == 3
    # the same question twice is shown once
    twice = [example("same?", "one."), example("same?", "two."), example("other?", "three.")]
    assert [p for p, _ in pick_style_examples(twice)] == ["same?", "other?"]
