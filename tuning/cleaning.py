"""Cleaning: a report on the dataset before training, and one-click fixes for it.

Checks (on active examples): exact duplicates, near-duplicates (embedding similarity,
tuning/near_duplicates.py), private data (tuning/pii.py), conflicts (same prompt, different
answers), empty examples, examples longer than the training max length in tokens, and text
that the one normalisation (`normalised_text`, tuning/example.py) would change. Every fix of
one `apply_fixes` call shares one undo batch, so one `undo` puts the whole cleaning run back.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from assistant.errors import ValidationError
from assistant.progress import Progress, no_progress

from .example import Example, normalised_text, render_messages
from .example_store import ExampleStore
from .example_table import ExampleFilter
from .near_duplicates import embed_texts, near_duplicate_pairs, near_duplicate_text
from .pii import find_pii, redact
from .undo import new_batch_id

KINDS = ("duplicate", "near_duplicate", "pii", "conflict", "empty", "too_long", "normalise")
DEFAULT_NEAR_THRESHOLD = 0.95
DEFAULT_MAX_TOKENS = 1024
TokenCounter = Callable[[list[dict]], int]


# ---- the report -----------------------------------------------------------------------------
@dataclass
class Finding:
    kind: str
    example_ids: list[int]
    detail: str
    keep: int | None = None  # for groups: the example the fix keeps
    score: float | None = None  # near-duplicates: cosine similarity
    preview: dict = field(default_factory=dict)  # side-by-side texts, redaction before/after, ...

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "example_ids": self.example_ids,
            "detail": self.detail,
            "keep": self.keep,
            "score": self.score,
            "preview": self.preview,
        }


@dataclass
class CleaningReport:
    examples: int
    findings: list[Finding]
    seconds: dict = field(default_factory=dict)  # per check
    skipped: dict = field(default_factory=dict)  # check -> why it did not run

    def of(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    @property
    def counts(self) -> dict:
        return {k: len(self.of(k)) for k in KINDS}

    def as_dict(self) -> dict:
        return {
            "examples": self.examples,
            "counts": self.counts,
            "seconds": self.seconds,
            "skipped": self.skipped,
            "findings": [f.as_dict() for f in self.findings],
        }

    def summary(self) -> str:
        c = self.counts
        lines = [f"{self.examples} active examples checked."]
        names = {
            "duplicate": "exact duplicate groups",
            "near_duplicate": "near-duplicate pairs",
            "pii": "examples with private data",
            "conflict": "conflicting groups (same prompt, different answers)",
            "empty": "empty examples",
            "too_long": "examples over the max length",
            "normalise": "examples whose whitespace/Unicode would be normalised",
        }
        for k in KINDS:
            if k in self.skipped:
                lines.append(f"- {names[k]}: not checked ({self.skipped[k]})")
            elif k not in self.seconds:
                lines.append(f"- {names[k]}: not checked")
            else:
                lines.append(f"- {names[k]}: {c[k]}")
        return "\n".join(lines)


def _stored_id(ex: Example) -> int:
    """The id of an example read from the store (those always have one)."""
    assert ex.id is not None
    return ex.id


def _norm_key(text: str) -> str:
    return " ".join(normalised_text(text).casefold().split())


def token_counter(tokenizer) -> TokenCounter:
    """Counts the tokens the trainer sees for rendered messages (chat template applied)."""

    def count(messages: list[dict]) -> int:
        out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)
        return len(out["input_ids"])

    return count


def build_report(
    store: ExampleStore,
    *,
    embedder=None,
    count_tokens: TokenCounter | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    near_threshold: float = DEFAULT_NEAR_THRESHOLD,
    checks: Sequence[str] = KINDS,
    progress: Progress = no_progress,
) -> CleaningReport:
    """Run the checks over active examples. `embedder` (assistant.embeddings) is needed for
    near-duplicates and `count_tokens` for over-long examples; without them those checks are
    reported as skipped. `progress` gets the fraction done (of 1.0) and the check running."""
    unknown = set(checks) - set(KINDS)
    if unknown:
        raise ValidationError(f"unknown cleaning checks {sorted(unknown)}; choose from {', '.join(KINDS)}")
    examples = list(store.iter_all(ExampleFilter(status="active")))
    report = CleaningReport(examples=len(examples), findings=[])
    by_id = {ex.id: ex for ex in examples}

    def timed(kind, fn):
        if kind not in checks:
            return
        t = time.perf_counter()
        fn()
        report.seconds[kind] = round(time.perf_counter() - t, 4)

    def exact():
        groups: dict[str, list[int]] = defaultdict(list)
        for ex in examples:
            groups[ex.content_hash].append(_stored_id(ex))
        for ids in groups.values():
            if len(ids) > 1:
                report.findings.append(
                    Finding(
                        "duplicate",
                        ids,
                        f"{len(ids)} identical examples",
                        keep=min(ids),
                        preview={"prompt": by_id[ids[0]].prompt, "answer": by_id[ids[0]].answer},
                    )
                )

    def near():
        if embedder is None:
            report.skipped["near_duplicate"] = "no embedding model"
            return
        progress(0.2, 1.0, "embedding examples")
        vectors = embed_texts(
            store,
            [near_duplicate_text(ex) for ex in examples],
            embedder,
            progress=lambda d, t=None, _="": progress(0.2 + 0.6 * d / max(t or 1, 1), 1.0, f"embedding {d}/{t}"),
        )
        progress(0.85, 1.0, "searching for near-duplicates")
        for i, j, score in near_duplicate_pairs(vectors, near_threshold):
            a, b = examples[i], examples[j]
            if a.content_hash == b.content_hash:
                continue  # exact duplicates are reported as such
            report.findings.append(
                Finding(
                    "near_duplicate",
                    [_stored_id(a), _stored_id(b)],
                    f"similarity {score:.3f}",
                    keep=min(_stored_id(a), _stored_id(b)),
                    score=score,
                    preview={
                        "left": {"id": a.id, "prompt": a.prompt, "answer": a.answer},
                        "right": {"id": b.id, "prompt": b.prompt, "answer": b.answer},
                    },
                )
            )

    def pii():
        for ex in examples:
            hits = []
            redacted = []
            for m in ex.messages:
                matches = find_pii(m["content"])
                hits += matches
                redacted.append(redact(m["content"], matches))
            if hits:
                kinds = sorted({h.kind for h in hits})
                report.findings.append(
                    Finding(
                        "pii",
                        [_stored_id(ex)],
                        f"{len(hits)} match(es): {', '.join(kinds)}",
                        preview={
                            "matches": [{"kind": h.kind, "text": h.text} for h in hits],
                            "before": [m["content"] for m in ex.messages],
                            "after": redacted,
                        },
                    )
                )

    def conflicts():
        groups: dict[str, list[Example]] = defaultdict(list)
        for ex in examples:
            key = (
                ex.kind
                + _norm_key(  # a pair's chosen reply and an example's answer are not rivals
                    " ".join(f"{m['role']}:{m['content']}" for m in ex.messages[:-1])
                    + " ".join(p.get("text", "") for p in ex.passages or [])
                )
            )
            groups[key].append(ex)
        for group in groups.values():
            answers = {_norm_key(ex.answer) for ex in group}
            if len(answers) > 1:
                # Keep the answer a person edited most recently: it is the deliberate one.
                keep = max(group, key=lambda e: (e.edited, e.updated_at, e.id))
                report.findings.append(
                    Finding(
                        "conflict",
                        [_stored_id(e) for e in group],
                        f"{len(group)} examples, {len(answers)} different answers",
                        keep=keep.id,
                        preview={"prompt": group[0].prompt, "answers": {str(e.id): e.answer for e in group}},
                    )
                )

    def empty():
        for ex in examples:
            blank = [m["role"] for m in ex.messages if m["role"] != "system" and not m["content"].strip()]
            if blank:
                report.findings.append(
                    Finding("empty", [_stored_id(ex)], f"empty {', '.join(sorted(set(blank)))} message")
                )

    def too_long():
        if count_tokens is None:
            report.skipped["too_long"] = "no tokenizer"
            return
        progress(0.92, 1.0, "counting tokens")
        for ex in examples:
            n = count_tokens(render_messages(ex))
            if n > max_tokens:
                report.findings.append(
                    Finding(
                        "too_long", [_stored_id(ex)], f"{n} tokens > max length {max_tokens}", preview={"tokens": n}
                    )
                )

    def normalise():
        for ex in examples:
            changed = [i for i, m in enumerate(ex.messages) if normalised_text(m["content"]) != m["content"]]
            if changed:
                report.findings.append(
                    Finding(
                        "normalise",
                        [_stored_id(ex)],
                        f"{len(changed)} message(s) change",
                        preview={
                            "before": [ex.messages[i]["content"] for i in changed],
                            "after": [normalised_text(ex.messages[i]["content"]) for i in changed],
                        },
                    )
                )

    progress(0.05, 1.0, "exact duplicates")
    timed("duplicate", exact)
    timed("near_duplicate", near)
    progress(0.9, 1.0, "private data")
    timed("pii", pii)
    timed("conflict", conflicts)
    timed("empty", empty)
    timed("too_long", too_long)
    timed("normalise", normalise)
    progress(1.0, 1.0, "done")
    return report


# ---- fixes ----------------------------------------------------------------------------------
@dataclass
class FixResult:
    batch: str | None
    deleted: list[int] = field(default_factory=list)
    excluded: list[int] = field(default_factory=list)
    rewritten: list[int] = field(default_factory=list)

    def summary(self) -> str:
        if self.batch is None:
            return "Nothing to fix."
        return (
            f"Deleted {len(self.deleted)}, excluded {len(self.excluded)} from training, rewrote "
            f"{len(self.rewritten)} example(s). Undo with change {self.batch}."
        )


def _components(pairs: Sequence[Sequence[int]]) -> list[list[int]]:
    parent: dict[int, int] = {}

    def find(a):
        parent.setdefault(a, a)
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for ids in pairs:
        for other in ids[1:]:
            ra, rb = find(ids[0]), find(other)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = defaultdict(list)
    for a in parent:
        groups[find(a)].append(a)
    return [sorted(g) for g in groups.values()]


def apply_fixes(store: ExampleStore, report: CleaningReport, kinds: Sequence[str] | None = None) -> FixResult:
    """Apply the fixes for `kinds` (default: all found) as one undoable change:
    duplicates and near-duplicates: keep one of each group (the oldest), delete the rest;
    empty: delete; conflicts and over-long: exclude from training (kept, not deleted);
    private data: redact; normalise: rewrite the text."""
    kinds = list(kinds) if kinds is not None else list(KINDS)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValidationError(f"unknown fixes {sorted(unknown)}; choose from {', '.join(KINDS)}")
    delete: set[int] = set()
    exclude: set[int] = set()
    for group in _components(
        [f.example_ids for f in report.findings if f.kind in ("duplicate", "near_duplicate") and f.kind in kinds]
    ):
        delete.update(group[1:])
    for f in report.findings:
        if f.kind not in kinds:
            continue
        if f.kind == "empty":
            delete.update(f.example_ids)
        elif f.kind == "conflict":
            exclude.update(i for i in f.example_ids if i != f.keep)
        elif f.kind == "too_long":
            exclude.update(f.example_ids)
    exclude -= delete
    rewrite_ids = {
        i for f in report.findings if f.kind in ("pii", "normalise") and f.kind in kinds for i in f.example_ids
    } - delete
    existing = {ex.id: ex for ex in store.list(ExampleFilter(ids=sorted(delete | exclude | rewrite_ids)))}
    result = FixResult(batch=None)
    if not existing:
        return result
    batch = new_batch_id()
    rewritten = []
    for i in sorted(rewrite_ids & existing.keys()):
        ex = existing[i]
        messages = [dict(m) for m in ex.messages]
        for m in messages:
            if "normalise" in kinds:
                m["content"] = normalised_text(m["content"])
            if "pii" in kinds:
                m["content"] = redact(m["content"])
        if messages != ex.messages:
            ex.messages = messages
            rewritten.append(ex)
    if rewritten:
        store.replace_many(rewritten, "cleaning: rewrite", batch=batch)
        result.rewritten = [_stored_id(ex) for ex in rewritten]
    ex_ids = sorted(exclude & existing.keys())
    if ex_ids:
        store.set_status(ex_ids, "excluded", "cleaning: exclude", batch=batch)
        result.excluded = ex_ids
    del_ids = sorted(delete & existing.keys())
    if del_ids:
        store.delete(del_ids, "cleaning: delete", batch=batch)
        result.deleted = del_ids
    if rewritten or ex_ids or del_ids:
        result.batch = batch
    return result


def keep_one(store: ExampleStore, keep: int, others: Sequence[int]) -> str:
    """For a duplicate pair/group shown side by side: keep `keep`, delete the others (undoable)."""
    drop = [int(i) for i in others if int(i) != int(keep)]
    if not drop:
        raise ValidationError("nothing to delete: pick the example to keep and at least one other")
    store.get(keep)
    return store.delete(drop, f"keep {keep}, delete {', '.join(map(str, drop))}")
