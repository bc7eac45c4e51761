"""`tailor examples ...`: import, export, list, clean, split, undo, and dataset versions."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .chat_cmds import settings_from


def register(sub, common) -> None:
    p = sub.add_parser(
        "examples",
        help="curate training examples (import, export, list, clean, split, versions)",
        description="Curate the training dataset in the workspace.",
    )
    esub = p.add_subparsers(dest="examples_command", metavar="ACTION", required=True)

    q = esub.add_parser(
        "import",
        parents=[common],
        help="import examples from JSONL, CSV, parquet or a datasets folder",
        description="Import examples. The shape of each record is detected: {prompt, completion}, "
        "{messages}, {question, passages, answer}, or a preference pair {prompt, chosen, rejected} "
        "(TRL's, as text or as messages); CSV needs prompt and completion "
        "columns. Bad lines are listed with their line number and reason; good ones are "
        "imported.",
    )
    q.add_argument("file", type=Path)
    q.add_argument("--tags", default="", help="comma-separated tags to add to every imported example")
    q.add_argument("--batch-size", type=int, default=2000, help="rows per database transaction (default 2000)")
    q.add_argument("--json", action="store_true", help="print the result as JSON")
    q.set_defaults(func=cmd_import)

    q = esub.add_parser(
        "export",
        parents=[common],
        help="export examples or a dataset version",
        description="Export active examples (or a dataset version) as chat messages JSONL, "
        "prompt/completion JSONL, or a Hugging Face datasets folder (a .parquet "
        "destination writes one parquet file); or the preference pairs as TRL's "
        "prompt/chosen/rejected JSONL (--format preference).",
    )
    q.add_argument("file", type=Path)
    q.add_argument(
        "--format",
        choices=["messages", "prompt-completion", "preference", "hf"],
        default="messages",
        help="preference: TRL's prompt/chosen/rejected, the preference pairs only (the other formats: the "
        "examples only)",
    )
    q.add_argument(
        "--rendered", action="store_true", help="inline retrieved passages into the user turn, as the trainer sees them"
    )
    q.add_argument("--version", type=int, help="export this dataset version instead of the current examples")
    q.add_argument("--split", choices=["train", "validation", "test"], help="only this split")
    q.add_argument("--all", action="store_true", help="include examples excluded from training")
    q.set_defaults(func=cmd_export)

    q = esub.add_parser(
        "list", parents=[common], help="list examples", description="List examples, optionally filtered."
    )
    q.add_argument("--query", default="", help="words in the prompt or answer")
    q.add_argument("--tag")
    q.add_argument("--split", choices=["train", "validation", "test"])
    q.add_argument("--label")
    q.add_argument("--source", choices=["chat", "import", "manual"])
    q.add_argument("--status", choices=["active", "excluded"])
    q.add_argument("--kind", choices=["example", "pair"], help="only examples, or only preference pairs")
    q.add_argument("--limit", type=int, default=50, help="at most this many (default 50; 0 = all)")
    q.add_argument("--json", action="store_true", help="print JSON lines, one example each")
    q.set_defaults(func=cmd_list)

    q = esub.add_parser(
        "clean",
        parents=[common],
        help="report (and fix) dataset problems",
        description="Report exact and near duplicates, private data, conflicts, empty and over-long "
        "examples and unnormalised text. --apply fixes them as one undoable change.",
    )
    q.add_argument("--apply", action="store_true", help="apply the fixes (undo with `tailor examples undo`)")
    q.add_argument("--only", default="", help="comma-separated checks/fixes, e.g. duplicate,pii")
    q.add_argument("--threshold", type=float, default=None, help="near-duplicate cosine similarity (default 0.95)")
    q.add_argument("--max-tokens", type=int, default=None, help="training max length in tokens (default 1024)")
    q.add_argument("--no-embeddings", action="store_true", help="skip the near-duplicate check")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_clean)

    q = esub.add_parser(
        "split",
        parents=[common],
        help="assign train/validation/test splits",
        description="Assign splits to examples that have none and print the counts. Assigned splits "
        "never change unless --reassign is given.",
    )
    q.add_argument("--ratios", help="train,validation,test ratios, e.g. 80,10,10 (saved for later examples)")
    q.add_argument("--reassign", action="store_true", help="start over: WARNING, this changes the test split")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_split)

    q = esub.add_parser(
        "undo",
        parents=[common],
        help="undo the latest change to examples (or a given one)",
        description="Undo an edit, delete, bulk tag or cleaning fix (the rows come back as they "
        "were), or an import (the rows it added are removed; an interrupted import is "
        "listed as PARTIAL).",
    )
    q.add_argument("batch", nargs="?", help="change id (see --list); default: the latest")
    q.add_argument("--list", action="store_true", help="list recent changes that can be undone")
    q.set_defaults(func=cmd_undo)

    q = esub.add_parser("snapshot", parents=[common], help="freeze the dataset into a new version")
    q.add_argument("--note", default="")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_snapshot)

    q = esub.add_parser("versions", parents=[common], help="list dataset versions")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_versions)

    q = esub.add_parser("diff", parents=[common], help="compare two dataset versions")
    q.add_argument("a", type=int)
    q.add_argument("b", type=int)
    q.set_defaults(func=cmd_diff)


def _curation(args):
    from assistant.workspace import Workspace
    from tuning import open_curation

    return open_curation(Workspace(settings_from(args).home))


def _partial_note(op: dict) -> str:
    return (
        f"Import #{op['id']} of {op['file_name']} is PARTIAL: {op['examples']} examples landed before it stopped. "
        f"`tailor examples undo {op['batch']}` removes exactly those; importing the file again adds only the "
        "rest."
    )


def cmd_import(args) -> int:
    from assistant.errors import ValidationError
    from tuning.dataset_import import import_file

    from .progress import tqdm_progress

    if not args.file.exists():
        raise ValidationError(f"{args.file} does not exist")
    cur = _curation(args)
    size = args.file.stat().st_size if args.file.is_file() else None
    try:
        with tqdm_progress(
            f"importing {args.file.name}", total=size, unit="B", unit_scale=True, disable=args.json
        ) as progress:
            result = import_file(cur.store, args.file, batch_size=args.batch_size, progress=progress, tags=args.tags)
    except BaseException as exc:
        op = getattr(exc, "partial_import", None)
        if op is None:
            raise
        print(_partial_note(op), file=sys.stderr)
        if isinstance(exc, KeyboardInterrupt):
            return 130
        raise
    if args.json:
        print(
            json.dumps(
                {
                    "imported": result.imported,
                    "already_present": result.duplicates,
                    "bad_total": result.bad_total,
                    "formats": result.formats,
                    "encoding": result.encoding,
                    "seconds": round(result.seconds, 3),
                    "operation": result.operation,
                    "undo": result.batch,
                    "status": result.status,
                    "bad": [{"line": b.line, "reason": b.reason} for b in result.bad],
                    "interrupted": [
                        {
                            "operation": op["id"],
                            "file": op["file_name"],
                            "examples": op["examples"],
                            "undo": op["batch"],
                            "status": op["status"],
                        }
                        for op in result.interrupted
                    ],
                },
                ensure_ascii=False,
            )
        )
    else:
        print(
            f"Imported {result.imported} examples ({result.imported / max(result.seconds, 1e-9):.0f} rows/s)."
            + (f" {result.duplicates} already present (skipped)." if result.duplicates else "")
            + (
                " Records read: " + ", ".join(f"{n} {shape}" for shape, n in sorted(result.formats.items())) + "."
                if "preference" in result.formats  # say so when some were preference pairs
                else ""
            )
        )
        for b in result.bad:
            print(f"{args.file}:{b.line}: {b.reason}", file=sys.stderr)
        if result.bad_total > len(result.bad):
            print(f"... {result.bad_total - len(result.bad)} more bad lines", file=sys.stderr)
        print(f"{result.bad_total} bad line(s) skipped." if result.bad_total else "No bad lines.")
        for note in result.notes():
            print(note)
        if result.imported:
            print(f"Undo this import with `tailor examples undo {result.batch}`.")
    return 0


def cmd_export(args) -> int:
    from tuning.dataset_export import export_examples, for_format
    from tuning.example_table import ExampleFilter

    cur = _curation(args)
    if args.version is not None:
        examples = cur.versions.examples(args.version)
        if args.split:
            examples = [e for e in examples if e.split == args.split]
    else:
        examples = cur.store.list(ExampleFilter(split=args.split, status=None if args.all else "active"))
    dest = export_examples(examples, args.file, args.format, rendered=args.rendered)
    what = "preference pairs" if args.format == "preference" else "examples"
    print(f"Exported {len(for_format(examples, args.format))} {what} to {dest} ({args.format}).")
    return 0


def cmd_list(args) -> int:
    from tuning.example_table import ExampleFilter

    cur = _curation(args)
    flt = ExampleFilter(
        query=args.query,
        tag=args.tag,
        split=args.split,
        label=args.label,
        source=args.source,
        status=args.status,
        kind=args.kind,
    )
    examples = cur.store.list(flt, limit=args.limit or None)
    if args.json:
        for ex in examples:
            print(json.dumps(ex.as_dict(), ensure_ascii=False))
        return 0
    for ex in examples:
        prov = (
            f" conv {ex.conversation_id} msg {ex.message_id}{' edited' if ex.edited else ''}" if ex.message_id else ""
        )
        tags = f" [{', '.join(ex.tags)}]" if ex.tags else ""
        label = f" ({ex.label})" if ex.label else ""
        print(f"{ex.id:>6} {ex.split or '-':<10} {ex.status:<8} {ex.source:<6}{label}{tags}{prov}")
        print(f"       Q: {_short(ex.prompt)}\n       A: {_short(ex.answer)}")
        if ex.rejected is not None:
            print(f"       rejected: {_short(ex.rejected)}")
    total = cur.store.count(flt)
    print(f"{len(examples)} of {total} examples; by split: {cur.store.counts_by_split()}", file=sys.stderr)
    return 0


def _short(text: str, n: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _tokenizer(args):
    """The chat model's tokenizer, for the over-long check (None if the model cannot be found)."""
    from assistant.errors import TailorError
    from assistant.models import resolve_model
    from assistant.workspace import Workspace

    settings = settings_from(args)
    try:
        resolved = resolve_model(
            settings.model,
            Workspace(settings.home).models_dir,
            allow_downloads=settings.allow_downloads,
            progress=lambda m: print(m, file=sys.stderr, flush=True),
        )
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(resolved.path)
    except (TailorError, OSError, ValueError) as exc:
        print(f"(over-long check skipped: {exc})", file=sys.stderr)
        return None


