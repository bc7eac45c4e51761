"""The Lantern Bay Bikes demo: one call loads the tuning pairs, the grounding examples and
the knowledge documents, so a new user sees the whole loop (chat → tune → retrieve →
evaluate) in minutes. Composes tuning and retrieval, hence it lives at the cli/ui level.

Loading twice adds nothing: examples are skipped when the demo's are already there, and the
knowledge service recognises documents it already holds."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from assistant.errors import ValidationError
from assistant.workspace import Workspace

DEMO_TAG = "demo"
Progress = Callable[[float, str], None]


def demo_dir() -> Path:
    """examples/lantern_bay in the source tree (TAILOR_DEMO_DIR overrides)."""
    return Path(os.environ.get("TAILOR_DEMO_DIR") or Path(__file__).resolve().parents[1] / "examples" / "lantern_bay")


@dataclass
class DemoResult:
    examples_added: int = 0
    examples_skipped: bool = False
    bad_lines: list[str] = field(default_factory=list)
    documents: dict[str, str] = field(default_factory=dict)  # name -> status
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = []
        if self.examples_skipped:
            parts.append("demo examples already loaded")
        else:
            parts.append(f"{self.examples_added} demo examples added")
        counts: dict[str, int] = {}
        for status in self.documents.values():
            counts[status] = counts.get(status, 0) + 1
        parts.append("documents: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"))
        text = "Lantern Bay demo: " + "; ".join(parts) + "."
        for err in self.errors + self.bad_lines:
            text += f"\n  {err}"
        return text


def load_demo(
    workspace: Workspace, curation=None, knowledge=None, progress: Progress | None = None, folder: Path | None = None
) -> DemoResult:
    from retrieval import open_knowledge
    from tuning import open_curation
    from tuning.examples import ExampleFilter
    from tuning.importexport import import_file

    folder = Path(folder or demo_dir())
    pairs, grounding, docs = folder / "pairs.jsonl", folder / "grounding.jsonl", folder / "docs"
    if not pairs.is_file() or not docs.is_dir():
        raise ValidationError(
            f"the demo files are missing from {folder} (expected pairs.jsonl and docs/); "
            "set TAILOR_DEMO_DIR to the examples/lantern_bay folder of a Tailor checkout"
        )
    curation = curation or open_curation(workspace)
    knowledge = knowledge or open_knowledge(workspace)
    result = DemoResult()
    say = progress or (lambda frac, msg: None)

    if curation.store.count(ExampleFilter(tag=DEMO_TAG)):
        result.examples_skipped = True
    else:
        for i, path in enumerate(p for p in (pairs, grounding) if p.is_file()):
            say(0.05 + 0.2 * i, f"importing {path.name}")
            imported = import_file(curation.store, path, source="demo", tags=[DEMO_TAG, path.stem])
            result.examples_added += imported.imported
            result.bad_lines += [f"{path.name} line {b.line}: {b.reason}" for b in imported.bad]

    def doc_progress(frac: float, msg: str) -> None:
        say(0.5 + 0.5 * frac, msg)

    for r in knowledge.add_paths([docs], progress=doc_progress):
        result.documents[r.name] = r.status
        if not r.ok:
            result.errors.append(r.message)
    say(1.0, "demo loaded")
    return result


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
    import json
    import sys

    from .chat_cmds import settings_from

    workspace = Workspace(settings_from(args).home)
    result = load_demo(workspace, progress=lambda f, m: print(f"[{f:4.0%}] {m}", file=sys.stderr, flush=True))
    if args.json:
        from dataclasses import asdict

        print(json.dumps(asdict(result), indent=2))
    else:
        print(result.summary())
    return 0 if not result.errors else 1
