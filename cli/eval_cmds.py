"""`tailor eval`: run an A/B evaluation and print the metrics table (or re-show a stored run).

Choosing the set is evals' own workflow (evals/selection.py, shared with the Evaluate tab);
this module composes it with the sibling packages evals does not import: the dataset version
registry from tuning and the knowledge retriever."""

from __future__ import annotations

import json
import sys

from assistant.errors import ValidationError

HEADLINE = {"test": "semantic", "facts": "fact", "file": "semantic"}  # the metric each set is about


# ---- composition with tuning / retrieval ------------------------------------------------------


def _versions(workspace):
    """The dataset version registry, or None without the tuning package (evals then reads the
    newest version folder directly)."""
    try:
        from tuning.versions import DatasetVersions
    except ImportError:
        return None
    return DatasetVersions(workspace)


def _example_store(workspace):
    """The workspace's example store (the prompted arm's default style prompt is built from its
    train pairs), or None without the tuning package."""
    try:
        from tuning.example_store import ExampleStore
    except ImportError:
        return None
    return ExampleStore(workspace.db)


def read_style_prompt(value: str | None) -> str | None:
    """`--style-prompt`: the text itself, or `@FILE` for a file's text (UTF-8); None: the default."""
    if value is None or not value.startswith("@"):
        return value
    from pathlib import Path

    path = Path(value[1:]).expanduser()
    if not path.is_file():
        raise ValidationError(f"--style-prompt {value}: there is no file {path}")
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"--style-prompt {value}: cannot read {path} as UTF-8 text ({exc})") from exc


def attach_retriever(core) -> None:
    """Give the chat the knowledge retriever when it has none and documents exist, so retrieval
    arms answer from the same index as the chat."""
    if core.chat.retriever is not None:
        return
    try:
        from retrieval import open_knowledge
    except ImportError:
        return
    knowledge = open_knowledge(core.workspace)
    if knowledge.documents():
        core.chat.retriever = knowledge


def load_set(spec: str, workspace, limit: int | None = None, seed: int = 0):
    """The set named by `--set` (test, facts or a file); see evals.selection.set_from_spec."""
    from demo import demo_facts
    from evals.selection import latest_test_split, set_from_spec

    return set_from_spec(
        spec,
        test_split=lambda: latest_test_split(workspace, _versions(workspace)),
        facts_path=demo_facts(),
        limit=limit,
        seed=seed,
    )


# ---- the command ----------------------------------------------------------------------------


def register(sub, common) -> None:
    p = sub.add_parser(
        "eval",
        parents=[common],
        help="evaluate base vs prompted vs tuned, with and without retrieval",
        description="Answer an evaluation set with each arm (model × retrieval), score the replies and print "
        "the metrics per arm with bootstrap 95% intervals and paired tests. The run is stored in "
        "the workspace and can be re-opened in the Evaluate tab or with --show.",
    )
    p.add_argument(
        "--arms",
        metavar="MODELS",
        default=None,
        help="comma-separated models: base, prompted (the base model with a style system prompt, see "
        "--style-prompt), tuned (the active or newest adapter) or adapter names (default: base,tuned)",
    )
    p.add_argument(
        "--rag",
        metavar="off,on",
        default=None,
        help="retrieval settings to cross with the models (default: off,on when documents exist)",
    )
    p.add_argument(
        "--set",
        dest="sets",
        metavar="test|facts|FILE",
        default="test",
        help="evaluation set(s), comma-separated: the latest dataset version's test split, the demo "
        "facts set, or a JSONL file with reference answers (default: test)",
    )
    p.add_argument("--limit", type=int, default=None, metavar="N", help="evaluate N items per set (seeded sample)")
    p.add_argument("--max-new-tokens", type=int, default=128, metavar="N", help="reply length limit (default 128)")
    p.add_argument("--no-loss", action="store_true", help="skip the reference loss/perplexity (faster)")
    p.add_argument(
        "--system",
        metavar="TEXT",
        default=None,
        help="system prompt for every item (default: each item's own; none means the model's template default); "
        "the prompted arms use --style-prompt instead",
    )
    p.add_argument(
        "--style-prompt",
        metavar="TEXT|@FILE",
        default=None,
        help="the prompted arm's system prompt, or @FILE to read it from a file; it wins over --system for "
        "the prompted arms (default: built from three of your train pairs)",
    )
    p.add_argument(
        "--no-source",
        choices=("answer", "decline"),
        default=None,
        help="retrieval arms, when no document supports an answer: answer without sources or decline "
        "(default: $TAILOR_NO_SOURCE or answer, as in the chat)",
    )
    p.add_argument(
        "--paired",
        metavar="METRICS",
        default=None,
        help="comma-separated metrics to test every pair of arms on, e.g. semantic,repeats,words "
        "(default: the set's headline metric: semantic, or fact for the facts set)",
    )
    p.add_argument("--show", metavar="RUN_ID", help="print a stored run instead of starting one")
    p.add_argument("--json", action="store_true", help="print JSON: run, metrics per arm, paired tests")
    p.set_defaults(func=cmd_eval)


def _progress(label: str):
    def report(done: float, total: float | None = None, message: str = "") -> None:
        print(f"\r{label}: {done}/{total} replies", end="" if done < total else "\n", file=sys.stderr, flush=True)

    return report


