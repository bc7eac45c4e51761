"""`tailor demo load`: the Lantern Bay Bikes demo (demo/)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

from assistant.workspace import Workspace
from demo import load_demo

from .chat_cmds import settings_from


def register(sub, common) -> None:
    p = sub.add_parser(
        "demo",
        parents=[common],
        help="load the Lantern Bay Bikes demo",
        description="Load the demo: tuning pairs and grounding examples into the dataset, "
        "documents into the knowledge index.",
    )
    p.add_argument("action", choices=["load"], help="what to do")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    workspace = Workspace(settings_from(args).home)
    result = load_demo(workspace, progress=lambda f, m: print(f"[{f:4.0%}] {m}", file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(asdict(result), indent=2))
    else:
        print(result.summary())
    return 0 if not result.errors else 1
