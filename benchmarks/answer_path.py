"""What one reply read from sources costs on the llama.cpp backend, with its answer choice and (as
an evaluation adds) its reference loss: scored on a torch copy of the model, as before, against
scored on llama.cpp in the engine's own prompt cache, as now (assistant/llamacpp_scoring.py).

    .venv/bin/python benchmarks/answer_path.py [--questions 24] [--tokens 64] [--threads 2]

In one run, on the demo's first facts (their passages retrieved from the demo documents, as
the chat shows them), one request at a time like a person chatting; the two ways alternate per
question and every prompt cache is emptied before each, so neither reads what the other left.
Per question: the answer choice, the reply's time to first token and whole time, the reference
loss, and how many prompt tokens llama.cpp decoded and how many it read from its cache. Medians
and the ratio now / before, with the load average before and after."""

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
    ap.add_argument("--tokens", type=int, default=64, help="reply budget (default 64)")
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp and torch threads (default: all cores)")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from assistant.answer_choice import answer_focus
    from assistant.backends import load_engine
    from assistant.embeddings import get_embedder
    from assistant.engine import GenerationOptions
    from assistant.hardware import pick_hardware
    from assistant.models import resolve_model
    from assistant.prompting import build_messages, reading_options
    from assistant.torch_engine import TorchEngine
    from assistant.workspace import Workspace
    from retrieval.service import open_knowledge

    facts = load_jsonl(DEMO / "facts.jsonl")[: args.questions]
    with tempfile.TemporaryDirectory() as tmp:
        kb = open_knowledge(Workspace(Path(tmp)), get_embedder())
        kb.add_paths([DEMO / "docs"])
        asked = [(f["question"], f["answer"], kb.retrieve(f["question"], k=4).passages) for f in facts]

    resolved = resolve_model(None, model_cache(), progress=lambda m: print(m, file=sys.stderr))
    hardware = pick_hardware("cpu")
    llama = load_engine(resolved, hardware, backend="llamacpp", threads=args.threads, parallel=1)
    torch_engine = TorchEngine.load(resolved, hardware)
    plain = GenerationOptions(temperature=0, max_new_tokens=args.tokens, repetition_penalty=1.05)
    ways = {"before: scored on torch": torch_engine, "now: scored on llama.cpp": llama}
    steps = ["answer choice", "reply TTFT", "reply", "reference loss", "total"]
    seconds: dict[tuple[str, str], list[float]] = {(w, s): [] for w in ways for s in steps}
    tokens: dict[str, list[int]] = {w: [0, 0] for w in ways}  # prompt tokens decoded, read from the cache

    def answer(scorer, question, reference, passages):
        messages = build_messages([], question, "", passages)
        t0 = time.perf_counter()
        focused, options = answer_focus(
            reading_options(plain, question, passages), scorer, messages, question, passages
        )
        t1 = time.perf_counter()
        reply = llama.generate(focused, options)
        t2 = time.perf_counter()
        scorer.score(messages, reference)
        t3 = time.perf_counter()
        return [t1 - t0, t1 - t0 + (reply.ttft_s or 0.0), t2 - t1, t3 - t2, t3 - t0], reply

    answer(torch_engine, *asked[0][:2], asked[0][2])  # warm-up: both models paged in
    answer(llama, *asked[0][:2], asked[0][2])
    for i, (question, reference, passages) in enumerate(asked):
        order = list(ways) if i % 2 == 0 else list(ways)[::-1]
        for way in order:
            llama.forget_prompts()
            times, reply = answer(ways[way], question, reference, passages)
            for step, value in zip(steps, times):
                seconds[(way, step)].append(value)
            tokens[way][0] += reply.prompt_tokens - reply.cached_tokens
            tokens[way][1] += reply.cached_tokens
    llama.close()
    before, now = ways
    rows = []
    for step in steps:
        a, b = (statistics.median(seconds[(w, step)]) for w in (before, now))
        rows.append([step, f"{a:.3f}", f"{b:.3f}", f"{b / a:.2f}x" if a else "-"])
    table(
        f"Seconds per reply read from sources (median of {len(asked)} demo questions, one at a time, "
        f"{llama.threads} threads); load average {load_before:.2f} -> {os.getloadavg()[0]:.2f}",
        ["step", before, now, "now / before"],
        rows,
    )
    print(
        "\nReply prompt tokens llama.cpp decoded / read from its cache: "
        + "; ".join(f"{w}: {d} / {c}" for w, (d, c) in tokens.items())
        + " (the torch way also reads every prompt on torch, twice)"
    )


if __name__ == "__main__":
    main()
