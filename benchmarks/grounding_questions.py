"""How good are the grounding examples a tune mixes in? Measured on the demo's documents.

    .venv/bin/python benchmarks/grounding_questions.py [--seed 42] [--samples 15] [--ratio 0.15]
                                                       [--n-train 180] [--embedding-tokens]

No model is run. The demo documents are parsed and chunked as the knowledge base does
(`--embedding-tokens`: sized with the embedding model's tokenizer, as `tailor docs add` does;
default: the tokenizer-free estimate, a few seconds faster and nearly the same chunks), then:

1. Question templates (tuning/questions.py): how many candidates the chunks give, how many
   pass the well-formedness checks (`problems`), and why the others fail.
2. The exclusion list (facts.jsonl and unanswerable.jsonl): how many well-formed candidates
   it removes (same question, or an answer holding a gold answer).
3. The composed examples (tuning/grounding_mix.py) checked independently of the generator:
   the span is verbatim in its chunk and in the answer, the chunk is among the passages (or,
   for "not in the sources", absent), no distractor holds the span, the rendered prompt shows
   the span, the answer wears the voice, no question or answer of the evaluation sets appears.
4. `--samples` examples, printed (question, answer, passages with the answering one marked).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from retrieval.chunking import chunk_document  # noqa: E402
from retrieval.documents import parse_document  # noqa: E402
from tuning.example import render_messages  # noqa: E402
from tuning.grounding_mix import Exclusions, GroundingOptions, as_doc_chunks, compose_grounding  # noqa: E402
from tuning.questions import candidates, contains_phrase, normalise, problems  # noqa: E402

DEMO = ROOT / "demo" / "lantern_bay"


def demo_chunks(embedding_tokens: bool) -> list[dict]:
    count = None
    if embedding_tokens:
        from assistant.embeddings import get_embedder

        count = get_embedder().count_tokens
    out = []
    for path in sorted((DEMO / "docs").iterdir()):
        doc = parse_document(path.name, path.read_bytes())
        chunks = chunk_document(doc, count) if count else chunk_document(doc)
        out += [
            {"id": len(out) + i, "source": path.name, "heading": c.heading, "text": c.text, "position": c.position}
            for i, c in enumerate(chunks)
        ]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--samples", type=int, default=15)
    ap.add_argument("--ratio", type=float, default=GroundingOptions().ratio)
    ap.add_argument("--n-train", type=int, default=180, help="training examples beside them (the demo: ~180)")
    ap.add_argument("--embedding-tokens", action="store_true")
    args = ap.parse_args()

    chunks = demo_chunks(args.embedding_tokens)
    docs = as_doc_chunks(chunks)
    made = [(c, cand, problems(cand, c.text)) for c in docs for cand in candidates(c.heading, c.text)]
    good = [(c, cand) for c, cand, found in made if not found]
    reasons = Counter(r for _, _, found in made for r in found)
    kinds = Counter(cand.kind for _, cand in good)
    print(f"chunks: {len(docs)} from {len({c.source for c in docs})} documents")
    print(f"1. candidates: {len(made)}; well-formed: {len(good)} ({len(good) / max(1, len(made)):.0%})")
    print("   rejected for: " + ", ".join(f"{r} {n}" for r, n in reasons.most_common()))
    print("   well-formed by kind: " + ", ".join(f"{k} {n}" for k, n in kinds.most_common()))

    sets = [DEMO / "facts.jsonl", DEMO / "unanswerable.jsonl"]
    exclusions = Exclusions.from_files(sets)
    records = [
        {"messages": [{"role": "user", "content": p["prompt"]}, {"role": "assistant", "content": p["completion"]}]}
        for p in map(json.loads, (DEMO / "pairs.jsonl").read_text(encoding="utf-8").splitlines())
    ]
    mix = compose_grounding(
        chunks,
        records,
        n_train=args.n_train,
        options=GroundingOptions(ratio=args.ratio),
        seed=args.seed,
        exclusions=exclusions,
    )
    s = mix.summary
    cands = s["candidates"]
    print(
        f"2. exclusion list ({s['exclusions']['questions']} questions, {s['exclusions']['answers']} answers): "
        f"removed {cands['excluded_question']} by question and {cands['excluded_answer']} by answer "
        f"({cands['duplicates']} duplicate questions); {cands['kept']} usable"
    )

    evals = [json.loads(line) for p in sets for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    asked = {normalise(r["question"]) for r in evals}
    golds = [a for r in evals for a in [r.get("answer"), *r.get("aliases", [])] if isinstance(a, str)]
    by_id = {c.id: c for c in docs}
    checks: Counter = Counter()
    for ex in mix.examples:
        meta, span = ex.provenance, ex.provenance["span"]
        gold_text = by_id[meta["chunk"]["id"]].text
        others = [p for p in ex.passages if p["text"] != gold_text]
        shown = render_messages(ex)[-2]["content"]
        ok = {
            "span verbatim in its chunk": span in gold_text,
            "chunk among the passages" if meta["in_sources"] else "chunk not among the passages": (
                len(others) == len(ex.passages) - 1 if meta["in_sources"] else len(others) == len(ex.passages)
            ),
            "no distractor holds the span": not any(contains_phrase(p["text"], span) for p in others),
            "answer holds the span" if meta["in_sources"] else "answer says not found": (
                span in ex.answer if meta["in_sources"] else span not in ex.answer
            ),
            "rendered prompt shows the span" if meta["in_sources"] else "rendered prompt lacks the span": (
                (span in shown) if meta["in_sources"] else not contains_phrase(shown.rsplit("Question:", 1)[0], span)
            ),
            "answer in the voice": ex.answer.startswith(s["voice"]["opener"])
            and ex.answer.endswith(s["voice"]["signoff"]),
            "no evaluation question": normalise(ex.prompt) not in asked,
            "no evaluation answer": not any(contains_phrase(ex.answer, g) for g in golds),
        }
        for name, passed in ok.items():
            checks[(name, passed)] += 1
    print(
        f"3. composed: {s['examples']} examples ({s['answerable']} answerable, {s['not_in_sources']} not in the "
        f"sources), {s['share']:.0%} of {args.n_train + s['examples']} training examples; "
        f"seed {s['seed']}, hash {s['hash']}"
    )
    for name in dict.fromkeys(n for n, _ in checks):
        print(f"   {name}: {checks[(name, True)]}/{checks[(name, True)] + checks[(name, False)]}")
    positions = Counter(ex.provenance["gold_position"] for ex in mix.examples if ex.provenance["in_sources"])
    sizes = Counter(len(ex.passages) for ex in mix.examples)
    print(f"   answering passage at rank (0 = best, shown last): {dict(sorted(positions.items()))}")
    print(f"   passages per example: {dict(sorted(sizes.items()))}")

    # a quarter of the samples from the "not in the sources" ones, as in the mix
    answerable = [ex for ex in mix.examples if ex.provenance["in_sources"]]
    absent = [ex for ex in mix.examples if not ex.provenance["in_sources"]]
    n_absent = min(len(absent), args.samples // 4)
    samples = answerable[: args.samples - n_absent] + absent[:n_absent]
    print(f"4. {len(samples)} samples (* marks the answering passage; passages listed best first):")
    for i, ex in enumerate(samples, start=1):
        meta = ex.provenance
        marks = [
            ("*" if meta["in_sources"] and j == meta["gold_position"] else "")
            + f"{p['source']} — {p['heading'].split(' > ')[-1]}"
            for j, p in enumerate(ex.passages)
        ]
        print(f"  {i:2}. [{meta['kind']}{'' if meta['in_sources'] else ', not in the sources'}] Q: {ex.prompt}")
        print(f"      A: {ex.answer}")
        print(f"      passages: {' | '.join(marks)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
