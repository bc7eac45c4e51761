"""Reading benchmark: fact accuracy with retrieval, one row per lever, on the demo and on the
held-out set, through the real answering path (`tailor eval`, greedy).

    .venv/bin/python benchmarks/reading.py --demo WS [--heldout WS2] [--rows all|a,b]
                                           [--arms base,tuned] [--max-new-tokens 128]

WS is a workspace with the demo loaded and tuned (`make demo-eval`, or `tailor demo load &&
tailor tune --wait`). With --heldout and no such folder yet, it is made: the documents of
benchmarks/heldout/kestrel_rail/docs are added to it and WS's adapters copied in, so the same
tuned adapter answers questions about documents it never saw. Every default was chosen on the
demo; the held-out rows are reported, never used to choose (benchmarks/heldout/kestrel_rail/
README.md).

Each row is one command, printed with its result, so any row can be re-run alone: a row is a
set of TAILOR_* variables and `tailor eval` flags over today's defaults (rows measured before a
later lever existed pin it off: NO_CHOICE, WHOLE_SPAN below). Fact accuracy: the
reply contains the gold answer or an alias (evals/metrics.py); intervals are the eval's
bootstrap 95%. "gate" is the share of questions the retriever found no supporting passage for
(those are answered without sources under the default no-source policy). "vs defaults" is the
row's per-item difference from the defaults row on the same questions (paired permutation
test), when the defaults row is run too (it runs first)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HELDOUT = ROOT / "benchmarks" / "heldout" / "kestrel_rail"
TAILOR = [str(Path(sys.executable).parent / "tailor")]
sys.path.insert(0, str(ROOT))  # for the paired test, which reads the runs from the workspace

SHORT_SYSTEM = "Answer the question in one short sentence, using the sources."
OFF = {"TAILOR_PENALIZE_SOURCES": "off"}
# Rows measured before a later lever existed pin it off, so each row reproduces its README
# figure: the 2 December rows ran without answer focus, the 6 December ones without ranking and
# with the whole span favoured.
NO_CHOICE = {"TAILOR_ANSWER_FOCUS": "0", "TAILOR_ANSWER_HINT": "off"}
WHOLE_SPAN = {"TAILOR_ANSWER_RANKING": "off", "TAILOR_ANSWER_FOLLOW": "off"}

# name -> (environment, extra `tailor eval` flags, what the row shows)
ROWS: dict[str, tuple[dict[str, str], list[str], str]] = {
    "defaults": ({}, [], "today's defaults"),
    "chunks": (
        {**NO_CHOICE, "TAILOR_EVIDENCE_SENTENCES": "0"},
        [],
        "four whole 160-token chunks (before evidence selection)",
    ),
    "evidence-1": ({**NO_CHOICE, "TAILOR_EVIDENCE_SENTENCES": "1"}, [], "the best sentence only"),
    "evidence-2": ({**NO_CHOICE, "TAILOR_EVIDENCE_SENTENCES": "2"}, [], "the two best sentences"),
    "evidence-3": ({**NO_CHOICE, "TAILOR_EVIDENCE_SENTENCES": "3"}, [], "the three best sentences (the default)"),
    "penalty-on-sources": (
        {**NO_CHOICE, "TAILOR_PENALIZE_SOURCES": "on", "TAILOR_COPY_BIAS": "0"},
        [],
        "the repetition penalty counts the sources' tokens, no copy bias (before decoding for sources)",
    ),
    "penalty-reply-only": (
        {**NO_CHOICE, **OFF, "TAILOR_COPY_BIAS": "0"},
        [],
        "the penalty kept to the reply, no copy bias",
    ),
    "copy-1": ({**NO_CHOICE, **OFF, "TAILOR_COPY_BIAS": "1"}, [], "copy bias 1, penalty kept to the reply"),
    "copy-2": ({**NO_CHOICE, **OFF, "TAILOR_COPY_BIAS": "2"}, [], "copy bias 2, penalty kept to the reply"),
    "copy-3": ({**NO_CHOICE, **OFF, "TAILOR_COPY_BIAS": "3"}, [], "copy bias 3, penalty kept to the reply"),
    "focus-off": (NO_CHOICE, [], "no answer choice: the free reply (before answer focus)"),
    "focus-4": (
        {**WHOLE_SPAN, "TAILOR_ANSWER_FOCUS": "4", "TAILOR_ANSWER_HINT": "off"},
        [],
        "the chosen span's tokens +4 logits",
    ),
    "focus-8": (
        {**WHOLE_SPAN, "TAILOR_ANSWER_FOCUS": "8", "TAILOR_ANSWER_HINT": "off"},
        [],
        "the chosen span's tokens +8 logits",
    ),
    "hint-focus-4": (
        {**WHOLE_SPAN, "TAILOR_ANSWER_FOCUS": "4", "TAILOR_ANSWER_HINT": "on"},
        [],
        "the chosen span named in the prompt and +4 logits (6 December's default)",
    ),
    "ranking-off": (
        {**WHOLE_SPAN, "TAILOR_ANSWER_FOCUS": "4"},
        [],
        "the answer choice by likelihood alone, whole span +4 (= hint-focus-4, before ranking)",
    ),
    "whole-span-4": (
        {"TAILOR_ANSWER_FOLLOW": "off", "TAILOR_ANSWER_FOCUS": "4"},
        [],
        "ranked choice, every token of the span +4 all through the reply (before following)",
    ),
    "follow-4": (
        {"TAILOR_ANSWER_FOLLOW": "on", "TAILOR_ANSWER_FOCUS": "4"},
        [],
        "ranked choice, the span followed token by token (+4), nothing once written",
    ),
    "follow-8": (
        {"TAILOR_ANSWER_FOLLOW": "on", "TAILOR_ANSWER_FOCUS": "8"},
        [],
        "ranked choice, the span followed token by token (+8), nothing once written (the default)",
    ),
    "system-short": ({}, ["--system", SHORT_SYSTEM], f"our short system prompt: {SHORT_SYSTEM!r}"),
    "budget-64": ({}, ["--max-new-tokens", "64"], "the defaults, 64 new tokens (the eval's default is 128)"),
    "budget-256": ({}, ["--max-new-tokens", "256"], "the defaults, 256 new tokens (the chat's and the API's default)"),
}


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAILOR_")}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def prepare_heldout(demo: Path, heldout: Path) -> None:
    if heldout.exists():
        return
    print(f"making {heldout}: the held-out documents and {demo}'s adapters", file=sys.stderr)
    subprocess.run(
        [*TAILOR, "docs", "add", str(HELDOUT / "docs"), "--workspace", str(heldout)], check=True, env=_env({})
    )
    shutil.copytree(demo / "adapters", heldout / "adapters", dirs_exist_ok=True)


def eval_command(workspace: Path, facts: str, arms: str, max_new_tokens: int, flags: list[str]) -> list[str]:
    return [
        *TAILOR,
        "eval",
        "--workspace",
        str(workspace),
        "--set",
        facts,
        "--arms",
        arms,
        "--rag",
        "on",
        "--no-loss",
        "--max-new-tokens",
        str(max_new_tokens),
        *flags,
        "--json",
    ]


def run_row(workspace: Path, facts: str, arms: str, max_new_tokens: int, row: str) -> tuple[dict, str]:
    env_extra, flags, _ = ROWS[row]
    cmd = eval_command(workspace, facts, arms, max_new_tokens, flags)
    shown = " ".join([*(f"{k}={v}" for k, v in env_extra.items()), "tailor", *cmd[1:]])
    out = subprocess.run(cmd, check=True, env=_env(env_extra), capture_output=True, text=True)
    return json.loads(out.stdout), shown


def paired_vs(workspace: Path, run_a: str, run_b: str, arm: str) -> str:
    """Row A against row B on fact accuracy, per item (paired permutation test, evals/stats.py)."""
    from assistant.workspace import Workspace
    from evals.stats import paired_test
    from evals.store import EvalStore

    store = EvalStore(Workspace(workspace).db)
    a, b = ({r.item_id: r.metrics.get("fact") for r in store.results(run, arm)} for run in (run_a, run_b))
    common = [i for i in a if i in b and a[i] is not None and b[i] is not None]
    if not common:
        return "–"
    t = paired_test([float(a[i]) for i in common], [float(b[i]) for i in common])  # type: ignore[arg-type]
    return f"{t.mean_diff:+.3f} (p={t.p_value:.2f})"


def cell(report: dict, arm: str) -> str:
    m = report["arms"].get(arm, {})
    fact, gate = m.get("fact"), m.get("abstained")
    if not fact:
        return "–"
    text = f"{fact['mean']:.3f} [{fact['lo']:.3f}, {fact['hi']:.3f}]"
    return text + (f" · gate {gate['mean']:.2f}" if gate else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo", type=Path, required=True, help="a workspace with the demo loaded and tuned")
    p.add_argument("--heldout", type=Path, help="a workspace for the held-out set (made when missing)")
    p.add_argument("--rows", default="all", help=f"comma-separated rows: {', '.join(ROWS)}")
    p.add_argument("--arms", default="base,tuned")
    p.add_argument("--max-new-tokens", type=int, default=128, help="the eval's default budget")
    p.add_argument("--skip-demo", action="store_true", help="run the held-out set only")
    args = p.parse_args(argv)
    rows = list(ROWS) if args.rows == "all" else [r.strip() for r in args.rows.split(",") if r.strip()]
    if "defaults" in rows:  # first, so every other row is compared with it (paired, per item)
        rows.remove("defaults")
        rows.insert(0, "defaults")
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        p.error(f"unknown rows: {', '.join(unknown)}")
    sets = [] if args.skip_demo else [("demo", args.demo, "facts")]
    if args.skip_demo and not args.heldout:
        p.error("--skip-demo needs --heldout")
    if args.heldout:
        prepare_heldout(args.demo, args.heldout)
        sets.append(("held-out", args.heldout, str(HELDOUT / "facts.jsonl")))
    table, commands, header = [], [], ["row"]
    runs: dict[tuple[str, str], str] = {}  # (row, set) -> run id, for the paired column
    for row in rows:
        cells = [row]
        for set_name, ws, facts in sets:
            report, shown = run_row(ws, facts, args.arms, args.max_new_tokens, row)
            commands.append(shown)
            runs[(row, set_name)] = report["run"]["id"]
            for arm in report["arms"]:  # "base+rag", "<adapter>+rag", in the order asked
                if len(header) < len(cells) + 2:
                    header += [f"{set_name}: {arm}", "vs defaults"]
                cells.append(cell(report, arm))
                defaults = runs.get(("defaults", set_name))
                cells.append(
                    paired_vs(ws, runs[(row, set_name)], defaults, arm) if defaults and row != "defaults" else ""
                )
        table.append(cells)
        print(" | ".join(cells), file=sys.stderr, flush=True)
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for cells in table:
        print("| " + " | ".join(cells) + " |")
    print("\nrows:")
    for row in rows:
        print(f"  {row}: {ROWS[row][2]}")
    print("\ncommands:")
    for c in commands:
        print("  " + c)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
