"""Open votes from the Compare tab (evals/chat_votes.py): stored not blind, with the players the
evaluation names its arms by and the two reply ids; a second vote on the same replies replaces
the first; a vote before both replies exist is refused; the counting (a pure function) pools
them with the blind votes and says how many were open; the migration keeps old votes blind.
No model: the comparisons are written into the log as the chat would write them."""

from types import SimpleNamespace

import pytest

from assistant.conversations import ConversationLog
from assistant.db import Database
from assistant.errors import ValidationError
from evals.chat_votes import OpenVotes, parse_open_choice, player_of
from evals.sets import EvalItem
from evals.store import OPEN_VOTE_ITEM, EvalStore, _m001_evals
from evals.votes import VoteService, rate_players, tally_win_rates
from ui.eval_format import OPEN_VOTES_NOTE, win_frame

RAG = {"abstained": False, "declined": False, "no_source": "answer", "reason": "", "passages": []}


@pytest.fixture
def log(workspace):
    return ConversationLog(workspace.db)


@pytest.fixture
def votes(workspace, log):
    return OpenVotes(EvalStore(workspace.db), log)


def comparison(log, left=None, right="tailor-v2", *, left_rag=False, right_rag=False, text="Do you rent tandems?"):
    """Two conversations that got the same message, each with its reply (adapter None: the base)."""
    ids, replies = [], []
    for adapter, rag in ((left, left_rag), (right, right_rag)):
        conv = log.create(model="tiny", adapter=adapter, rag=rag)
        log.add_message(conv.id, "user", text)
        reply = log.add_message(
            conv.id, "assistant", f"reply of {adapter}", model="tiny", adapter=adapter, retrieval=RAG if rag else None
        )
        ids.append(conv.id)
        replies.append(reply)
    return ids, replies


def test_open_vote_is_stored_not_blind_with_players_and_messages(votes, log):
    (left_id, right_id), (left, right) = comparison(log, right_rag=True)
    vote = votes.vote(left_id, right_id, "right")
    assert (vote.left, vote.right, vote.winner, vote.replaced) == ("base", "tailor-v2+rag", "tailor-v2+rag", None)
    assert (vote.left_message_id, vote.right_message_id) == (left.id, right.id)
    [row] = votes.store.votes()
    assert row["blind"] == 0 and row["run_id"] is None and row["item_id"] == OPEN_VOTE_ITEM
    assert (row["player_a"], row["player_b"], row["choice"]) == ("base", "tailor-v2+rag", "b")
    assert (row["message_a"], row["message_b"]) == (left.id, right.id)


def test_a_second_vote_on_the_same_replies_replaces_the_first(votes, log):
    ids, _ = comparison(log)
    votes.vote(*ids, "left")
    again = votes.vote(*ids, "tie")
    assert again.replaced == "left" and again.choice == "tie"
    assert [v["choice"] for v in votes.store.votes()] == ["tie"]
    # the next turn of the same comparison is a new pair of replies: a vote of its own
    for cid in ids:
        log.add_message(cid, "user", "And on Sundays?")
        log.add_message(cid, "assistant", "yes", adapter=log.get(cid).adapter)
    assert votes.vote(*ids, "both bad").replaced is None
    assert [v["choice"] for v in votes.store.votes()] == ["tie", "both_bad"]


def test_votes_without_two_finished_replies_are_refused(votes, log):
    with pytest.raises(ValidationError, match="Send a message first"):
        votes.vote("", "", "left")
    waiting = []
    for _ in range(2):
        conv = log.create()
        log.add_message(conv.id, "user", "hi")  # the reply is still being written
        waiting.append(conv.id)
    with pytest.raises(ValidationError, match="Wait for both replies before voting: the left side"):
        votes.vote(*waiting, "left")
    (left_id, right_id), _ = comparison(log)
    log.add_message(right_id, "user", "one more")  # right is answering a new message
    with pytest.raises(ValidationError, match="Wait for both replies before voting: the right side"):
        votes.vote(left_id, right_id, "left")
    other, _ = comparison(log, text="something else")
    with pytest.raises(ValidationError, match="answer different messages"):
        votes.vote(left_id, other[1], "left")
    same, _ = comparison(log, left="tailor-v2")
    with pytest.raises(ValidationError, match="Both replies come from 'tailor-v2'"):
        votes.vote(*same, "left")
    with pytest.raises(ValidationError, match="not one of"):
        votes.vote(left_id, other[1], "middle")
    assert votes.store.votes() == []