def cmd_clean(args) -> int:
    from tuning.cleaning import (
        DEFAULT_MAX_TOKENS,
        DEFAULT_NEAR_THRESHOLD,
        KINDS,
        apply_fixes,
        build_report,
        token_counter,
    )

    cur = _curation(args)
    only = [k.strip() for k in args.only.split(",") if k.strip()] or list(KINDS)
    embedder = None
    if "near_duplicate" in only and not args.no_embeddings:
        from assistant.embeddings import get_embedder

        embedder = get_embedder()
    tokenizer = _tokenizer(args) if "too_long" in only else None
    report = build_report(
        cur.store,
        embedder=embedder,
        count_tokens=token_counter(tokenizer) if tokenizer is not None else None,
        max_tokens=args.max_tokens or DEFAULT_MAX_TOKENS,
        near_threshold=args.threshold or DEFAULT_NEAR_THRESHOLD,
        checks=only,
    )
    fix = apply_fixes(cur.store, report, kinds=only) if args.apply else None
    if args.json:
        out = report.as_dict()
        if fix is not None:
            out["fixed"] = {
                "batch": fix.batch,
                "deleted": fix.deleted,
                "excluded": fix.excluded,
                "rewritten": fix.rewritten,
            }
        print(json.dumps(out, ensure_ascii=False))
        return 0
    print(report.summary())
    for f in report.findings:
        keep = f" (fix keeps {f.keep})" if f.keep is not None else ""
        print(f"  {f.kind:<15} examples {', '.join(map(str, f.example_ids))}: {f.detail}{keep}")
    if fix is not None:
        print(fix.summary())
    elif report.findings:
        print("Run again with --apply to fix these (undoable with `tailor examples undo`).")
    return 0


