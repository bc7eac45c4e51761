"""`tailor serve`, `tailor chat`, `tailor models`."""

from __future__ import annotations

import argparse
import json
import sys

from app import add_serve_arguments, serve, settings_from_args
from assistant.settings import Settings


def settings_from(args, **extra) -> Settings:
    return Settings.from_env(home=getattr(args, "workspace", None), model=getattr(args, "model", None), **extra)


def register(sub, common) -> None:
    p = sub.add_parser(
        "serve",
        parents=[common],
        help="start the web app (same as python app.py)",
        description="Start the web app. Off 127.0.0.1 it requires --auth or TAILOR_AUTH.",
    )
    add_serve_arguments(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "chat",
        parents=[common],
        help="send one message and print the reply",
        description="Send one message to the assistant and print the reply. The exchange is "
        "saved in the conversation log like a chat in the browser.",
    )
    p.add_argument("message", help="the message to send")
    p.add_argument("--conversation", metavar="ID", help="continue this conversation")
    p.add_argument("--system", metavar="TEXT", help="system prompt")
    p.add_argument(
        "--adapter",
        metavar="NAME",
        default=None,
        help="answer with this tuned adapter (default: the active one, or 'base')",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="sampling temperature; the default 0 always picks the most likely word, so scripts get "
        "the same answer every time (the web UI defaults to 0.3)",
    )
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument(
        "--rag",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="answer from your documents, with citations (--no-rag turns it off; default: the "
        "conversation's setting, off for a new one)",
    )
    p.add_argument("--k", type=int, default=4, help="with --rag: how many passages go into the prompt (default 4)")
    p.add_argument(
        "--no-source",
        choices=("answer", "decline"),
        default=None,
        help="with --rag, when no document supports an answer: answer without sources (marked) or "
        "decline (default: $TAILOR_NO_SOURCE or answer)",
    )
    p.add_argument("--json", action="store_true", help="print JSON: reply, conversation_id, model, latency")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("models", parents=[common], help="list the base model and tuned adapters")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)


def cmd_serve(args) -> int:
    serve(settings_from_args(args))
    return 0


def cmd_chat(args) -> int:
    from assistant.chat import ChatRequest
    from assistant.engine import GenerationOptions
    from assistant.runtime import open_core

    core = open_core(settings_from(args), progress=lambda m: print(m, file=sys.stderr, flush=True))
    defaults = GenerationOptions()
    options = GenerationOptions(
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens or defaults.max_new_tokens,
    )
    model = args.adapter or core.chat.default_model()
    if args.rag is not False:  # cheap: the embedding model loads only when retrieval runs
        from retrieval import open_knowledge

        core.chat.retriever = open_knowledge(core.workspace)
    request = ChatRequest(
        text=args.message,
        conversation_id=args.conversation,
        model=model,
        system_prompt=args.system,
        options=options,
        rag=args.rag,
        k=args.k,
        no_source=args.no_source,
    )
    if args.json:
        turn, reply = core.chat.chat(request)
        print(
            json.dumps(
                {
                    "reply": reply.content,
                    "conversation_id": turn.conversation_id,
                    "message_id": reply.id,
                    "model": reply.model,
                    "adapter": reply.adapter,
                    "latency_s": round((reply.latency_ms or 0) / 1000, 3),
                    "prompt_tokens": reply.prompt_tokens,
                    "completion_tokens": reply.completion_tokens,
                    "finish_reason": reply.finish_reason,
                    # {"abstained", "declined", "no_source", "reason", "passages": [{"id", "source", ...}]} or null
                    "retrieval": reply.retrieval,
                },
                ensure_ascii=False,
            )
        )
        return 0
    turn = core.chat.send(request)
    shown = ""
    for text in turn:  # stream to the terminal as the text grows
        if text.startswith(shown):
            sys.stdout.write(text[len(shown) :])
            sys.stdout.flush()
            shown = text
    reply = turn.wait()
    if reply.content.startswith(shown):
        sys.stdout.write(reply.content[len(shown) :])
    sys.stdout.write("\n")
    if reply.retrieval and reply.retrieval.get("abstained") and not reply.retrieval.get("declined"):
        print("\n(No document supports an answer to this: the reply is the model's own, not from your documents.)")
    for line in sources_lines(reply.retrieval):
        print(line)
    print(f"[conversation {turn.conversation_id}]", file=sys.stderr)
    return 0


SNIPPET_CHARS = 160


def sources_lines(retrieval: dict | None) -> list[str]:
    """The sources under a reply: each cited chunk's document and section, then the sentences
    the model read from it (its evidence), or the chunk's start where it has none (the
    closest passages of a question the documents did not support)."""
    if not retrieval or not retrieval.get("passages"):
        return []
    label = "Closest passages" if retrieval.get("abstained") else "Sources"
    lines = ["", f"{label}:"]
    for i, p in enumerate(retrieval["passages"], start=1):
        evidence = [e["text"] for e in p.get("evidence") or [] if e.get("text")]
        text = " ".join((" … ".join(evidence) if evidence else p["text"]).split())
        cut = text[:SNIPPET_CHARS] + ("…" if len(text) > SNIPPET_CHARS else "")
        lines.append(f"  [{i}] {p['source']} — {p.get('heading', '')}: {cut}")
    return lines


def cmd_models(args) -> int:
    from assistant.adapters import BASE, AdapterCatalog
    from assistant.models import resolve_model
    from assistant.workspace import Workspace

    settings = settings_from(args)
    workspace = Workspace(settings.home)
    resolved = resolve_model(
        settings.model,
        workspace.models_dir,
        allow_downloads=settings.allow_downloads,
        progress=lambda m: print(m, file=sys.stderr, flush=True),
    )
    catalog = AdapterCatalog(workspace.adapters_dir)
    active = catalog.active()
    rows = [
        {
            "name": BASE,
            "kind": "base",
            "model": resolved.name,
            "path": str(resolved.path),
            "source": resolved.source,
            "active": active is None,
        }
    ]
    for info in catalog.list():
        rows.append(
            {
                "name": info.name,
                "kind": "full checkpoint" if info.kind == "full" else "adapter",
                "model": info.meta.get("base_model", resolved.name),
                "path": str(info.path),
                "source": "adapter",
                "active": info.name == active,
                "meta": info.meta,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        for r in rows:
            mark = "*" if r["active"] else " "
            print(f"{mark} {r['name']:<24} {r['kind']:<8} {r['model']}  ({r['path']})")
    return 0
