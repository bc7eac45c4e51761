"""Cleaning: a report on the dataset before training, and one-click fixes for it.

Checks (on active examples): exact duplicates, near-duplicates (embedding similarity),
private data (emails, phone numbers, payment cards that pass the Luhn check, IPv4/IPv6
addresses), conflicts (same prompt, different answers), empty examples, examples longer
than the training max length in tokens, and text that whitespace/Unicode normalisation
would change. Every fix of one `apply_fixes` call shares one undo batch, so one `undo`
puts the whole cleaning run back.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import time
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from assistant.errors import ValidationError

from .examples import Example, ExampleFilter, ExampleStore, new_batch_id, render_messages

KINDS = ("duplicate", "near_duplicate", "pii", "conflict", "empty", "too_long", "normalise")
DEFAULT_NEAR_THRESHOLD = 0.95
DEFAULT_MAX_TOKENS = 1024
TokenCounter = Callable[[list[dict]], int]


# ---- normalisation --------------------------------------------------------------------------
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
_SPACES = dict.fromkeys(map(ord, "\u00a0\u2007\u202f\u2009\u200a\u3000\t"), " ")


def normalise_text(text: str) -> str:
    """NFC, plain newlines, no invisible characters, ordinary spaces, no trailing blanks on a
    line, at most one empty line in a row, no leading/trailing blank space."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = text.translate(_INVISIBLE).translate(_SPACES)
    text = "\n".join(re.sub(r" {2,}", " ", line).rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# ---- private data ---------------------------------------------------------------------------
EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.])")
IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{0,4}|\d+\.\d+\.\d+\.\d+)(?![\w:])")
PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,5}(?:[ .-]\d{2,5}){1,4}(?![\w])"
    r"|(?<![\w+])\+\d{8,14}(?!\w)"
)
REDACTIONS = {"email": "[EMAIL]", "card": "[CARD]", "ip": "[IP]", "phone": "[PHONE]"}


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


@dataclass
class PiiMatch:
    kind: str  # email | phone | card | ip
    start: int
    end: int
    text: str


def find_pii(text: str) -> list[PiiMatch]:
    found: list[PiiMatch] = []

    def free(a: int, b: int) -> bool:
        return all(b <= m.start or a >= m.end for m in found)

    for m in EMAIL.finditer(text):
        found.append(PiiMatch("email", m.start(), m.end(), m.group()))
    for m in CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and luhn_ok(digits) and free(m.start(), m.end()):
            found.append(PiiMatch("card", m.start(), m.end(), m.group()))
    for m in IPV4.finditer(text):
        if free(m.start(), m.end()):
            found.append(PiiMatch("ip", m.start(), m.end(), m.group()))
    for m in IPV6.finditer(text):
        candidate = m.group()
        if sum(c.isalnum() for c in candidate) < 2 or not free(m.start(), m.end()):
            continue
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        found.append(PiiMatch("ip", m.start(), m.end(), candidate))
    for m in PHONE.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        # 9-15 digits (E.164 allows 15); fewer are prices, times, years and dates.
        if 9 <= len(digits) <= 15 and free(m.start(), m.end()):
            found.append(PiiMatch("phone", m.start(), m.end(), m.group()))
    return sorted(found, key=lambda m: m.start)


def redact(text: str, matches: Sequence[PiiMatch] | None = None) -> str:
    matches = find_pii(text) if matches is None else matches
    out, pos = [], 0
    for m in sorted(matches, key=lambda m: m.start):
        out += [text[pos : m.start], REDACTIONS[m.kind]]
        pos = m.end
    return "".join(out) + text[pos:]


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


def _example_text(ex: Example) -> str:
    """What near-duplicate search compares: the final user turn and the answer."""
    return f"{ex.prompt}\n{ex.answer}"


def _norm_key(text: str) -> str:
    return " ".join(normalise_text(text).casefold().split())


def token_counter(tokenizer) -> TokenCounter:
    """Counts the tokens the trainer sees for rendered messages (chat template applied)."""

    def count(messages: list[dict]) -> int:
        out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)
        return len(out["input_ids"])

    return count


def embed_texts(store: ExampleStore, texts: list[str], embedder, progress=None) -> np.ndarray:
    """Embeddings for `texts`, from the store's cache where present (keyed by text hash and
    model): re-running the report only embeds what changed."""
    hashes = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
    vectors = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    have: dict[str, np.ndarray] = {}
    unique = list(dict.fromkeys(hashes))
    with store.db.read() as conn:
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            for row in conn.execute(
                f"SELECT text_hash, vector FROM example_embeddings WHERE model=? AND text_hash IN "
                f"({','.join('?' * len(chunk))})",
                [embedder.name, *chunk],
            ):
                have[row["text_hash"]] = np.frombuffer(row["vector"], dtype=np.float32)
    missing = [h for h in unique if h not in have]
    if missing:
        first = {h: texts[i] for i, h in reversed(list(enumerate(hashes)))}
        # Sorted by length, each batch pads to about its own length rather than the longest text's.
        missing.sort(key=lambda h: len(first[h]))
        fresh = embedder.encode([first[h] for h in missing], batch_size=64, progress=progress)
        with store.db.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO example_embeddings(text_hash, model, vector) VALUES (?,?,?)",
                [(h, embedder.name, v.astype(np.float32).tobytes()) for h, v in zip(missing, fresh)],
            )
        have.update(zip(missing, fresh))
    for i, h in enumerate(hashes):
        vectors[i] = have[h]
    return vectors


