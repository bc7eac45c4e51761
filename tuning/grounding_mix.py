"""Grounding examples mixed into every tune: reading kept while the voice is learned.

Tuning on the user's pairs teaches the shop's voice and, as a side effect, makes a small model
read its retrieved sources worse (README: "What the grounding examples add"). RAFT's remedy
(Zhang et al. 2024, "RAFT: Adapting Language Model to Domain Specific RAG") is to train on
questions shown with the passage that answers them *among distractors*, plus some shown only
with distractors, so the model learns to find the answer in what it is given and to say when
it is not there. Here those examples are made from the user's own document chunks at the time
a tune is submitted, and only that tune's training data gets them: they are not saved as
examples and never reach a validation or test split.

For each example (`compose_grounding`):

- a question whose answer is a span of one chunk (tuning/questions.py makes them from table
  rows, list items, FAQ headings and sentences, and filters the bad ones);
- answerable: that chunk among 2-3 distractor chunks; one distractor is chosen for sharing
  words with the question (what a retriever would put beside it: another bike's price list),
  the others at random, all from other sections (preferably other documents) and none holding
  the answer. The answering chunk is first (the chat's best passage, shown right before the
  question) half of the time, elsewhere otherwise, so the model must read rather than trust a
  position;
- "not in the sources" (a quarter by default): the question shown only with 2-3 distractors
  that do not hold its answer; the answer says the documents do not cover it;
- the answer in the voice of the user's pairs where they have one: an opener and a sign-off
  shared by at least half of the training answers ("Ahoy, rider!" ... "Fair winds and smooth
  roads! — Lantern Bay Bikes") wrap a short sentence that holds the span verbatim;
- passages stored as `{"source", "heading", "text", "id"}` and rendered through
  `render_messages`, i.e. exactly as the chat shows them (`assistant.prompting`); an example
  whose rendered prompt does not show its answer (or, for "not in the sources", shows it), or
  that would not fit `max_length`, is dropped.

Never the evaluation's questions: the composer passes an exclusion list (for the demo, the
questions and answers of facts.jsonl and unanswerable.jsonl), and a candidate is dropped when
its question normalises to an excluded one (or has the same content words), or when its answer
holds an excluded gold answer (or its span is part of one). Otherwise the tuned model would
look like it reads when it remembered.

Reproducible: the chunks are put in a canonical order (document, position, text) and all
choices come from one `random.Random` seeded with the tune's seed, so the same chunks and seed
give the same examples (the summary carries their hash) and another seed gives others.

The number mixed in: `ratio` is the share of the final training set they make up (default
0.15: ~18% more examples than the user's), at most `max_examples` (48): on the demo (~180
training examples) that is 32 examples, 45 → 53 optimizer steps at batch 4. They are longer
than the pairs (measured with SmolLM2's tokenizer, passages rendered as the chat shows them:
~200 tokens each against ~100 for a pair), so a demo epoch grows from ~22k to ~29k tokens
(+29%); ratio 0.1 (20 examples) would add ~18%.

Cost at submit time: ~0.3 s on the demo's 105 chunks. A large knowledge base is read in a
seeded order only until there are enough questions (at most 1,000 chunks), and distractors
come from a seeded sample of 2,000 chunks (~3 s for 21,000 chunks).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assistant.errors import ValidationError

from .example import Example, make_example, render_messages
from .questions import Candidate, candidates, contains_phrase, normalise, problems

GENERATOR = "tuning.grounding_mix/1"
GROUNDING_FILE = "grounding.jsonl"  # in the job folder: the examples, as dataset version lines
GROUNDING_SUMMARY = "grounding.json"  # in the job folder: what was mixed in (copied to the adapter card)
TAG = "grounding:generated"

DEFAULT_RATIO = 0.15
MAX_RATIO = 0.5
DEFAULT_MAX_EXAMPLES = 48
DEFAULT_NOT_IN_SOURCES = 0.25
POOL_PER_EXAMPLE = 4  # questions read per example wanted before a large knowledge base stops being read
MAX_CHUNKS_READ = 1000  # chunks read for questions at most (~1 s)
MAX_LIBRARY = 2000  # chunks distractors are drawn from (a seeded sample of a larger knowledge base)
CHARS_PER_TOKEN = 3.2  # a cautious estimate for English with a BPE tokenizer (SmolLM2: ~4)

# Rows of a chunk source: dicts or objects with these fields (retrieval's ChunkRow has
# `document`; a dict may say `source`). tuning never imports retrieval: the composer passes them.
ChunkSource = Callable[[], Iterable[Any]]


@dataclass(frozen=True)
class DocChunk:
    source: str  # the document's name, as the chat cites it
    heading: str
    text: str
    position: int = 0
    id: int | str | None = None

    @property
    def section(self) -> tuple[str, str]:
        return (self.source, self.heading)

    def passage(self) -> dict:
        return {"id": self.id, "source": self.source, "heading": self.heading, "text": self.text}


def as_doc_chunks(rows: Iterable[Any]) -> list[DocChunk]:
    """Chunks from dicts or objects (`source` or `document`, `heading`, `text`, `position`,
    `id`), in a canonical order, so the same chunks give the same examples whatever order the
    store returned them in."""
    out = []
    for row in rows:
        get = row.get if isinstance(row, Mapping) else lambda k, d=None, r=row: getattr(r, k, d)
        text = str(get("text", "") or "")
        if not text.strip():
            continue
        out.append(
            DocChunk(
                source=str(get("source", None) or get("document", "") or ""),
                heading=str(get("heading", "") or ""),
                text=text,
                position=int(get("position", 0) or 0),
                id=get("id", None),
            )
        )
    return sorted(out, key=lambda c: (c.source, c.position, c.heading, c.text))


# ---- options ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroundingOptions:
    """The toggle and the ratio of the Tune tab and `tailor tune`."""

    enabled: bool = True
    ratio: float = DEFAULT_RATIO  # the share of the final training set, 0 - MAX_RATIO
    seed: int | None = None  # None: the training config's seed
    max_examples: int = DEFAULT_MAX_EXAMPLES
    not_in_sources: float = DEFAULT_NOT_IN_SOURCES  # the share of them shown without their answer

    def validate(self) -> GroundingOptions:
        if not 0 <= self.ratio <= MAX_RATIO:
            raise ValidationError(
                f"the grounding ratio must be between 0 and {MAX_RATIO} (a share of the training set)"
            )
        if not isinstance(self.max_examples, int) or self.max_examples < 0:
            raise ValidationError("max_examples must be a whole number >= 0")
        if not 0 <= self.not_in_sources <= 1:
            raise ValidationError("the share of 'not in the sources' examples must be between 0 and 1")
        return self

    def target(self, n_train: int) -> int:
        """How many to mix in beside `n_train` training examples so that they are `ratio` of
        the whole: n / (n_train + n) = ratio."""
        if not self.enabled or self.ratio <= 0 or n_train <= 0:
            return 0
        return min(self.max_examples, round(self.ratio / (1 - self.ratio) * n_train))


# ---- the exclusion list -----------------------------------------------------------------------
_STOP = set(
    "a an the is are was were do does did of to in on for at by what which who how when where i you your my".split()
)


def _content(question: str) -> frozenset[str]:
    return frozenset(w for w in normalise(question).split() if w not in _STOP)


@dataclass
class Exclusions:
    """Questions and gold answers that must never appear in generated examples (an evaluation
    set's). Compared after `normalise`."""

    questions: set[str] = field(default_factory=set)
    answers: set[str] = field(default_factory=set)
    contents: set[frozenset[str]] = field(default_factory=set)

    @classmethod
    def of(cls, questions: Iterable[str] = (), answers: Iterable[str] = ()) -> Exclusions:
        out = cls()
        out.add(questions, answers)
        return out

    def add(self, questions: Iterable[str] = (), answers: Iterable[str] = ()) -> Exclusions:
        for q in questions:
            if normalise(q):
                self.questions.add(normalise(q))
                if len(_content(q)) >= 2:
                    self.contents.add(_content(q))
        self.answers |= {normalise(a) for a in answers if normalise(a)}
        return self

    @classmethod
    def from_records(cls, records: Iterable[Mapping]) -> Exclusions:
        """From evaluation lines: `question` (or `prompt`), `answer`, `aliases`."""
        questions, answers = [], []
        for r in records:
            q = r.get("question") or r.get("prompt")
            if isinstance(q, str):
                questions.append(q)
            for a in [r.get("answer"), *(r.get("aliases") or [])]:
                if isinstance(a, str):
                    answers.append(a)
        return cls.of(questions, answers)

    @classmethod
    def from_files(cls, paths: Iterable[Path | str]) -> Exclusions:
        """From JSON-lines files of evaluation questions (facts.jsonl-style)."""
        records: list[dict] = []
        for path in paths:
            path = Path(path)
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ValidationError(f"cannot read the exclusion list {path}: {exc.strerror or exc}") from exc
            for n, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    raise ValidationError(f"{path.name} line {n} is not JSON: {exc}") from exc
                if isinstance(record, dict):
                    records.append(record)
        return cls.from_records(records)

    def merged(self, other: Exclusions | None) -> Exclusions:
        if other is None:
            return self
        return Exclusions(
            self.questions | other.questions, self.answers | other.answers, self.contents | other.contents
        )

    def __bool__(self) -> bool:
        return bool(self.questions or self.answers)

    def excludes_question(self, question: str) -> bool:
        return normalise(question) in self.questions or _content(question) in self.contents

    def excludes_answer(self, answer: str, span: str) -> bool:
        """The generated answer holds a gold answer, or the span is part of one."""
        norm_answer, norm_span = f" {normalise(answer)} ", f" {normalise(span)} "
        return any(
            f" {gold} " in norm_answer or (norm_span.strip() and norm_span in f" {gold} ") for gold in self.answers
        )

    def summary(self) -> dict:
        return {"questions": len(self.questions), "answers": len(self.answers)}


# ---- the voice --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Voice:
    opener: str = ""
    signoff: str = ""
    system: str = ""  # the system prompt most training examples share, if any

    def wrap(self, sentence: str) -> str:
        return " ".join(p for p in (self.opener, sentence, self.signoff) if p)

    def as_dict(self) -> dict:
        return {"opener": self.opener, "signoff": self.signoff, "system_prompt": bool(self.system)}


_END = (".", "!", "?", ",", ":", "…")


def _common(prefixes: Iterable[str], need: int) -> str:
    counts = Counter(prefixes)
    best = ""
    for text, n in counts.items():
        if n >= need and len(text) > len(best):
            best = text
    return best


def detect_voice(answers: Sequence[str], systems: Sequence[str] = (), *, share: float = 0.5) -> Voice:
    """The opener and sign-off that at least `share` of the answers (and at least 3) use: the
    longest run of whole words at the start ending in punctuation ("Ahoy, rider!"), and at the
    end starting a sentence ("Fair winds and smooth roads! — Lantern Bay Bikes")."""
    answers = [a.strip() for a in answers if a and a.strip()]
    need = max(3, int(share * len(answers) + 0.999))
    if len(answers) < 3:
        return Voice()
    heads, tails = [], []
    for a in answers:
        words = a.split()
        for n in range(1, min(12, len(words) - 1) + 1):
            if words[n - 1].endswith(_END):
                heads.append(" ".join(words[:n]))
        for n in range(1, min(16, len(words) - 1) + 1):
            if words[-n - 1].endswith((".", "!", "?")):
                tails.append(" ".join(words[-n:]))
    opener, signoff = _common(heads, need), _common(tails, need)
    counted = Counter(s.strip() for s in systems if s and s.strip())
    system = ""
    if counted:
        text, n = counted.most_common(1)[0]
        system = text if n >= need else ""
    return Voice(opener, signoff, system)


def voice_of(records: Iterable[Mapping]) -> Voice:
    """The voice of dataset version lines (`messages`, the answer last)."""
    answers, systems = [], []
    for r in records:
        messages = r.get("messages") or []
        if messages and messages[-1].get("role") == "assistant":
            answers.append(str(messages[-1].get("content") or ""))
            systems.append(messages[0]["content"] if messages[0].get("role") == "system" else "")
    return detect_voice(answers, systems)


# ---- composing --------------------------------------------------------------------------------
NOT_IN_SOURCES = (
    "I could not find {topic} in the documents.",
    "The documents I have do not cover {topic}, so I cannot say.",
    "I'm sorry, I could not find {topic} in the sources.",
)
_WORD = re.compile(r"[a-z0-9€]+")


def _terms(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in _STOP}


@dataclass
class Pooled:
    chunk: DocChunk
    candidate: Candidate


@dataclass
class PoolStats:
    generated: int = 0
    well_formed: int = 0
    duplicates: int = 0
    excluded_questions: int = 0
    excluded_answers: int = 0
    kept: int = 0
    chunks_read: int = 0
    rejected: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {
            "generated": self.generated,
            "well_formed": self.well_formed,
            "duplicates": self.duplicates,
            "excluded_question": self.excluded_questions,
            "excluded_answer": self.excluded_answers,
            "kept": self.kept,
        }


def candidate_pool(
    chunks: Sequence[DocChunk],
    voice: Voice = Voice(),
    exclusions: Exclusions | None = None,
    enough: int | None = None,
    max_read: int | None = None,
) -> tuple[list[Pooled], PoolStats]:
    """Every well-formed, non-excluded candidate of the chunks, each question once (reading
    chunks in their order only until there are `enough`, and at most `max_read` chunks)."""
    stats, pool, seen = PoolStats(), list[Pooled](), set[str]()
    for chunk in chunks:
        if (enough is not None and len(pool) >= enough) or (max_read is not None and stats.chunks_read >= max_read):
            break
        stats.chunks_read += 1
        for cand in candidates(chunk.heading, chunk.text):
            stats.generated += 1
            found = problems(cand, chunk.text)
            if found:
                stats.rejected.update(found)
                continue
            stats.well_formed += 1
            key = normalise(cand.question)
            if key in seen:
                stats.duplicates += 1
                continue
            seen.add(key)
            if exclusions is not None and exclusions.excludes_question(cand.question):
                stats.excluded_questions += 1
                continue
            if exclusions is not None and exclusions.excludes_answer(voice.wrap(cand.statement), cand.span):
                stats.excluded_answers += 1
                continue
            pool.append(Pooled(chunk, cand))
    stats.kept = len(pool)
    return pool, stats


def _diversified(pool: list[Pooled], rng: random.Random) -> list[Pooled]:
    """The pool in a seeded order that takes one question per chunk (chunks shuffled) before a
    second from any, so that no table dominates."""
    by_chunk: dict[tuple, list[Pooled]] = {}
    for p in pool:
        by_chunk.setdefault((p.chunk.source, p.chunk.position, p.chunk.text), []).append(p)
    groups = list(by_chunk.values())
    rng.shuffle(groups)
    for g in groups:
        rng.shuffle(g)
    out: list[Pooled] = []
    depth = 0
    while len(out) < len(pool):
        for g in groups:
            if depth < len(g):
                out.append(g[depth])
        depth += 1
    return out


def holds(text: str, span: str) -> bool:
    return span in text or contains_phrase(text, span)


class Library:
    """The chunks distractors are drawn from, with their normalised texts and terms computed
    once (a tune draws a hundred distractor sets from them)."""

    def __init__(self, docs: Sequence[DocChunk]):
        self.docs = list(docs)
        self.norm = [f" {normalise(c.text)} " for c in self.docs]
        self.terms = [_terms(c.heading + " " + c.text) for c in self.docs]

    def without(self, gold: DocChunk, span: str) -> list[int]:
        """Chunks of other sections that do not hold `span` (verbatim or normalised)."""
        norm = f" {normalise(span)} "
        return [
            i
            for i, c in enumerate(self.docs)
            if c.section != gold.section and span not in c.text and norm not in self.norm[i]
        ]


def pick_distractors(
    rng: random.Random, library: Library, gold: DocChunk, question: str, span: str, n: int
) -> list[DocChunk]:
    """`n` chunks from other sections that do not hold `span`: one sharing words with the
    question (a retriever's near miss), the rest at random, other documents first."""
    pool = library.without(gold, span)
    if not pool or n <= 0:
        return []
    q = _terms(question)
    scored = sorted(((len(q & library.terms[i]), rng.random(), i) for i in pool), reverse=True)
    near = [i for score, _, i in scored[:5] if score > 0]
    chosen = [rng.choice(near)] if near else []
    others = [i for i in pool if library.docs[i].source != gold.source and i not in chosen]
    same = [i for i in pool if library.docs[i].source == gold.source and i not in chosen]
    rng.shuffle(others)
    rng.shuffle(same)
    for i in others + same:
        if len(chosen) >= n:
            break
        if all(library.docs[i].section != library.docs[j].section for j in chosen):
            chosen.append(i)
    return [library.docs[i] for i in chosen[:n]]


def _fits(rendered: list[dict], max_length: int) -> bool:
    chars = sum(len(m["content"]) + 12 for m in rendered)
    return chars / CHARS_PER_TOKEN <= max_length - 8


@dataclass
class GroundingMix:
    """What one tune mixes in: the examples and a summary for the job log and the adapter card."""

    examples: list[Example] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    rendered: list[list[dict]] = field(default_factory=list)  # render_messages of each example

    @property
    def message(self) -> str:
        return str(self.summary.get("message", ""))

    def lines(self) -> list[dict]:
        """The examples as dataset version lines (what the trainer reads)."""
        rendered = self.rendered if len(self.rendered) == len(self.examples) else None
        return [
            {
                "example_id": None,
                "messages": rendered[i] if rendered else render_messages(ex),
                "label": None,
                "tags": list(ex.tags),
                "grounding": ex.provenance,
            }
            for i, ex in enumerate(self.examples)
        ]


def _summary(options: GroundingOptions, seed: int, **values) -> dict:
    return {
        "enabled": options.enabled,
        "ratio": options.ratio,
        "seed": seed,
        "max_examples": options.max_examples,
        "examples": 0,
        "answerable": 0,
        "not_in_sources": 0,
        "generator": GENERATOR,
        **values,
    }


def compose_grounding(
    chunks: Iterable[Any] | None,
    train_records: Sequence[Mapping] = (),
    *,
    n_train: int | None = None,
    options: GroundingOptions | None = None,
    seed: int = 42,
    exclusions: Exclusions | None = None,
    max_length: int = 512,
) -> GroundingMix:
    """The grounding examples for a tune on `train_records` (dataset version lines: their
    voice, and their count unless `n_train` is given) from `chunks` (see `as_doc_chunks`)."""
    options = (options or GroundingOptions()).validate()
    seed = options.seed if options.seed is not None else seed
    n_train = len(train_records) if n_train is None else n_train
    if not options.enabled:
        return GroundingMix([], _summary(options, seed, message="Grounding examples are off: none mixed in."))
    docs = as_doc_chunks(chunks or [])
    if not docs:
        return GroundingMix(
            [],
            _summary(
                options,
                seed,
                documents=0,
                chunks=0,
                message="Grounding examples are on, but the knowledge base has no documents, so none were "
                "mixed in. Add documents (Knowledge tab or `tailor docs add`) to keep the tuned model reading them.",
            ),
        )
    voice = voice_of(train_records)
    target = options.target(n_train)
    n_not = round(target * options.not_in_sources)
    n_ans = target - n_not
    rng = random.Random(f"tailor-grounding:{seed}")
    # A large knowledge base is read in a seeded order only until there are enough questions
    # to choose from, and distractors come from a seeded sample: the cost stays that of a
    # few hundred chunks however many there are.
    shuffled = list(docs)
    rng.shuffle(shuffled)
    pool, stats = candidate_pool(
        shuffled, voice, exclusions, enough=max(POOL_PER_EXAMPLE * target, 64), max_read=MAX_CHUNKS_READ
    )
    library = Library(shuffled[:MAX_LIBRARY])
    order = _diversified(pool, rng)
    examples: list[Example] = []
    rendered: list[list[dict]] = []
    skipped: Counter[str] = Counter()
    used = 0
    for want_answer, count in ((True, n_ans), (False, n_not)):
        made = 0
        while made < count and used < len(order):
            item = order[used]
            used += 1
            ex, shown, why = _make(item, library, voice, rng, answerable=want_answer, max_length=max_length)
            if ex is None:
                skipped[why] += 1
                continue
            examples.append(ex)
            rendered.append(shown)
            made += 1
    n_docs = len({c.source for c in docs})
    answerable = sum(1 for ex in examples if ex.provenance["in_sources"])
    lines_hash = hashlib.sha256(json.dumps(rendered, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:16]
    if examples:
        message = (
            f"Mixed in {len(examples)} grounding examples from {n_docs} document{'s' * (n_docs != 1)} "
            f"({answerable} answered from a passage among distractors, {len(examples) - answerable} "
            f"'not in the sources'): {len(examples) / (n_train + len(examples)):.0%} of the training set."
        )
    elif target == 0:
        message = "Grounding examples are on, but the ratio (or the training set) leaves room for none."
    else:
        message = (
            f"Grounding examples are on, but none could be made from the {n_docs} document"
            f"{'s' * (n_docs != 1)} ({stats.kept} usable questions; "
            + ", ".join(f"{n} {why}" for why, n in skipped.most_common())
            + (")" if skipped else "none passed the checks)")
        )
    summary = _summary(
        options,
        seed,
        examples=len(examples),
        answerable=answerable,
        not_in_sources=len(examples) - answerable,
        target=target,
        train_examples=n_train,
        share=round(len(examples) / (n_train + len(examples)), 4) if examples else 0.0,
        documents=n_docs,
        chunks=len(docs),
        chunks_read=stats.chunks_read,
        candidates=stats.as_dict(),
        exclusions=exclusions.summary() if exclusions is not None else {"questions": 0, "answers": 0},
        skipped=dict(skipped),
        voice=voice.as_dict(),
        hash=lines_hash,
        message=message,
    )
    return GroundingMix(examples, summary, rendered)


def _make(
    item: Pooled, library: Library, voice: Voice, rng: random.Random, *, answerable: bool, max_length: int
) -> tuple[Example | None, list[dict], str]:
    """One example from a pooled question, with its rendered messages; or (None, [], why not)."""
    cand, gold = item.candidate, item.chunk
    distractors = pick_distractors(rng, library, gold, cand.question, cand.span, rng.choice((2, 3)))
    if not distractors:
        return None, [], "no distractor without the answer"
    at = 0 if rng.random() < 0.5 else rng.randint(1, len(distractors))  # where the answering chunk goes
    if answerable:
        sentence = cand.statement
    else:
        sentence = rng.choice(NOT_IN_SOURCES).format(topic=cand.topic)
        sentence = sentence.replace("the answer to that in", "that in").replace(
            "cover the answer to that", "cover that"
        )
    messages = ([{"role": "system", "content": voice.system}] if voice.system else []) + [
        {"role": "user", "content": cand.question},
        {"role": "assistant", "content": voice.wrap(sentence)},
    ]
    tags = [TAG, "grounding:answerable" if answerable else "grounding:not-in-sources"]

    def build(shown: list[DocChunk]) -> tuple[Example, list[dict]]:
        passages = [d.passage() for d in shown]
        position = None
        if answerable:
            position = min(at, len(passages))
            passages.insert(position, gold.passage())
        provenance = {
            "generator": GENERATOR,
            "kind": cand.kind,
            "in_sources": answerable,
            "span": cand.span,
            "chunk": {"id": gold.id, "source": gold.source, "heading": gold.heading},
            "gold_position": position,
        }
        example = make_example(messages, passages=passages, tags=tags, source="generated", provenance=provenance)
        return example, render_messages(example)

    example, rendered = build(distractors)
    while not _fits(rendered, max_length) and len(distractors) > 1:
        distractors = distractors[:-1]  # fewer distractors before giving up on the example
        example, rendered = build(distractors)
    if not _fits(rendered, max_length):
        return None, [], "too long for max_length"
    shown = rendered[-2]["content"]  # the user turn as the trainer shows it (passages as in the chat)
    if answerable and cand.span not in shown:
        return None, [], "answer not shown in the rendered prompt"
    if not answerable and holds(shown.rsplit("\n\nQuestion: ", 1)[0], cand.span):
        return None, [], "answer shown in the rendered prompt"
    return example, rendered, ""


# ---- the job folder ---------------------------------------------------------------------------
def write_grounding(job_dir: Path, mix: GroundingMix) -> None:
    """The job's grounding files, written when the job is queued (the worker reads them)."""
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    if mix.examples:
        (job_dir / GROUNDING_FILE).write_text(
            "".join(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n" for line in mix.lines()),
            encoding="utf-8",
        )
    (job_dir / GROUNDING_SUMMARY).write_text(json.dumps(mix.summary, indent=1, ensure_ascii=False), encoding="utf-8")


def read_grounding_summary(job_dir: Path | str) -> dict | None:
    path = Path(job_dir) / GROUNDING_SUMMARY
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def card_summary(summary: dict | None) -> dict | None:
    """What the adapter card records of a tune's grounding mix."""
    if summary is None:
        return None
    keys = (
        "enabled",
        "ratio",
        "seed",
        "examples",
        "answerable",
        "not_in_sources",
        "share",
        "documents",
        "chunks",
        "max_examples",
        "exclusions",
        "candidates",
        "voice",
        "hash",
        "generator",
        "message",
    )
    return {k: summary[k] for k in keys if k in summary}
