"""Blind pairwise votes: identities stay hidden until the vote (through the service, the
Gradio handler and the HTTP API), sides are randomised, and wins are counted for the arm
that was on the chosen side."""

import dataclasses
import json
import random

import pytest

from assistant.errors import NotFoundError, ValidationError
from evals import open_evals
from evals.runner import RunOptions
from evals.sets import load_facts
from evals.votes import VoteService

QUICK = RunOptions(max_new_tokens=8, semantic=False, score_references=False)
SECRETS = ("tiny-lora", "+rag")  # arm names that must not appear before a vote


@pytest.fixture
def voted_run(workspace, chat, tiny_adapter, facts_file):
    chat.retriever = None
    evals = open_evals(workspace, chat)
    run = evals.runs.start(
        load_facts(facts_file), evals.runs.resolve_arms("base,tuned", "off"), QUICK, background=False
    )
    assert run.status == "done"
    return evals, run


def test_pair_carries_no_identity(voted_run):
    evals, run = voted_run
    pair = evals.votes.next_pair(run.id)
    assert [f.name for f in dataclasses.fields(pair)] == ["pair_id", "prompt", "reply_a", "reply_b"]
    blob = json.dumps(dataclasses.asdict(pair))
    assert not any(s in blob for s in SECRETS)
    assert pair.prompt in {i.question for i in evals.store.items(run.id)}
    replies = {r.reply for r in evals.store.results(run.id)}
    assert pair.reply_a in replies and pair.reply_b in replies


def test_sides_are_randomised_and_votes_count_for_the_chosen_side(voted_run):
    evals, run = voted_run
    votes = VoteService(evals.store, rng=random.Random(5))
    sides = []
    for _ in range(30):
        pair = votes.next_pair(run.id, "base", "tiny-lora")
        # a voter who always prefers the tuned reply, wherever it is shown
        tuned_reply = {r.item_id: r.reply for r in evals.store.results(run.id, "tiny-lora")}
        stored = evals.store.get_pair(pair.pair_id)
        tuned_side = "a" if stored["arm_a"] == "tiny-lora" else "b"
        sides.append(tuned_side)
        assert (pair.reply_a if tuned_side == "a" else pair.reply_b) == tuned_reply[stored["item_id"]]
        out = votes.vote(pair.pair_id, "A better" if tuned_side == "a" else "B better")
        assert out.winner == "tiny-lora" and {out.arm_a, out.arm_b} == {"base", "tiny-lora"}
    assert 5 <= sides.count("a") <= 25  # both orientations happen
    rates = {(r.player, r.opponent): r for r in votes.win_rates()}
    tuned = rates[("tiny-lora", "all")]
    assert (tuned.n, tuned.wins, tuned.losses) == (30, 30, 0) and tuned.win_rate == 1.0
    assert tuned.lo == pytest.approx(0.8865, abs=1e-3)  # Wilson lower bound for 30/30
    assert rates[("base", "tiny-lora")].wins == 0 and rates[("base", "tiny-lora")].losses == 30
    assert [r.player for r in votes.ratings()] == ["tiny-lora", "base"]


def test_ties_and_both_bad(voted_run):
    evals, run = voted_run
    for choice in ("tie", "both bad", "tie"):
        evals.votes.vote(evals.votes.next_pair(run.id).pair_id, choice)
    rates = {(r.player, r.opponent): r for r in evals.votes.win_rates(run.id)}
    base = rates[("base", "all")]
    assert (base.n, base.wins, base.ties, base.both_bad) == (3, 0, 2, 1)
    ratings = evals.votes.ratings()  # two ties: equal strengths; both-bad is left out
    assert ratings[0].strength == pytest.approx(ratings[1].strength)
    assert sum(r.games for r in ratings) == 4


def test_bad_votes_are_refused_and_lose_nothing(voted_run):
    evals, run = voted_run
    pair = evals.votes.next_pair(run.id)
    with pytest.raises(ValidationError):
        evals.votes.vote(pair.pair_id, "C better")
    evals.votes.vote(pair.pair_id, "a")
    with pytest.raises(ValidationError, match="already voted"):
        evals.votes.vote(pair.pair_id, "b")
    with pytest.raises(NotFoundError):
        evals.votes.vote("no-such-pair", "a")
    with pytest.raises(ValidationError):
        evals.votes.next_pair(run.id, "base", "base")
    assert len(evals.store.votes()) == 1


def test_gradio_handlers_hide_identities_until_the_vote(voted_run, workspace):
    import gradio as gr

    from ui.eval_tab import build_eval_tab

    evals, run = voted_run
    with gr.Blocks():
        tab = build_eval_tab(evals)
    out = tab.next_pair(run.id, "any two", "any two")
    assert len(out) == 5
    assert not any(s in json.dumps(out) for s in SECRETS)
    pair_id = out[0]
    cleared, reveal, win_df, bt_df = tab.vote["b"](pair_id)
    assert cleared == "" and "tiny-lora" in reveal and "base" in reveal
    assert set(win_df["player"]) == {"base", "tiny-lora"} and len(bt_df) == 2


def test_http_api_hides_identities_until_the_vote(voted_run):
    """The same through the running app's API, as a script using gradio_client would see it."""
    import gradio as gr
    from gradio_client import Client

    from ui.eval_tab import build_eval_tab

    evals, run = voted_run
    with gr.Blocks() as demo:
        build_eval_tab(evals)
    demo.queue()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        out = client.predict(run.id, "any two", "any two", api_name="/eval_next_pair")
        assert not any(s in json.dumps(out) for s in SECRETS)
        pair_id = out[0]
        after = client.predict(pair_id, api_name="/eval_vote_a")
        assert "tiny-lora" in after[1]
        assert len(evals.store.votes(run.id)) == 1
    finally:
        demo.close()