def test_choices_and_player_names():
    assert [parse_open_choice(c) for c in ("Left", "r", "TIE", "both bad", "both_bad")] == [
        "left",
        "right",
        "tie",
        "both_bad",
        "both_bad",
    ]
    # the evaluation's arm keys: the model (None: the base), "+rag" when the documents were on
    assert player_of(SimpleNamespace(adapter=None, retrieval=RAG)) == "base+rag"
    assert player_of(SimpleNamespace(adapter="tailor-v2", retrieval=None)) == "tailor-v2"


def test_counting_pools_open_and_blind_votes_and_says_how_many_were_open():
    rows = [
        {"player_a": "base", "player_b": "tailor-v2", "choice": "b", "blind": 1},
        {"player_a": "tailor-v2", "player_b": "base", "choice": "a", "blind": 0},
        {"player_a": "base", "player_b": "tailor-v2", "choice": "tie", "blind": 0},
        {"player_a": "base", "player_b": "tailor-v2+rag", "choice": "both_bad"},  # no column: blind
    ]
    rates = {(r.player, r.opponent): r for r in tally_win_rates(rows)}
    tuned = rates[("tailor-v2", "all")]
    assert (tuned.n, tuned.wins, tuned.ties, tuned.open_votes) == (3, 2, 1, 2)
    base = rates[("base", "all")]
    assert (base.n, base.losses, base.both_bad, base.open_votes) == (4, 2, 1, 2)
    assert rates[("tailor-v2+rag", "all")].open_votes == 0
    assert [r.player for r in rate_players(rows)] == ["tailor-v2", "base"]
    frame = win_frame(tally_win_rates(rows))
    assert list(frame.columns[:4]) == ["player", "against", "votes", "of which open"]
    assert frame.set_index(["player", "against"]).loc[("tailor-v2", "all"), "of which open"] == 2
    assert "biased" in OPEN_VOTES_NOTE and "Compare" in OPEN_VOTES_NOTE


def test_evaluate_standings_count_an_open_vote_with_a_blind_one(workspace, votes, log):
    store = votes.store
    run = store.create_run(
        set_kind="file",
        set_name="t",
        set_fingerprint="x",
        dataset_version=None,
        base_model="tiny",
        arms=[],
        options={},
        items=[EvalItem("i1", [{"role": "user", "content": "q"}], "r")],
    )
    blind = VoteService(store)
    blind.vote(store.create_pair(run.id, "i1", "base", "tailor-v2"), "B better")
    ids, _ = comparison(log)
    votes.vote(*ids, "right")
    rates = {(r.player, r.opponent): r for r in blind.win_rates()}
    assert (rates[("tailor-v2", "all")].n, rates[("tailor-v2", "all")].wins) == (2, 2)
    assert rates[("tailor-v2", "all")].open_votes == 1
    assert [r.games for r in blind.ratings()] == [2, 2]
    assert len(blind.win_rates(run.id)) == 4  # one run's table: its blind vote only
    assert all(r.n == 1 and r.open_votes == 0 for r in blind.win_rates(run.id))


def test_the_migration_keeps_existing_votes_blind(tmp_path):
    old = Database(tmp_path / "old.db")
    old.migrate("evals", [_m001_evals])  # a workspace from before open votes
    with old.transaction() as conn:
        conn.execute(
            "INSERT INTO eval_votes(pair_id, run_id, item_id, player_a, player_b, choice, created_at)"
            " VALUES ('p1', NULL, 'i1', 'base', 'tailor-v1', 'a', '2025-01-01T00:00:00')"
        )
    store = EvalStore(Database(tmp_path / "old.db"))
    [row] = store.votes()
    assert (row["pair_id"], row["player_a"], row["choice"], row["blind"], row["message_a"]) == (
        "p1",
        "base",
        "a",
        1,
        None,
    )
