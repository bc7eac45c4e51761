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

The parts: grounding_pool.py (the chunks in a canonical order and the questions made of them),
grounding_exclusions.py (the evaluation's questions and answers, never generated),
grounding_voice.py (the opener, sign-off and system prompt of the user's pairs),
grounding_distractors.py (the chunks shown beside a question) and grounding_files.py (the mix
as the job folder and the adapter card keep it). This module composes an example and the mix
(`compose_grounding`) and re-exports the names other modules use.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from assistant.errors import ValidationError

from .example import Example, make_example, render_messages
from .grounding_distractors import Library, holds, pick_distractors
from .grounding_exclusions import Exclusions
from .grounding_files import (
    GROUNDING_FILE,
    GROUNDING_SUMMARY,
    GroundingMix,
    card_summary,
    read_grounding_summary,
    write_grounding,
)
from .grounding_pool import ChunkSource, DocChunk, Pooled, PoolStats, _diversified, as_doc_chunks, candidate_pool
from .grounding_voice import Voice, detect_voice, voice_of

__all__ = [
    "DEFAULT_MAX_EXAMPLES",
    "DEFAULT_NOT_IN_SOURCES",
    "DEFAULT_RATIO",
    "GENERATOR",
    "GROUNDING_FILE",
    "GROUNDING_SUMMARY",
    "MAX_RATIO",
    "NOT_IN_SOURCES",
    "TAG",
    "ChunkSource",
    "DocChunk",
    "Exclusions",
    "GroundingMix",
    "GroundingOptions",
    "Library",
    "PoolStats",
    "Pooled",
    "Voice",
    "as_doc_chunks",
    "candidate_pool",
    "card_summary",
    "compose_grounding",
    "detect_voice",
    "pick_distractors",
    "read_grounding_summary",
    "voice_of",
    "write_grounding",
]

GENERATOR = "tuning.grounding_mix/1"
TAG = "grounding:generated"

DEFAULT_RATIO = 0.15
MAX_RATIO = 0.5
DEFAULT_MAX_EXAMPLES = 48
DEFAULT_NOT_IN_SOURCES = 0.25
POOL_PER_EXAMPLE = 4  # questions read per example wanted before a large knowledge base stops being read
MAX_CHUNKS_READ = 1000  # chunks read for questions at most (~1 s)
MAX_LIBRARY = 2000  # chunks distractors are drawn from (a seeded sample of a larger knowledge base)
CHARS_PER_TOKEN = 3.2  # a cautious estimate for English with a BPE tokenizer (SmolLM2: ~4)


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


# ---- composing --------------------------------------------------------------------------------
NOT_IN_SOURCES = (
    "I could not find {topic} in the documents.",
    "The documents I have do not cover {topic}, so I cannot say.",
    "I'm sorry, I could not find {topic} in the sources.",
)


def _fits(rendered: list[dict], max_length: int) -> bool:
    chars = sum(len(m["content"]) + 12 for m in rendered)
    return chars / CHARS_PER_TOKEN <= max_length - 8


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