def cmd_split(args) -> int:
    from tuning.splits import SplitConfig, assign_splits, get_config, parse_ratios, reassign_all, set_config

    cur = _curation(args)
    config = get_config(cur.store)
    if args.ratios:
        config = set_config(cur.store, SplitConfig(parse_ratios(args.ratios), config.seed))
    added = reassign_all(cur.store, config) if args.reassign else assign_splits(cur.store, config)
    counts = cur.store.counts_by_split()
    if args.json:
        print(json.dumps({"ratios": config.ratios, "assigned": added, "counts": counts}))
    else:
        ratios = "/".join(f"{r * 100:.0f}" for r in config.ratios)
        print(f"Ratios {ratios}; newly assigned: {added}; active examples by split: {counts}")
    return 0


def cmd_undo(args) -> int:
    cur = _curation(args)
    if args.list:
        for b in cur.store.undo_batches():
            print(f"{b['batch']}  {b['description']}  ({b['examples']} examples)")
        return 0
    target = args.batch
    if target is None:
        recent = cur.store.undo_batches(1)
        target = recent[0]["batch"] if recent else None
    kind = next((b["kind"] for b in cur.store.undo_batches(1000) if b["batch"] == target), "edit")
    n = cur.store.undo(target)
    print(f"Removed {n} example(s) that the import added." if kind == "import" else f"Restored {n} example(s).")
    return 0


def cmd_snapshot(args) -> int:
    cur = _curation(args)
    before = cur.versions.latest()
    v = cur.versions.snapshot(args.note)
    if args.json:
        print(json.dumps({**v.as_dict(), "new": before is None or before.id != v.id}))
    else:
        state = "unchanged since" if before is not None and before.id == v.id else "created"
        pairs = f", preference pairs {v.pairs}" if any(v.pairs.values()) else ""
        print(f"Dataset version v{v.id} {state}: {v.counts}{pairs}, hash {v.content_hash[:12]}, {v.path}")
    return 0


def cmd_versions(args) -> int:
    cur = _curation(args)
    versions = cur.versions.list()
    if args.json:
        print(json.dumps([v.as_dict() for v in versions]))
        return 0
    for v in versions:
        print(f"v{v.id:<4} {v.created_at[:19]}  {v.content_hash[:12]}  {v.counts}  {v.note}")
    if not versions:
        print("No dataset versions yet: `tailor examples snapshot` makes one.")
    return 0


def cmd_diff(args) -> int:
    cur = _curation(args)
    d = cur.versions.diff(args.a, args.b)
    print(json.dumps(d))
    return 0
