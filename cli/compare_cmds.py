"""`tailor compare`: one prompt to the base model and a tuned adapter, both replies printed;
`tailor compare-vote`: an open vote on the replies of such a comparison (evals/chat_votes.py),
counted with the blind votes like a vote in the Compare tab."""

from __future__ import annotations

import json
import sys

from .chat_cmds import settings_from


def register(sub, common) -> None:
    p = sub.add_parser(
        "compare",
        parents=[common],
        help="send one message to the base model and an adapter, print both replies",
        description="Send the same message to two models (the base model and ADAPTER by default) and "
        "print both replies, labelled. Each side is saved as its own conversation, like the web app's "
        "Compare tab, so the replies can be rated or edited later.",
    )
    p.add_argument("adapter", metavar="ADAPTER", help="the tuned adapter (right side)")
    p.add_argument("message", help="the message to send to both")
    p.add_argument("--left", metavar="MODEL", default="base", help="the other side: 'base' (default) or an adapter")
    p.add_argument("--system", metavar="TEXT", help="system prompt, the same for both")
    p.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="sampling temperature; the default 0 always picks the most likely word, so the comparison is repeatable",
    )
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument(
        "--json", action="store_true", help="print JSON: left and right, each with model, reply, conversation_id"
    )
    p.set_defaults(func=cmd_compare)

    v = sub.add_parser(
        "compare-vote",
        parents=[common],
        help="vote on the latest replies of a comparison: left, right, tie or both_bad",
        description="Record which of a comparison's latest replies is better, like the Compare tab's buttons: "
        "LEFT and RIGHT are the two conversation ids `tailor compare` printed. It is an open vote (you saw "
        "which model wrote which): the Evaluate tab counts it with the blind votes, marked as open. Voting "
        "again on the same replies replaces the earlier vote.",
    )
    v.add_argument("left", metavar="LEFT", help="the left side's conversation id")
    v.add_argument("right", metavar="RIGHT", help="the right side's conversation id")
    v.add_argument("choice", metavar="CHOICE", help="left, right, tie or both_bad")
    v.add_argument("--json", action="store_true", help="print the vote as JSON")
    v.set_defaults(func=cmd_compare_vote)


def cmd_compare(args) -> int:
    from assistant.compare import SideBySide
    from assistant.engine import GenerationOptions
    from assistant.runtime import open_core

    core = open_core(settings_from(args), progress=lambda m: print(m, file=sys.stderr, flush=True))
    defaults = GenerationOptions()
    options = GenerationOptions(
        temperature=args.temperature, max_new_tokens=args.max_new_tokens or defaults.max_new_tokens
    )
    compare = SideBySide(core.chat)
    left, right = compare.send(
        args.message, left_model=args.left, right_model=args.adapter, system_prompt=args.system, options=options
    )
    replies = compare.wait(left, right)
    sides = [
        {
            "model": model,
            "reply": reply.content,
            "conversation_id": turn.conversation_id,
            "message_id": reply.id,
            "latency_s": round((reply.latency_ms or 0) / 1000, 3),
            "completion_tokens": reply.completion_tokens,
            "finish_reason": reply.finish_reason,
        }
        for model, turn, reply in zip((args.left, args.adapter), (left, right), replies)
    ]
    if args.json:
        print(json.dumps({"left": sides[0], "right": sides[1]}, ensure_ascii=False))
        return 0
    for i, side in enumerate(sides):
        if i:
            print()
        print(f"=== {side['model']} ===")
        print(side["reply"])
        print(f"[conversation {side['conversation_id']}]", file=sys.stderr)
    print(
        f"[vote: tailor compare-vote {sides[0]['conversation_id']} {sides[1]['conversation_id']} "
        "left|right|tie|both_bad]",
        file=sys.stderr,
    )
    return 0


def cmd_compare_vote(args) -> int:
    from assistant.conversations import ConversationLog
    from assistant.workspace import Workspace
    from evals.chat_votes import OpenVotes
    from evals.store import EvalStore

    db = Workspace(settings_from(args).home).db
    vote = OpenVotes(EvalStore(db), ConversationLog(db)).vote(args.left, args.right, args.choice)
    if args.json:
        print(
            json.dumps(
                {
                    "choice": vote.choice,
                    "left": vote.left,
                    "right": vote.right,
                    "winner": vote.winner,
                    "left_message_id": vote.left_message_id,
                    "right_message_id": vote.right_message_id,
                    "replaced": vote.replaced,
                    "blind": False,
                },
                ensure_ascii=False,
            )
        )
        return 0
    said = {"left": f"{vote.left} is better", "right": f"{vote.right} is better"}
    print(f"{said.get(vote.choice, vote.choice.replace('_', ' '))}: {vote.left} (left) vs {vote.right} (right)")
    if vote.replaced is not None:
        print(f"(replaces the earlier vote: {vote.replaced})")
    return 0
