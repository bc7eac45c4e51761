"""Does a reply depend on what it shared a batch with? llama.cpp with plain attention (the
default) against flash attention (TAILOR_FLASH_ATTENTION=on), on the chat's answering path.

    .venv/bin/python benchmarks/batch_invariance.py [--questions 24] [--tokens 128] [--repeats 2] [--threads 2]

The demo's first facts, their passages retrieved from the demo documents, go through what the
chat and an evaluation do (answer choice, then the reply; greedy, the eval's penalty of 1.05)
with the base model, two ways on each engine: one request at a time, and all at once (the
engine's 8 streams decode them together, as an evaluation does). Printed per attention: how
many replies differ between the two ways, and the wall time of each way (medians over the
repeats; both engines are loaded in one process and take turns, so they share the machine's
load). With flash attention, llama.cpp computes a sequence's 64+ tokens in one batch with a
tiled f32 kernel and fewer tokens with an f16 one, so how the scheduler cuts a prompt moves the
logits (up to 0.67 on this model) and greedy replies change; plain attention computes every
token alike in any batch."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.tables import load_jsonl, model_cache, table  # noqa: E402

DEMO = ROOT / "demo" / "lantern_bay"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--questions", type=int, default=24, help="demo facts to answer (default 24)")
    ap.add_argument("--tokens", type=int, default=128, help="reply budget (default 128, the eval's)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all cores)")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]

    import assistant  # noqa: F401  (OpenMP's wait policy as Tailor ships it)
    from assistant.answer_choice import answer_focus
    from assistant.backends import load_engine
    from assistant.embeddings import get_embedder
    from assistant.engine import GenerationOptions
    from assistant.hardware import pick_hardware
    from assistant.models import resolve_model
    from assistant.prompting import build_messages, reading_options
    from assistant.workspace import Workspace
    from retrieval.service import open_knowledge

    facts = load_jsonl(DEMO / "facts.jsonl")[: args.questions]
    with tempfile.TemporaryDirectory() as tmp:
        kb = open_knowledge(Workspace(Path(tmp)), get_embedder())
        kb.add_paths([DEMO / "docs"])
        retrieved = [kb.retrieve(f["question"], k=4) for f in facts]
    cache = model_cache()
    resolved = resolve_model(None, cache, progress=lambda m: print(m, file=sys.stderr))
    engines = {
        name: load_engine(
            resolved,
            pick_hardware("cpu"),
            backend="llamacpp",
            threads=args.threads,
            models_dir=cache,
            flash_attention=flash,
        )
        for name, flash in (("plain attention (default)", False), ("flash attention", True))
    }
    options = GenerationOptions(temperature=0, max_new_tokens=args.tokens, repetition_penalty=1.05)

    def requests(engine):
        """The answer choice runs here, as the chat and the evaluation run it before each reply."""
        out = []
        for fact, found in zip(facts, retrieved):
            passages = None if found.abstain else found.passages
            messages = build_messages([], fact["question"], "", passages)
            reading = reading_options(options, fact["question"], passages)
            out.append(answer_focus(reading, engine, messages, fact["question"], passages, None))
        return out

    def one_at_a_time(engine):
        return [engine.generate(m, o).text for m, o in requests(engine)]

    def all_at_once(engine):
        # the choices are made first, then every reply is submitted: they decode together
        return [g.wait().text for g in [engine.stream(m, o) for m, o in requests(engine)]]

    results: dict[str, dict[str, list]] = {name: {"one": [], "all": [], "differ": []} for name in engines}
    for _ in range(args.repeats):
        for name, engine in engines.items():
            engine.forget_prompts()  # type: ignore[attr-defined]
            start = time.perf_counter()
            alone = one_at_a_time(engine)
            results[name]["one"].append(time.perf_counter() - start)
            engine.forget_prompts()  # type: ignore[attr-defined]
            start = time.perf_counter()
            together = all_at_once(engine)
            results[name]["all"].append(time.perf_counter() - start)
            results[name]["differ"].append(sum(a != b for a, b in zip(alone, together)))
    load_after = os.getloadavg()[0]

    rows = []
    for name, r in results.items():
        one, every = statistics.median(r["one"]), statistics.median(r["all"])
        rows.append(
            [
                name,
                " / ".join(f"{d} of {len(facts)}" for d in r["differ"]),
                f"{one:.1f}",
                f"{every:.1f}",
                f"{one / every:.2f}x",
            ]
        )
    base, flash = (statistics.median(results[n]["all"]) for n in engines)
    table(
        f"{resolved.name}, {len(facts)} demo facts with their answer choice, {args.tokens} new tokens, greedy; "
        f"{args.repeats} repeats; load average before {load_before:.2f}, after {load_after:.2f}",
        [
            "attention",
            "replies that differ, one at a time vs all at once (each repeat)",
            "one at a time (s)",
            "all at once (s)",
            "batching speed-up",
        ],
        rows,
    )
    print(f"\nall at once, plain / flash attention time: {base / flash:.2f}x")
    for engine in engines.values():
        engine.close()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
