"""How the llama.cpp backend shares a step between prompts and running replies (chunked prefill).

    python benchmarks/prefill_chunk.py [--chunks 512,256,128,64,32] [--rounds 2] [--long 18] [--threads N]

Why: a step of Tailor's llama.cpp backend decodes the next token of every running reply
together with prompt tokens of newly admitted requests. While other requests share the step it
reads at most TAILOR_PREFILL_CHUNK prompt tokens (assistant/llamacpp_engine.py). Measured here,
in one run, on one engine whose chunk is changed between runs (`512` is a whole batch: what the
engine did before the chunk existed, for prompts that fit one batch together):

- **long prompt beside running replies**: three chat replies are decoding when a long prompt
  (`--long` retrieved passages shown whole, ~1,500 tokens) arrives. The longest wait between two
  tokens of a running reply while that prompt is read, the long prompt's time to first token,
  and the running replies' tokens/s over the whole run.
- **eight at once**: eight short chat prompts arrive together (96 new tokens each); median and
  last time to first token, and aggregate tokens/s.
- **scoring beside running replies**: the answer choice's scoring of the long prompt (three
  candidate spans) while three chat replies decode; the longest wait between two of their
  tokens meanwhile, and how long the scoring took.

Every prompt is read cold (the engine's prompt cache is emptied first). Greedy, no adapter, no
repetition penalty; medians over `--rounds`, each round runs every chunk size once in turn. The
load average before and after is printed: compare within one run."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import assistant  # noqa: F401  (before torch: OpenMP's wait policy as Tailor ships it, assistant/openmp.py)
from benchmarks.chat import PASSAGE, PROMPTS
from benchmarks.tables import model_cache


def timed(engine, messages, tokens: int, stamps: list[float]):
    """Start a greedy reply and note the arrival time of each piece of text in `stamps`."""
    from assistant.engine import GenerationOptions

    gen = engine.stream(messages, GenerationOptions(temperature=0, max_new_tokens=tokens, repetition_penalty=1.0))

    def read() -> None:
        for _ in gen:
            stamps.append(time.perf_counter())

    thread = threading.Thread(target=read)
    thread.start()
    return gen, thread


def long_beside_running(engine, chats, long_prompt) -> dict:
    engine.forget_prompts()
    stamps: list[list[float]] = [[] for _ in chats]
    started = [timed(engine, m, 160, s) for m, s in zip(chats, stamps)]
    while min(len(s) for s in stamps) < 8:  # every reply is decoding
        time.sleep(0.005)
    arrived = time.perf_counter()
    long_stamps: list[float] = []
    gen, thread = timed(engine, long_prompt, 4, long_stamps)
    thread.join()
    first = long_stamps[0] if long_stamps else time.perf_counter()
    for _, t in started:
        t.join()
    gaps = []
    for s in stamps:
        during = [t for t in s if arrived <= t <= first]
        before = [t for t in s if t < arrived][-1:]  # the wait that spans the arrival counts too
        points = before + during + [t for t in s if t > first][:1]
        gaps += [b - a for a, b in zip(points, points[1:])]
    tokens = sum(g.result.completion_tokens for g, _ in started)
    span = max(s[-1] for s in stamps) - min(s[0] for s in stamps)
    return {
        "gap": max(gaps) if gaps else 0.0,
        "long_ttft": first - arrived,
        "rate": tokens / span,
        "prompt": gen.result.prompt_tokens,
    }


def scored_beside_running(engine, chats, long_prompt) -> dict:
    """The answer choice's scoring of the long prompt (span log-probabilities, on the scheduler
    thread between two steps) while three replies are decoding."""
    engine.forget_prompts()
    stamps: list[list[float]] = [[] for _ in chats]
    started = [timed(engine, m, 160, s) for m, s in zip(chats, stamps)]
    while min(len(s) for s in stamps) < 8:
        time.sleep(0.005)
    arrived = time.perf_counter()
    engine.span_logprobs(long_prompt, "The answer is", [" 9:00", " 10:00-16:00", " Saturdays"])
    done = time.perf_counter()
    for _, t in started:
        t.join()
    gaps = []
    for s in stamps:
        points = [t for t in s if t < arrived][-1:] + [t for t in s if arrived <= t <= done]
        points += [t for t in s if t > done][:1]
        gaps += [b - a for a, b in zip(points, points[1:])]
    return {"gap": max(gaps) if gaps else 0.0, "took": done - arrived}


def eight_at_once(engine, chats) -> dict:
    engine.forget_prompts()
    start = time.perf_counter()
    stamps: list[list[float]] = [[] for _ in range(8)]
    started = [timed(engine, chats[i % len(chats)], 96, stamps[i]) for i in range(8)]
    for _, t in started:
        t.join()
    wall = time.perf_counter() - start
    firsts = sorted(s[0] - start for s in stamps if s)
    return {
        "median": statistics.median(firsts),
        "last": firsts[-1],
        "rate": sum(g.result.completion_tokens for g, _ in started) / wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", default="512,256,128,64,32", help="TAILOR_PREFILL_CHUNK values to compare")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--long", type=int, default=18, help="passages in the long prompt")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    chunks = [int(c) for c in args.chunks.split(",")]
    load_before = os.getloadavg()

    from assistant.backends import load_engine
    from assistant.hardware import pick_hardware
    from assistant.models import resolve_model
    from assistant.prompting import Passage, build_messages

    cache = model_cache()
    resolved = resolve_model(None, cache, progress=lambda m: print(m, file=sys.stderr))
    engine = load_engine(
        resolved, pick_hardware("cpu"), backend="llamacpp", threads=args.threads, parallel=8, models_dir=cache
    )
    chats = [[{"role": "user", "content": p}] for p in PROMPTS]
    passages = [Passage(id=i, text=PASSAGE, source=f"doc{i}.md", score=0.9) for i in range(args.long)]
    os.environ["TAILOR_EVIDENCE_SENTENCES"] = "0"  # passages whole: a long prompt
    long_prompt = build_messages([], "When does the shop open on Saturdays?", "", passages)
    described = engine.describe()
    timed(engine, chats[0], 4, [])[1].join()  # warm up
    results: dict[int, list[tuple[dict, dict, dict]]] = {c: [] for c in chunks}
    for _ in range(args.rounds):
        for chunk in chunks:
            engine.prefill_chunk = chunk  # type: ignore[attr-defined]  # read at every step
            results[chunk].append(
                (
                    long_beside_running(engine, chats[:3], long_prompt),
                    eight_at_once(engine, chats),
                    scored_beside_running(engine, chats[:3], long_prompt),
                )
            )
            print(f"measured chunk {chunk}", file=sys.stderr, flush=True)
    prompt_tokens = results[chunks[0]][0][0]["prompt"]
    engine.close()
    load_after = os.getloadavg()

    def med(chunk: int, part: int, key: str) -> float:
        return statistics.median(r[part][key] for r in results[chunk])

    print(
        f"\nmodel {resolved.name}, {described} (by default), long prompt {prompt_tokens} tokens, "
        f"{args.rounds} rounds; load average before {load_before[0]:.2f}, after {load_after[0]:.2f}\n"
    )
    head = [
        "prompt tokens per shared step",
        "longest wait between tokens of a running reply, ms",
        "long prompt TTFT, ms",
        "running replies tok/s",
        "8 at once: median TTFT, ms",
        "last TTFT, ms",
        "aggregate tok/s",
        "scoring the long prompt: longest wait, ms",
        "scoring took, ms",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for c in chunks:
        cells = [
            str(c),
            f"{med(c, 0, 'gap') * 1000:.0f}",
            f"{med(c, 0, 'long_ttft') * 1000:.0f}",
            f"{med(c, 0, 'rate'):.1f}",
            f"{med(c, 1, 'median') * 1000:.0f}",
            f"{med(c, 1, 'last') * 1000:.0f}",
            f"{med(c, 1, 'rate'):.1f}",
            f"{med(c, 2, 'gap') * 1000:.0f}",
            f"{med(c, 2, 'took') * 1000:.0f}",
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
