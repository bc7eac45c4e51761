"""Blind pairwise votes on the replies of a stored run.

A pair is one prompt and two replies from two arms, sides drawn at random. What the client
gets (`BlindPair`) has an opaque pair id, the prompt and the two replies, and nothing that
names an arm; the server keeps which arm is on which side. The identities come back only
in the answer to the vote (`VoteOutcome`).

Counting: each vote is stored with the *players* on sides A and B ("base", "my-adapter",
"my-adapter+rag", ...), so win rates and Bradley–Terry ratings pool every vote ever cast on
a player, across runs. A vote for side A is a win for whoever was on side A; a tie is half a
win for each in Bradley–Terry; "both bad" says nothing about which is better and is left out
of the ratings (it is counted in the win-rate table's n, as a non-win).

Open votes (evals/chat_votes.py: cast in the Compare tab, where the voter saw the model names)
are stored beside the blind ones with blind=0 and pooled with them; each WinRate says how many
of its votes were open. The counting is two pure functions over vote rows, `tally_win_rates`
and `rate_players`."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from assistant.errors import NotFoundError, ValidationError

from .stats import Comparison, Rating, bradley_terry, wilson_interval
from .store import EvalStore

CHOICES = {"a": "A is better", "b": "B is better", "tie": "Tie", "both_bad": "Both are bad"}
_ALIASES = {
    "a": "a",
    "a better": "a",
    "a is better": "a",
    "b": "b",
    "b better": "b",
    "b is better": "b",
    "tie": "tie",
    "both bad": "both_bad",
    "both_bad": "both_bad",
    "both are bad": "both_bad",
}


def parse_choice(choice: str) -> str:
    key = _ALIASES.get((choice or "").strip().lower())
    if key is None:
        raise ValidationError(f"vote {choice!r} is not one of: A better, B better, tie, both bad")
    return key


@dataclass(frozen=True)
class BlindPair:
    """Everything a voter may see before voting: no arm names, no metrics."""

    pair_id: str
    prompt: str
    reply_a: str
    reply_b: str


@dataclass(frozen=True)
class VoteOutcome:
    pair_id: str
    choice: str
    arm_a: str  # revealed after the vote
    arm_b: str
    winner: str | None  # the arm preferred; None for a tie or both bad


@dataclass(frozen=True)
class WinRate:
    player: str
    opponent: str  # "all" for the player's overall record
    n: int
    wins: int
    losses: int
    ties: int
    both_bad: int
    win_rate: float  # wins / n
    lo: float  # Wilson 95% interval of win_rate
    hi: float
    decisive_rate: float  # wins / (wins + losses): who is preferred when the voter preferred one
    decisive_lo: float
    decisive_hi: float
    open_votes: int = 0  # of the n votes, how many were open (not blind: cast in the Compare tab)


class VoteService:
    def __init__(self, store: EvalStore, rng: random.Random | None = None):
        self.store = store
        self._rng = rng or random.SystemRandom()

    def next_pair(self, run_id: str, arm_x: str | None = None, arm_y: str | None = None) -> BlindPair:
        """A new blind pair from `run_id`: the two arms given (or two drawn at random), on an
        item not yet voted on for those arms where possible, preferring items on which the two
        replies differ (identical replies teach nothing)."""
        run = self.store.get_run(run_id)
        arms = run.arm_keys
        if len(arms) < 2:
            raise ValidationError("blind votes need a run with at least two arms")
        if (arm_x is None) != (arm_y is None):
            raise ValidationError("choose both arms, or neither")
        arm_pairs: list[tuple[str, str]]
        if arm_x is not None:
            assert arm_y is not None  # both or neither, checked above
            for arm in (arm_x, arm_y):
                if arm not in arms:
                    raise ValidationError(f"run {run_id} has no arm {arm!r}")
            if arm_x == arm_y:
                raise ValidationError("choose two different arms")
            arm_pairs = [(arm_x, arm_y)]
        else:
            arm_pairs = [(x, y) for i, x in enumerate(arms) for y in arms[i + 1 :]]
        replies = {(r.arm, r.item_id): r.reply for r in self.store.results(run_id)}
        items = {i.id: i for i in self.store.items(run_id)}
        voted = self.store.voted_pairs(run_id)
        candidates = []
        for item_id in items:
            for x, y in arm_pairs:
                if (x, item_id) not in replies or (y, item_id) not in replies:
                    continue
                fresh = (item_id, *sorted((x, y))) not in voted
                differ = replies[(x, item_id)].strip() != replies[(y, item_id)].strip()
                candidates.append((fresh, differ, item_id, x, y))
        if not candidates:
            raise NotFoundError(f"run {run_id} has no item answered by both arms yet")
        best = max((c[0], c[1]) for c in candidates)
        pool = [c for c in candidates if (c[0], c[1]) == best]
        _, _, item_id, x, y = self._rng.choice(pool)
        if self._rng.random() < 0.5:
            x, y = y, x
        pair_id = self.store.create_pair(run_id, item_id, x, y)
        return BlindPair(pair_id, items[item_id].question, replies[(x, item_id)], replies[(y, item_id)])

    def vote(self, pair_id: str, choice: str) -> VoteOutcome:
        key = parse_choice(choice)
        pair = self.store.get_pair(pair_id)
        arm_a, arm_b = pair["arm_a"], pair["arm_b"]
        self.store.add_vote(pair_id, key, arm_a, arm_b)
        winner = {"a": arm_a, "b": arm_b}.get(key)
        return VoteOutcome(pair_id, key, arm_a, arm_b, winner)

    # ---- tallies ------------------------------------------------------------------------
    def win_rates(self, run_id: str | None = None) -> list[WinRate]:
        """Each player's record overall ("all") and against each opponent, from every vote,
        blind and open (or one run's blind votes), with Wilson intervals."""
        return tally_win_rates(self.store.votes(run_id))

    def ratings(self) -> list[Rating]:
        """Bradley–Terry ratings over every vote ever cast, blind and open (ties count half,
        both-bad is left out)."""
        return rate_players(self.store.votes())


def tally_win_rates(votes: Iterable[Mapping]) -> list[WinRate]:
    """Win rates from vote rows (player_a, player_b, choice, and blind: 1 or 0, 1 when absent):
    each player's record overall ("all") and against each opponent, with Wilson intervals and
    how many of its votes were open. Sorted: overall rows first, best win rate first."""
    # per (player, opponent): wins, losses, ties, both_bad, open
    tally: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for v in votes:
        a, b, c = v["player_a"], v["player_b"], v["choice"]
        is_open = not v.get("blind", 1)
        for me, other, won in ((a, b, c == "a"), (b, a, c == "b")):
            lost = c in ("a", "b") and not won
            for key in ((me, other), (me, "all")):
                t = tally[key]
                t[0] += won
                t[1] += lost
                t[2] += c == "tie"
                t[3] += c == "both_bad"
                t[4] += is_open
    out = []
    for (player, opponent), (w, losses, ties, bb, n_open) in tally.items():
        n = w + losses + ties + bb
        lo, hi = wilson_interval(w, n)
        dlo, dhi = wilson_interval(w, w + losses) if w + losses else (float("nan"), float("nan"))
        out.append(
            WinRate(
                player,
                opponent,
                n,
                w,
                losses,
                ties,
                bb,
                w / n if n else float("nan"),
                lo,
                hi,
                w / (w + losses) if w + losses else float("nan"),
                dlo,
                dhi,
                n_open,
            )
        )
    return sorted(out, key=lambda r: (r.opponent != "all", -r.win_rate if r.n else 0, r.player, r.opponent))


def rate_players(votes: Iterable[Mapping]) -> list[Rating]:
    """Bradley–Terry ratings from vote rows, blind and open alike (a tie is half a win for
    each, both-bad is left out)."""
    comps = []
    for v in votes:
        score = {"a": 1.0, "b": 0.0, "tie": 0.5}.get(v["choice"])
        if score is not None:
            comps.append(Comparison(v["player_a"], v["player_b"], score))
    return bradley_terry(comps)
