"""`tailor` entry point: argparse with one sub-command module per area.

Each module exposes `register(subparsers, common)` and sets `func` on its parsers; the
function receives the parsed args and returns an exit code. Errors a user can act on
(TailorError) print one clear line and exit 2, never a traceback."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from assistant.errors import TailorError

from . import (
    chat_cmds,
    compare_cmds,
    conversation_cmds,
    demo_cmds,
    docs_cmds,
    eval_cmds,
    examples_cmds,
    export_cmds,
    tune_cmds,
)

COMMAND_MODULES = [
    chat_cmds,
    compare_cmds,
    conversation_cmds,
    demo_cmds,
    examples_cmds,
    docs_cmds,
    eval_cmds,
    tune_cmds,
    export_cmds,
]


def common_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--workspace", metavar="DIR", help="workspace folder (default: $TAILOR_HOME or ./workspace)")
    common.add_argument(
        "--model",
        metavar="ID_OR_PATH",
        help="Hugging Face id, model folder or .gguf file (default: $TAILOR_MODEL or the "
        "embedded SmolLM2-135M-Instruct)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tailor", description="Tailor: a local chat assistant that improves from its own conversations."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = common_parser()
    for module in COMMAND_MODULES:
        module.register(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except TailorError as exc:
        print(f"tailor: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
