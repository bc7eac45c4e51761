"""llama.cpp's speed on each GGUF weight type of the default model, with the bare library.

    python benchmarks/gguf_weights.py [--weights embedded,q8_0,f16] [--threads N] [--prompt 512] [--repeats 3]

Why: TAILOR_GGUF_WEIGHTS=auto picks q8_0 for the embedded default model over its own Q4_1 file
(assistant/backends.py). What decides it is measured here, in one run, on the same machine:

- prefill: tokens/s reading a `--prompt`-token prompt in one call (best of `--repeats`);
- decode: one sequence's next token after a 100-token prompt, ms and tokens/s (median of 12);
- batch: 2, 4, 8 and 16 next tokens in one call after the same prompt (ms, and the ratio to one
  token). llama-cpp-python's `eval` computes logits for the last token only; a batch of that
  many concurrent replies needs a row of the 49,152-word output head for each (about a fifth
  of the model's multiply-adds per token), so it costs somewhat more than this.

Each weight type is made once in the benchmarks' model cache, as Tailor makes it. Quality per
type is `benchmarks/gguf_quality.py`'s table. Greedy, no adapter; the load average before and
after is printed (compare within one run)."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import assistant  # noqa: F401  (before llama.cpp and torch: Tailor's OpenMP wait, assistant/openmp.py)
from benchmarks.tables import model_cache

BATCHES = (2, 4, 8, 16)


def measure(path: Path, threads: int, prompt: int, repeats: int) -> dict:
    from assistant.llamacpp_params import open_llama

    llm = open_llama(model_path=str(path), n_ctx=2048, n_threads=threads, n_batch=512, n_ubatch=512, verbose=False)
    long_ids = [1] + [(i * 37) % 40000 + 100 for i in range(prompt - 1)]  # ordinary vocabulary, no specials
    llm.eval(long_ids[:32])  # warm up: first calls allocate buffers
    best = float("inf")
    for _ in range(repeats):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(long_ids)
        best = min(best, time.perf_counter() - t0)
    ids = long_ids[:100]
    step: dict[int, float] = {}
    for n in (1,) + BATCHES:
        times = []
        for _ in range(12):
            llm.reset()
            llm.eval(ids)
            t0 = time.perf_counter()
            llm.eval([500 + j for j in range(n)])
            times.append(time.perf_counter() - t0)
        step[n] = statistics.median(times)
    del llm
    return {"prefill": prompt / best, "step": step}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="embedded,q8_0,f16", help="comma-separated TAILOR_GGUF_WEIGHTS values")
    ap.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    ap.add_argument("--prompt", type=int, default=512, help="prefill prompt length in tokens")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    threads = args.threads or os.cpu_count() or 1
    load_before = os.getloadavg()

    from assistant.backends import base_gguf
    from assistant.models import resolve_model

    cache = model_cache()
    resolved = resolve_model(None, cache, progress=lambda m: print(m, file=sys.stderr))
    rows = {}
    for weights in args.weights.split(","):
        path = base_gguf(resolved, cache, weights, progress=lambda m: print(m, file=sys.stderr))
        rows[weights] = (path, measure(path, threads, args.prompt, args.repeats))
        print(f"measured {weights} ({path.name})", file=sys.stderr, flush=True)
    load_after = os.getloadavg()

    print(
        f"\nmodel {resolved.name}, {threads} threads, prefill prompt {args.prompt} tokens, no adapter; "
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}\n"
    )
    head = ["weights", "file MB", "prefill tok/s", "decode ms (tok/s)"] + [f"{n} tokens ms (x one)" for n in BATCHES]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for weights, (path, r) in rows.items():
        one = r["step"][1]
        kind = path.name.split(".")[-2]  # the type in the file name: Q4_1, q8_0, ...
        label = weights if kind == weights else f"{weights} ({kind})"
        cells = [label, f"{path.stat().st_size / 1e6:.0f}", f"{r['prefill']:.0f}"]
        cells.append(f"{one * 1000:.1f} ({1 / one:.0f})")
        cells += [f"{r['step'][n] * 1000:.1f} ({r['step'][n] / one:.1f}x)" for n in BATCHES]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
