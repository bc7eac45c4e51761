"""Open votes from the Compare tab: "this one is better" on the two replies of a comparison.

Unlike a blind vote (evals/votes.py), the voter saw which model wrote which reply, so the vote
is stored as open (blind=0); it is still a vote between two *players* named as the evaluation
names its arms ("base", "tailor-v2", "tailor-v2+rag": evals.store.Arm.key), so win rates and
Bradley–Terry ratings pool it with the blind votes. The players are read from the log, not
from the caller: each side's latest reply records its adapter (None: the base model) and
whether it was answered with retrieval on (its `retrieval` is set).

A comparison is two conversations that got the same message (assistant/compare.py); the vote
is on both sides' latest replies, left = side A, and it keeps their message ids. A second
vote on the same two replies replaces the first. A side still answering has no reply yet, so
a vote then is refused."""

from __future__ import annotations

from dataclasses import dataclass

from assistant.adapters import BASE
from assistant.conversations import ConversationLog, StoredMessage
from assistant.errors import ValidationError

from .store import Arm, EvalStore

# What the Compare tab's buttons say, by choice; stored as the blind votes' "a", "b", "tie", "both_bad".
OPEN_CHOICES = {"left": "Left is better", "right": "Right is better", "tie": "Tie", "both_bad": "Both bad"}
_STORED = {"left": "a", "right": "b", "tie": "tie", "both_bad": "both_bad"}
_ALIASES = {
    "left": "left",
    "l": "left",
    "a": "left",
    "left is better": "left",
    "right": "right",
    "r": "right",
    "b": "right",
    "right is better": "right",
    "tie": "tie",
    "both_bad": "both_bad",
    "both bad": "both_bad",
    "both-bad": "both_bad",
}


def parse_open_choice(choice: str) -> str:
    """ "left", "right", "tie" or "both_bad" (a few spellings accepted)."""
    key = _ALIASES.get((choice or "").strip().lower())
    if key is None:
        raise ValidationError(f"vote {choice!r} is not one of: left, right, tie, both_bad")
    return key


def player_of(reply: StoredMessage) -> str:
    """The player a stored reply counts for: its model (the base, an adapter or a full
    checkpoint), with "+rag" when it was answered with the documents on."""
    return Arm(reply.adapter or BASE, reply.retrieval is not None).key


@dataclass(frozen=True)
class OpenVote:
    choice: str  # "left", "right", "tie" or "both_bad"
    left: str  # the players, e.g. "base" and "tailor-v2+rag"
    right: str
    left_message_id: int
    right_message_id: int
    replaced: str | None = None  # the earlier vote on these two replies that this one replaced

    @property
    def winner(self) -> str | None:
        return {"left": self.left, "right": self.right}.get(self.choice)


class OpenVotes:
    def __init__(self, store: EvalStore, log: ConversationLog):
        self.store = store
        self.log = log

    def latest_replies(
        self, left_conversation_id: str | None, right_conversation_id: str | None
    ) -> tuple[StoredMessage, StoredMessage]:
        """Both sides' latest replies to the same message, or a ValidationError saying why
        there is nothing to vote on yet."""
        ids = [(c or "").strip() for c in (left_conversation_id, right_conversation_id)]
        if not all(ids):
            raise ValidationError("Send a message first: there are no replies to vote on yet.")
        if ids[0] == ids[1]:
            raise ValidationError("Each side needs its own conversation: vote on a comparison from the Compare tab.")
        replies, prompts = [], []
        for label, cid in zip(("left", "right"), ids):
            messages = self.log.get(cid).messages
            if not messages:
                raise ValidationError("Send a message first: there are no replies to vote on yet.")
            if messages[-1].role != "assistant" or len(messages) < 2:
                raise ValidationError(f"Wait for both replies before voting: the {label} side has not answered yet.")
            replies.append(messages[-1])
            prompts.append(messages[-2].content if messages[-2].role == "user" else None)
        if prompts[0] is None or prompts[0] != prompts[1]:
            raise ValidationError(
                "The two sides' latest replies answer different messages: vote on a comparison from the Compare tab."
            )
        return replies[0], replies[1]

    def vote(self, left_conversation_id: str | None, right_conversation_id: str | None, choice: str) -> OpenVote:
        """Record an open vote on a comparison's latest replies (see the module docstring)."""
        key = parse_open_choice(choice)
        left, right = self.latest_replies(left_conversation_id, right_conversation_id)
        players = player_of(left), player_of(right)
        if players[0] == players[1]:
            raise ValidationError(f"Both replies come from {players[0]!r}: there is nothing to compare.")
        earlier = self.store.add_open_vote(left.id, right.id, _STORED[key], *players)
        replaced = None if earlier is None else next(k for k, v in _STORED.items() if v == earlier)
        return OpenVote(key, players[0], players[1], left.id, right.id, replaced)
