"""`tailor export adapter|merged|gguf|dataset|workspace ...` and `tailor import workspace ...`."""

from __future__ import annotations

import sys
from pathlib import Path

from .chat_cmds import settings_from


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def register(sub, common) -> None:
    p = sub.add_parser(
        "export",
        help="export an adapter, a merged model, the dataset or the whole workspace",
        description="Take a tuned assistant to other tools.",
    )
    xsub = p.add_subparsers(dest="export_command", metavar="WHAT", required=True)

    q = xsub.add_parser(
        "adapter",
        parents=[common],
        help="an adapter as a PEFT folder (or --zip)",
        description="Copy a published LoRA adapter (PEFT format: adapter_config.json, "
        "adapter_model.safetensors, plus tailor.json) to a folder or a zip.",
    )
    q.add_argument("name", help="adapter name (see `tailor models`)")
    q.add_argument("dest", type=Path, help="destination folder, or .zip file with --zip")
    q.add_argument("--zip", action="store_true", help="write one zip file instead of a folder")
    q.add_argument("--overwrite", action="store_true", help="replace an earlier export at DEST")
    q.set_defaults(func=cmd_export_adapter)

    q = xsub.add_parser(
        "merged",
        parents=[common],
        help="base model + adapter merged, as a safetensors folder",
        description="Merge a LoRA adapter into the base model and save a Hugging Face folder "
        "(safetensors, tokenizer, chat template) that transformers loads without PEFT.",
    )
    q.add_argument("name", help="adapter name")
    q.add_argument("dest", type=Path, help="destination folder")
    q.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default=None,
        help="precision of the saved weights (default: float32 on a CPU, the GPU's dtype on a GPU)",
    )
    q.add_argument("--overwrite", action="store_true", help="replace an earlier export at DEST")
    q.set_defaults(func=cmd_export_merged)

    q = xsub.add_parser(
        "gguf",
        parents=[common],
        help="base model + adapter as GGUF files for llama.cpp and Ollama",
        description="Merge a LoRA adapter into the base model and write GGUF files for llama.cpp "
        "(one per --quant), the adapter alone as a GGUF LoRA (llama.cpp's --lora), an Ollama "
        "Modelfile (chat template, system prompt, stop tokens) and a README.txt saying how to run "
        "each. Quantizing needs llama-cpp-python (make setup).",
    )
    q.add_argument("name", help="adapter name")
    q.add_argument(
        "dest", type=Path, nargs="?", default=None, help="destination folder (default: <workspace>/exports/NAME-gguf)"
    )
    q.add_argument(
        "--quant",
        default="q8_0,q4_k_m",
        metavar="KINDS",
        help="comma-separated: q8_0, q4_k_m, q4_0, f16, f32 (default: q8_0,q4_k_m)",
    )
    q.add_argument(
        "--system-prompt", default=None, metavar="TEXT", help="the Modelfile's SYSTEM prompt (default: none)"
    )
    q.add_argument("--overwrite", action="store_true", help="replace an earlier GGUF export at DEST")
    q.set_defaults(func=cmd_export_gguf)

    q = xsub.add_parser(
        "dataset",
        parents=[common],
        help="the training examples as JSONL or parquet",
        description="Export the active training examples (the same exporter as `tailor examples "
        "export`): chat-messages JSONL, prompt/completion JSONL, one parquet file, or a "
        "Hugging Face datasets folder with a parquet file per split.",
    )
    q.add_argument("dest", type=Path, help="a .jsonl or .parquet file, or a folder for --format hf")
    q.add_argument(
        "--format",
        choices=["jsonl", "prompt-completion", "parquet", "hf"],
        default=None,
        help="default: from DEST's suffix (.jsonl: chat messages; .parquet: parquet; else hf folder)",
    )
    q.add_argument(
        "--rendered", action="store_true", help="inline retrieved passages into the user turn, as the trainer sees them"
    )
    q.add_argument("--split", choices=["train", "validation", "test"], help="only this split")
    q.set_defaults(func=cmd_export_dataset)

    q = xsub.add_parser(
        "workspace",
        parents=[common],
        help="back up the whole workspace to one archive",
        description="Back up the workspace (database via SQLite's online backup, adapters, "
        "indexes, jobs, exports, uploads) to a .tar.gz while the app may keep running. "
        "Restore it with `tailor import workspace`.",
    )
    q.add_argument("dest", type=Path, help="archive to write (.tar.gz, .tgz or .tar)")
    q.add_argument(
        "--include-models",
        action="store_true",
        help="also store the converted model cache (large; it is rebuilt on the next start otherwise)",
    )
    q.add_argument("--overwrite", action="store_true", help="replace DEST if it exists")
    q.set_defaults(func=cmd_export_workspace)

    p = sub.add_parser("import", help="restore a workspace backup", description="Restore a backup.")
    isub = p.add_subparsers(dest="import_command", metavar="WHAT", required=True)
    q = isub.add_parser(
        "workspace",
        parents=[common],
        help="restore a backup into a new, empty workspace",
        description="Restore an archive made by `tailor export workspace` into the workspace "
        "folder (--workspace / TAILOR_HOME), which must be new or empty: restoring "
        "never overwrites anything.",
    )
    q.add_argument("archive", type=Path)
    q.set_defaults(func=cmd_import_workspace)