def paired_metrics(value: str | None) -> list[str] | None:
    """`--paired`: the metrics to test arm against arm (None: the set's headline metric)."""
    if not value:
        return None
    from evals.reports import PER_ITEM

    names = [m.strip() for m in value.split(",") if m.strip()]
    unknown = [m for m in names if m not in PER_ITEM]
    if unknown or not names:
        raise ValidationError(f"--paired {value}: choose from {', '.join(PER_ITEM)}")
    return names


def _report(store, run_id: str, paired: list[str] | None = None) -> dict:
    from evals.reports import aggregate_run, all_comparisons, metrics_table, summary_json

    run = store.get_run(run_id)
    summary = aggregate_run(store, run_id)
    header, rows = metrics_table(summary)
    tests = [
        {"a": a, "b": b, "metric": metric, **t.as_dict()}
        for metric in paired or [HEADLINE.get(run.set_kind, "semantic")]
        for a, b, t in all_comparisons(store, run_id, metric)
        if t.n
    ]
    return {
        "run": {
            "id": run.id,
            "status": run.status,
            "set": f"{run.set_kind}:{run.set_name}",
            "dataset_version": run.dataset_version,
            "base_model": run.base_model,
            "arms": [a.as_dict() for a in run.arms],
            "items": run.n_items,
            "created_at": run.created_at,
            "error": run.error,
            "no_source": run.options.get("no_source"),
            "system_prompt": run.options.get("system_prompt"),
            "style_prompt": run.options.get("style_prompt"),  # None unless a prompted arm ran
            "reading": run.options.get("reading"),
            "engine": run.options.get("engine"),  # None for runs recorded before it was
        },
        "table": {"header": header, "rows": rows},
        "tests": tests,
        **summary_json(summary),
    }


def _print_table(report: dict) -> None:
    run = report["run"]
    print(
        f"Run {run['id']} · {run['set']} · {run['items']} items · model {run['base_model']} · {run['status']}"
        + (f" · dataset version {run['dataset_version']}" if run["dataset_version"] else "")
        + (
            f" · no-source policy {run['no_source']}"
            if run.get("no_source") and any(a.get("rag") for a in run["arms"])
            else ""
        )
    )
    if run.get("style_prompt"):  # the full text is in --json and the stored run
        first = run["style_prompt"].splitlines()[0]
        print(f"Prompted arms' style prompt ({len(run['style_prompt'])} characters): {first[:80]}")
    header, rows = report["table"]["header"], report["table"]["rows"]
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for j, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
        if j == 0:
            print("  ".join("-" * w for w in widths))
    metric = None
    for t in report["tests"]:
        if t["metric"] != metric:
            metric = t["metric"]
            print(
                f"\nPaired permutation test on {metric} (per-item differences, random sign "
                "flips; interval: bootstrap 95% of the mean difference):"
            )
        star = "  *" if t["significant"] else ""
        print(
            f"  {t['a']} − {t['b']}: {t['mean_diff']:+.3f} [{t['lo']:+.3f}, {t['hi']:+.3f}]  "
            f"p={t['p_value']:.4f}  n={t['n']}{star}"
        )
    print()


def cmd_eval(args) -> int:
    from assistant.runtime import open_core
    from evals import open_evals
    from evals.runner import RunOptions

    from .chat_cmds import settings_from

    if args.show:  # no model needed to re-show a stored run
        from assistant.workspace import Workspace
        from evals.store import EvalStore

        store = EvalStore(Workspace(settings_from(args).home).db)
        report = _report(store, args.show, paired_metrics(args.paired))
        print(json.dumps(report, indent=1, ensure_ascii=False)) if args.json else _print_table(report)
        return 0
    specs = [s.strip() for s in (args.sets or "test").split(",") if s.strip()]
    if not specs:
        raise ValidationError("--set needs test, facts or a file")
    style_prompt = read_style_prompt(args.style_prompt)  # a missing file should not cost a model load
    paired = paired_metrics(args.paired)
    from assistant.workspace import Workspace

    settings = settings_from(args)
    # sets first: a wrong --set should not cost a model load
    sets = [load_set(spec, Workspace(settings.home), args.limit) for spec in specs]
    core = open_core(settings, progress=lambda m: print(m, file=sys.stderr, flush=True))
    attach_retriever(core)
    evals = open_evals(core.workspace, core.chat, examples=_example_store(core.workspace))
    arms = evals.runs.resolve_arms(args.arms, args.rag)
    options = RunOptions(
        max_new_tokens=args.max_new_tokens,
        score_references=not args.no_loss,
        no_source=args.no_source,
        system_prompt=args.system,
        style_prompt=style_prompt,
    )
    reports = []
    for evalset in sets:
        for line in evalset.skipped:
            print(f"{evalset.name}: skipped {line}", file=sys.stderr)
        run = evals.runs.start(
            evalset, arms, options, background=False, progress=_progress(f"{evalset.kind}:{evalset.name}")
        )
        if run.status != "done":
            raise ValidationError(f"evaluation run {run.id} {run.status}: {run.error}")
        reports.append(_report(evals.store, run.id, paired))
    if args.json:
        print(json.dumps(reports[0] if len(reports) == 1 else reports, indent=1, ensure_ascii=False))
    else:
        for report in reports:
            _print_table(report)
    return 0
