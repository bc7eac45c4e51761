"""`tailor docs add|list|remove|show|check` and `tailor search`."""

from __future__ import annotations

import json
import sys

from assistant.progress import Progress, no_progress

from .chat_cmds import settings_from


def register(sub, common) -> None:
    docs = sub.add_parser(
        "docs",
        help="manage the documents the assistant answers from",
        description="Add, list, show and remove knowledge documents (.txt, .md, .html, .pdf).",
    )
    dsub = docs.add_subparsers(dest="docs_command", metavar="ACTION", required=True)

    p = dsub.add_parser(
        "add",
        parents=[common],
        help="add files or folders (folders recursively)",
        description="Add documents. A changed file replaces the document of the same name; "
        "the same content again is skipped. Each file reports its own result.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--json", action="store_true", help="print one JSON list of per-file results")
    p.set_defaults(func=cmd_add)

    p = dsub.add_parser("list", parents=[common], help="list the documents")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = dsub.add_parser("show", parents=[common], help="print a document's extracted text and chunks")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    p = dsub.add_parser("remove", parents=[common], help="remove a document and its chunks")
    p.add_argument("name")
    p.set_defaults(func=cmd_remove)

    p = dsub.add_parser("check", parents=[common], help="check the index against the database, repair it")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "search",
        parents=[common],
        help="search the documents (hybrid dense + BM25)",
        description="Print the best chunks for a query with their dense, BM25 and fused scores.",
    )
    p.add_argument("query")
    p.add_argument("--k", type=int, default=5, help="how many chunks (default 5)")
    p.add_argument("--mode", choices=["hybrid", "dense", "bm25"], default="hybrid")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search)


def _knowledge(args):
    from assistant.workspace import Workspace
    from retrieval import open_knowledge

    return open_knowledge(Workspace(settings_from(args).home))


def _progress() -> Progress:
    """A one-line progress display on stderr (only when it is a terminal)."""
    if not sys.stderr.isatty():
        return no_progress

    def show(done: float, total: float | None = None, message: str = "") -> None:
        frac = done / total if total else 0.0
        sys.stderr.write(f"\r[{int(frac * 100):3d}%] {message[:70]:<70}")
        sys.stderr.flush()

    return show


def cmd_add(args) -> int:
    kb = _knowledge(args)
    results = kb.add_paths(args.paths, progress=_progress())
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2, ensure_ascii=False))
    else:
        for r in results:
            mark = "ERROR" if not r.ok else r.status
            print(f"{mark:<10} {r.message}")
    failed = sum(not r.ok for r in results)
    if failed and not args.json:
        print(f"{failed} of {len(results)} file(s) could not be added", file=sys.stderr)
    return 1 if failed else 0


def cmd_list(args) -> int:
    docs = _knowledge(args).documents()
    if args.json:
        print(json.dumps([d.as_dict() for d in docs], indent=2, ensure_ascii=False))
        return 0
    if not docs:
        print("No documents yet: add some with `tailor docs add PATH`.")
        return 0
    print(f"{'name':<36} {'size':>9} {'chunks':>6}  added")
    for d in docs:
        print(f"{d.name:<36} {d.size_bytes:>9,} {d.chunk_count:>6}  {d.added_at[:16].replace('T', ' ')}")
    return 0


def cmd_show(args) -> int:
    doc = _knowledge(args).document(args.name)
    if args.json:
        out = doc.as_dict() | {
            "text": doc.text,
            "chunks": [
                {"id": c.id, "position": c.position, "heading": c.heading, "text": c.text, "tokens": c.token_count}
                for c in doc.chunks
            ],
        }
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    print(f"{doc.name} · {doc.title} · {doc.kind} · {doc.size_bytes:,} bytes · {doc.chunk_count} chunks\n")
    print(doc.text)
    return 0


def cmd_remove(args) -> int:
    info = _knowledge(args).remove(args.name)
    print(f"removed {info.name} ({info.chunk_count} chunks)")
    return 0


def cmd_check(args) -> int:
    from dataclasses import asdict

    check = _knowledge(args).last_check
    if args.json:
        print(json.dumps(asdict(check), indent=2))
    elif check.ok:
        print(f"index ok: {check.chunks} chunks ({check.kind})")
    else:
        print(f"index repaired ({'; '.join(check.problems)}): {check.chunks} chunks ({check.kind})")
    return 0


def cmd_search(args) -> int:
    passages = _knowledge(args).search(args.query, k=args.k, mode=args.mode)
    if args.json:
        print(json.dumps([p.as_dict() for p in passages], indent=2, ensure_ascii=False))
        return 0
    if not passages:
        print("No documents to search: add some with `tailor docs add PATH`.")
        return 0
    for rank, p in enumerate(passages, start=1):
        s = p.scores
        print(
            f"{rank}. {p.source} — {p.heading}  [dense {s['dense']:.3f} · bm25 {s['bm25']:.2f} · "
            f"fused {s['fused']:.4f}]  (chunk {p.id})"
        )
        snippet = " ".join(p.text.split())
        print(f"   {snippet[:300]}{'…' if len(snippet) > 300 else ''}")
    return 0