def _workspace(args):
    from assistant.workspace import Workspace

    return Workspace(settings_from(args).home)


def cmd_export_adapter(args) -> int:
    from assistant.adapters import AdapterCatalog
    from tuning.export import export_adapter

    ws = _workspace(args)
    result = export_adapter(
        AdapterCatalog(ws.adapters_dir), args.name, args.dest, "zip" if args.zip else "folder", overwrite=args.overwrite
    )
    print(f"Exported {result.summary()}")
    return 0


def cmd_export_merged(args) -> int:
    from assistant.adapters import AdapterCatalog
    from assistant.models import resolve_model
    from tuning.export import export_merged

    settings = settings_from(args)
    ws = _workspace(args)
    resolved = resolve_model(settings.model, ws.models_dir, allow_downloads=settings.allow_downloads, progress=_say)
    result = export_merged(
        resolved.path,
        AdapterCatalog(ws.adapters_dir),
        args.name,
        args.dest,
        base_name=resolved.name,
        dtype=args.dtype,
        overwrite=args.overwrite,
        progress=_say,
    )
    print(f"Exported {result.summary()}")
    return 0


def cmd_export_gguf(args) -> int:
    from assistant.adapters import AdapterCatalog
    from assistant.models import resolve_model
    from tuning.gguf_export import export_gguf

    settings = settings_from(args)
    ws = _workspace(args)
    resolved = resolve_model(settings.model, ws.models_dir, allow_downloads=settings.allow_downloads, progress=_say)
    dest = args.dest if args.dest is not None else ws.exports_dir / f"{args.name}-gguf"
    result = export_gguf(
        resolved,
        AdapterCatalog(ws.adapters_dir),
        args.name,
        dest,
        quants=args.quant,
        system_prompt=args.system_prompt,
        overwrite=args.overwrite,
        progress=_say,
    )
    print(f"Exported {result.summary()}")
    width = max(len(str(p)) for p in result.outputs)
    for path in result.outputs:
        size = path.stat().st_size
        shown = f"{size / 1e6:,.1f} MB" if size >= 1e6 else f"{size / 1e3:,.1f} kB"
        print(f"  {str(path):<{width}}  {shown:>10}")
    for note in result.notes:
        print(f"  note: {note}")
    print(f"Run it: llama-cli -m {result.outputs[0]} -cnv")
    print(
        f"   or:  cd {result.path} && ollama create {args.name.lower()} -f Modelfile && ollama run {args.name.lower()}"
    )
    return 0


def cmd_export_dataset(args) -> int:
    from assistant.errors import ValidationError

    try:
        from tuning import open_curation
        from tuning.dataset_export import export_examples
        from tuning.example_table import ExampleFilter
    except ImportError as exc:  # the tuning package is optional for the core
        raise ValidationError(f"dataset export needs the tuning package: {exc}") from exc
    fmt = args.format or {".jsonl": "jsonl", ".parquet": "parquet"}.get(args.dest.suffix.lower(), "hf")
    if fmt == "parquet" and args.dest.suffix.lower() != ".parquet":
        raise ValidationError("--format parquet needs a DEST ending in .parquet")
    if fmt in ("jsonl", "prompt-completion") and args.dest.suffix.lower() != ".jsonl":
        raise ValidationError(f"--format {fmt} needs a DEST ending in .jsonl")
    cur = open_curation(_workspace(args))
    examples = cur.store.list(ExampleFilter(split=args.split, status="active"))
    native = {"jsonl": "messages", "prompt-completion": "prompt-completion", "parquet": "hf", "hf": "hf"}[fmt]
    dest = export_examples(examples, args.dest, native, rendered=args.rendered)
    print(f"Exported {len(examples)} examples to {dest} ({fmt}).")
    return 0


def cmd_export_workspace(args) -> int:
    from assistant.backup import backup_workspace

    result = backup_workspace(
        _workspace(args), args.dest, include_models=args.include_models, overwrite=args.overwrite, progress=_say
    )
    for item in result.skipped:
        _say(f"  not included: {item}")
    print(result.summary())
    return 0


def cmd_import_workspace(args) -> int:
    from assistant.restore import restore_workspace

    # Not Workspace(...): opening it would create the folder and database we must restore into.
    result = restore_workspace(args.archive, settings_from(args).home, progress=_say)
    print(result.summary())
    return 0
