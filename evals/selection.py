"""Choosing what to evaluate, and saving an evaluated reply as a training example: the
workflows that `tailor eval` and the Evaluate tab share.

evals imports only the core: the dataset version registry (tuning.versions.DatasetVersions)
and the example store are handed in by the caller (the CLI or the UI composes them), so here
they are a duck-typed `versions` object and a `save_example` function."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from assistant.errors import ValidationError

from .reports import training_example
from .sets import EvalSet, latest_version_dir, load_facts, load_reference_file, load_test_split, subsample
from .store import EvalStore

NO_VERSION = (
    "there is no dataset version yet: curate examples and take a snapshot (or start training) "
    "first, or evaluate on the facts set or a file"
)
TEST, FACTS, FILE = "test", "facts", "file"  # the kinds of set (EvalSet.kind)

TestSplit = Callable[[], EvalSet]
# save_example(messages, reply, provenance) -> a message for the user (the curation store)
SaveExample = Callable[[list[dict], str, dict], str]


def latest_test_split(workspace, versions=None) -> EvalSet:
    """The newest dataset version's frozen test split. `versions`: the registry to ask
    (tuning.versions.DatasetVersions: `latest()` -> None or a version with `.path` and `.id`);
    without one the newest `datasets/v<N>` folder is read directly."""
    if versions is None:
        folder = latest_version_dir(Path(workspace.root) / "datasets")
        if folder is None:
            raise ValidationError(NO_VERSION)
        return load_test_split(folder, folder.name.lstrip("v"))
    version = versions.latest()
    if version is None:
        raise ValidationError(NO_VERSION)
    return load_test_split(version.path, str(version.id))


def looks_like_facts(path: Path) -> bool:
    """Whether the first line of a JSONL file is a fact (question + answer, no messages)."""
    try:
        with open(path, encoding="utf-8-sig") as fh:
            for line in fh:
                if line.strip():
                    obj = json.loads(line)
                    return isinstance(obj, dict) and "question" in obj and "answer" in obj and "messages" not in obj
    except (OSError, ValueError):
        return False
    return False


def set_from_spec(
    spec: str, *, test_split: TestSplit, facts_path: Path, limit: int | None = None, seed: int = 0
) -> EvalSet:
    """`tailor eval --set`: "test" (the latest test split), "facts" (the demo facts set at
    `facts_path`) or a JSONL file (facts or reference answers, told apart by its first line)."""
    if spec == TEST:
        evalset = test_split()
    elif spec == FACTS:
        if not Path(facts_path).is_file():
            raise ValidationError(f"the demo facts set {facts_path} is missing; pass a facts JSONL file instead")
        evalset = load_facts(facts_path)
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ValidationError(f"--set must be test, facts or a JSONL file; {spec} is none of those")
        evalset = load_facts(path) if looks_like_facts(path) else load_reference_file(path)
    return subsample(evalset, limit, seed)


def set_from_choice(
    kind: str,
    *,
    test_split: TestSplit | None = None,
    facts_path: Path | None = None,
    path: str | Path | None = None,
    limit: int | None = None,
) -> EvalSet:
    """The Evaluate tab's choice: `kind` is TEST, FACTS or FILE (`path`: a file of reference
    answers, already checked to be an upload)."""
    if kind == TEST:
        if test_split is None:
            raise ValidationError("no dataset test split is available here")
        evalset = test_split()
    elif kind == FACTS:
        if facts_path is None or not Path(facts_path).is_file():
            raise ValidationError("no facts set is configured; upload one as a file instead")
        evalset = load_facts(facts_path)
    elif kind == FILE:
        if not path:
            raise ValidationError("upload a JSONL file with reference answers first")
        evalset = load_reference_file(path)
    else:
        raise ValidationError(f"unknown set {kind!r}")
    return subsample(evalset, limit or None)


def save_item_as_example(store: EvalStore, run_id: str, arm: str, item_id: str, save_example: SaveExample) -> str:
    """Store arm's reply to one item of a run as a training example (the item's conversation
    without retrieved passages, then the reply), with the run, arm and item as provenance."""
    messages, reply = training_example(store, run_id, arm, item_id)
    return save_example(messages, reply, {"eval_run": run_id, "arm": arm, "item_id": item_id})
