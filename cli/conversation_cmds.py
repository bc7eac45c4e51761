"""`tailor conversations import|list`: bring chats exported from ChatGPT or Open WebUI into the
conversation log, and list the log's conversations. Neither loads a model."""

from __future__ import annotations

import json
from pathlib import Path

from .chat_cmds import settings_from


def register(sub, common) -> None:
    p = sub.add_parser(
        "conversations",
        help="import chats from ChatGPT or Open WebUI, list conversations",
        description="The conversation log: the chats in the web app's sidebar.",
    )
    csub = p.add_subparsers(dest="conversations_command", metavar="ACTION", required=True)

    q = csub.add_parser(
        "import",
        parents=[common],
        help="import conversations exported from ChatGPT or Open WebUI",
        description="Import conversations from a ChatGPT export (conversations.json, or the export's .zip) "
        "or an Open WebUI export (Settings > Chats > Export chats, .json), with their titles, dates and "
        "models, so their replies can be rated and curated like chats held here. Only the branch each "
        "conversation last showed is imported (not regenerated replies); images, files and tool calls are "
        "left out. A file goes in whole or not at all; importing it again adds only conversations that "
        "are not here yet.",
    )
    q.add_argument("file", type=Path, help="the export: .json, or ChatGPT's .zip")
    q.add_argument(
        "--format",
        choices=["auto", "chatgpt", "openwebui"],
        default="auto",
        help="the export's format (default: detected from the file)",
    )
    q.add_argument(
        "--json",
        action="store_true",
        help="print JSON: format, imported, already_present, empty, messages, conversation_ids, notes",
    )
    q.set_defaults(func=cmd_import)

    q = csub.add_parser(
        "list",
        parents=[common],
        help="list conversations, newest first",
        description="List the conversation log, most recently updated first.",
    )
    q.add_argument("--query", default="", help="only conversations with these words in the title or a message")
    q.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    q.add_argument("--json", action="store_true", help="print JSON lines, one conversation each")
    q.set_defaults(func=cmd_list)


def _log(args):
    from assistant.conversations import ConversationLog
    from assistant.workspace import Workspace

    return ConversationLog(Workspace(settings_from(args).home).db)


def cmd_import(args) -> int:
    from assistant.chat_import import import_chats

    result = import_chats(_log(args), args.file, args.format)
    if args.json:
        print(
            json.dumps(
                {
                    "format": result.format,
                    "imported": result.imported,
                    "already_present": result.duplicates,
                    "empty": result.empty,
                    "messages": result.messages,
                    "conversation_ids": result.conversation_ids,
                    "notes": result.notes,
                },
                ensure_ascii=False,
            )
        )
    else:
        print(result.summary())
    return 0


def cmd_list(args) -> int:
    conversations = _log(args).list(limit=args.limit, query=args.query)
    for conv in conversations:
        if args.json:
            row = {
                "id": conv.id,
                "title": conv.title,
                "created_at": conv.created_at,
                "updated_at": conv.updated_at,
                "messages": conv.message_count,
                "model": conv.model,
                "adapter": conv.adapter,
                "imported_from": conv.external_id.split(":", 1)[0] if conv.external_id else None,
            }
            print(json.dumps(row, ensure_ascii=False))
        else:
            when = conv.updated_at[:16].replace("T", " ")
            origin = f"  [{conv.external_id.split(':', 1)[0]}]" if conv.external_id else ""
            print(f"{conv.id}  {when}  {conv.message_count:>4} msgs  {conv.title}{origin}")
    return 0