def near_duplicate_pairs(vectors: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """(i, j, cosine) for every pair i < j of L2-normalised rows with cosine >= threshold.
    One FAISS range search over a flat inner-product index: exact, and at 10,000 rows about
    10^8 dot products, a fraction of a second."""
    import faiss

    n = len(vectors)
    if n < 2:
        return []
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    lims, dist, ids = index.range_search(x, float(threshold))
    pairs = []
    for i in range(n):
        for k in range(lims[i], lims[i + 1]):
            j = int(ids[k])
            if j > i:
                pairs.append((i, j, float(dist[k])))
    return pairs


def build_report(
    store: ExampleStore,
    *,
    embedder=None,
    count_tokens: TokenCounter | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    near_threshold: float = DEFAULT_NEAR_THRESHOLD,
    checks: Sequence[str] = KINDS,
    progress: Callable[[str, float], None] | None = None,
) -> CleaningReport:
    """Run the checks over active examples. `embedder` (assistant.embeddings) is needed for
    near-duplicates and `count_tokens` for over-long examples; without them those checks are
    reported as skipped."""
    unknown = set(checks) - set(KINDS)
    if unknown:
        raise ValidationError(f"unknown cleaning checks {sorted(unknown)}; choose from {', '.join(KINDS)}")
    say = progress or (lambda msg, frac: None)
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
            groups[ex.content_hash].append(ex.id)
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
        say("embedding examples", 0.2)
        vectors = embed_texts(
            store,
            [_example_text(ex) for ex in examples],
            embedder,
            progress=lambda d, t: say(f"embedding {d}/{t}", 0.2 + 0.6 * d / max(t, 1)),
        )
        say("searching for near-duplicates", 0.85)
        for i, j, score in near_duplicate_pairs(vectors, near_threshold):
            a, b = examples[i], examples[j]
            if a.content_hash == b.content_hash:
                continue  # exact duplicates are reported as such
            report.findings.append(
                Finding(
                    "near_duplicate",
                    [a.id, b.id],
                    f"similarity {score:.3f}",
                    keep=min(a.id, b.id),
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
                        [ex.id],
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
            key = _norm_key(
                " ".join(f"{m['role']}:{m['content']}" for m in ex.messages[:-1])
                + " ".join(p.get("text", "") for p in ex.passages or [])
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
                        [e.id for e in group],
                        f"{len(group)} examples, {len(answers)} different answers",
                        keep=keep.id,
                        preview={"prompt": group[0].prompt, "answers": {str(e.id): e.answer for e in group}},
                    )
                )

    def empty():
        for ex in examples:
            blank = [m["role"] for m in ex.messages if m["role"] != "system" and not m["content"].strip()]
            if blank:
                report.findings.append(Finding("empty", [ex.id], f"empty {', '.join(sorted(set(blank)))} message"))

    def too_long():
        if count_tokens is None:
            report.skipped["too_long"] = "no tokenizer"
            return
        say("counting tokens", 0.92)
        for ex in examples:
            n = count_tokens(render_messages(ex))
            if n > max_tokens:
                report.findings.append(
                    Finding("too_long", [ex.id], f"{n} tokens > max length {max_tokens}", preview={"tokens": n})
                )

    def normalise():
        for ex in examples:
            changed = [i for i, m in enumerate(ex.messages) if normalise_text(m["content"]) != m["content"]]
            if changed:
                report.findings.append(
                    Finding(
                        "normalise",
                        [ex.id],
                        f"{len(changed)} message(s) change",
                        preview={
                            "before": [ex.messages[i]["content"] for i in changed],
                            "after": [normalise_text(ex.messages[i]["content"]) for i in changed],
                        },
                    )
                )

    say("exact duplicates", 0.05)
    timed("duplicate", exact)
    timed("near_duplicate", near)
    say("private data", 0.9)
    timed("pii", pii)
    timed("conflict", conflicts)
    timed("empty", empty)
    timed("too_long", too_long)
    timed("normalise", normalise)
    say("done", 1.0)
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
                m["content"] = normalise_text(m["content"])
            if "pii" in kinds:
                m["content"] = redact(m["content"])
        if messages != ex.messages:
            ex.messages = messages
            rewritten.append(ex)
    if rewritten:
        store.replace_many(rewritten, "cleaning: rewrite", batch=batch)
        result.rewritten = [ex.id for ex in rewritten]
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
