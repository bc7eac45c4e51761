"""The Lantern Bay Bikes demo: one call loads the tuning pairs, the grounding examples and
the knowledge documents, so a new user sees the whole loop (chat → tune → retrieve →
evaluate) in minutes. It composes tuning and retrieval, so it is a layer of its own above
them; `tailor demo load` and the web app's demo panel both call `load_demo`.

Loading twice adds nothing: examples are skipped when the demo's are already there, and the
knowledge service recognises documents it already holds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from assistant.errors import ValidationError
from assistant.settings import env_str
from assistant.workspace import Workspace

if TYPE_CHECKING:
    from tuning.grounding_mix import Exclusions

DEMO_TAG = "demo"
Progress = Callable[[float, str], None]


DATA = Path(__file__).resolve().parent / "lantern_bay"  # package data: installed with Tailor


def demo_dir() -> Path:
    """The demo's files: shipped inside this package (TAILOR_DEMO_DIR overrides)."""
    return Path(env_str("TAILOR_DEMO_DIR") or DATA)


def demo_facts() -> Path:
    """The demo's fact questions with gold answers (the Evaluate tab's default fact set)."""
    return demo_dir() / "facts.jsonl"


def demo_eval_sets(folder: Path | None = None) -> list[Path]:
    """The demo's evaluation sets: fact questions with gold answers, and questions the
    documents cannot answer."""
    folder = Path(folder or demo_dir())
    return [p for p in (folder / "facts.jsonl", folder / "unanswerable.jsonl") if p.is_file()]


def demo_loaded(workspace: Workspace, folder: Path | None = None) -> bool:
    """Whether any of the demo's documents is in this workspace's knowledge base (same content)."""
    import hashlib

    from retrieval.store import KnowledgeStore

    docs = Path(folder or demo_dir()) / "docs"
    if not docs.is_dir():
        return False
    shipped = {hashlib.sha256(p.read_bytes()).hexdigest() for p in docs.iterdir() if p.is_file()}
    return any(d.sha256 in shipped for d in KnowledgeStore(workspace.db).documents())


def demo_exclusions(workspace: Workspace, folder: Path | None = None) -> Exclusions | None:
    """What a tune of this workspace must never generate grounding examples from: the demo's
    evaluation questions and gold answers (facts.jsonl, unanswerable.jsonl), when the demo's
    documents are loaded; None otherwise. Training on the very facts the evaluation asks would
    make the tuned arm look like it reads when it remembered."""
    from tuning.grounding_mix import Exclusions

    if not demo_loaded(workspace, folder):
        return None
    return Exclusions.from_files(demo_eval_sets(folder))


@dataclass
class DemoResult:
    examples_added: int = 0
    pairs_added: int = 0  # preference pairs (preferences.jsonl)
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
        if self.pairs_added:
            parts.append(f"{self.pairs_added} preference pairs added")
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
    from tuning.dataset_import import import_file
    from tuning.example_table import ExampleFilter

    folder = Path(folder or demo_dir())
    pairs, grounding, docs = folder / "pairs.jsonl", folder / "grounding.jsonl", folder / "docs"
    if not pairs.is_file() or not docs.is_dir():
        raise ValidationError(
            f"the demo files are missing from {folder} (expected pairs.jsonl and docs/); "
            "set TAILOR_DEMO_DIR to a folder with the demo's files, or reinstall Tailor"
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
    # The preference pairs on their own: a workspace that loaded the demo before they existed
    # gets them on its next load.
    preferences = folder / "preferences.jsonl"
    if preferences.is_file() and not curation.store.count(ExampleFilter(tag=DEMO_TAG, kind="pair")):
        say(0.45, f"importing {preferences.name}")
        imported = import_file(curation.store, preferences, source="demo", tags=[DEMO_TAG, preferences.stem])
        result.pairs_added = imported.imported
        result.bad_lines += [f"{preferences.name} line {b.line}: {b.reason}" for b in imported.bad]

    def doc_progress(done: float, total: float | None = None, message: str = "") -> None:
        # retrieval reports assistant.progress.Progress: here the fraction done (of 1.0)
        say(0.5 + 0.5 * (done / total if total else 0.0), message)

    for r in knowledge.add_paths([docs], progress=doc_progress):
        result.documents[r.name] = r.status
        if not r.ok:
            result.errors.append(r.message)
    say(1.0, "demo loaded")
    return result
