"""Chat latency on the default model: Tailor's streaming engine vs a plain `model.generate`.

    python benchmarks/chat.py [--model M] [--tokens 128] [--repeats 3] [--threads N]

Prints time to first token (TTFT) and decode tokens/s for both in the same run, and the
ratios. The baseline is the same model object called directly with `generate` (greedy, no
streamer, no thread), so the ratio isolates what Tailor's engine adds: chat templating,
history fitting, the background thread, the streaming decoder and the stop check."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from assistant.engine import ChatEngine, GenerationOptions
from assistant.hardware import pick_hardware, set_threads
from assistant.models import resolve_model

PROMPTS = [
    "Explain how to fix a flat bicycle tyre, step by step.",
    "Write a short story about a lighthouse keeper who loves cycling.",
    "What should I check before a long bike ride? Give a detailed list.",
]


def baseline(engine: ChatEngine, prompt: str, n: int) -> tuple[float, float]:
    """Plain generate: TTFT = a 1-token generate; decode rate from an n-token generate."""
    ids = torch.tensor([engine.encode([{"role": "user", "content": prompt}])])
    kw = dict(
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        pad_token_id=engine.tokenizer.pad_token_id,
        attention_mask=torch.ones_like(ids),
        min_new_tokens=n,
        max_new_tokens=n,
    )
    with torch.inference_mode():
        t0 = time.perf_counter()
        engine.model.generate(ids, **{**kw, "min_new_tokens": 1, "max_new_tokens": 1})
        ttft = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = engine.model.generate(ids, **kw)
        total = time.perf_counter() - t0
    produced = out.shape[1] - ids.shape[1]
    return ttft, (produced - 1) / max(total - ttft, 1e-9)


def tailor(engine: ChatEngine, prompt: str, n: int) -> tuple[float, float, int]:
    gen = engine.stream(
        [{"role": "user", "content": prompt}],
        GenerationOptions(temperature=0, max_new_tokens=n, repetition_penalty=1.0),
    )
    for _ in gen:
        pass
    r = gen.wait()
    return r.ttft_s or 0.0, r.decode_tokens_per_s, r.completion_tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model setting (default: embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    set_threads(args.threads)
    cache = Path(os.environ.get("TAILOR_HOME", tempfile.gettempdir() + "/tailor-bench")) / "models"
    resolved = resolve_model(args.model, cache, progress=lambda m: print(m, file=sys.stderr))
    engine = ChatEngine.load(resolved, pick_hardware(), max_context=2048)
    tailor(engine, "warm up", 8)
    baseline(engine, "warm up", 8)

    rows = {"baseline": ([], []), "tailor": ([], [])}
    lengths = []
    for _ in range(args.repeats):
        for prompt in PROMPTS:
            b_ttft, b_rate = baseline(engine, prompt, args.tokens)
            t_ttft, t_rate, produced = tailor(engine, prompt, args.tokens)
            rows["baseline"][0].append(b_ttft)
            rows["baseline"][1].append(b_rate)
            rows["tailor"][0].append(t_ttft)
            rows["tailor"][1].append(t_rate)
            lengths.append(produced)
    med = {k: (statistics.median(v[0]), statistics.median(v[1])) for k, v in rows.items()}
    print(
        f"\nmodel {resolved.name} on {engine.hardware.describe()}; {len(PROMPTS)} prompts x {args.repeats} repeats, "
        f"up to {args.tokens} new tokens (Tailor produced median {statistics.median(lengths):.0f}); medians:\n"
    )
    print(f"| {'':<26} | {'TTFT (ms)':>10} | {'decode tokens/s':>15} |")
    print(f"|{'-' * 28}|{'-' * 12}|{'-' * 17}|")
    print(f"| {'plain model.generate':<26} | {med['baseline'][0] * 1000:>10.0f} | {med['baseline'][1]:>15.1f} |")
    print(f"| {'Tailor engine (streaming)':<26} | {med['tailor'][0] * 1000:>10.0f} | {med['tailor'][1]:>15.1f} |")
    print(
        f"| {'ratio Tailor / plain':<26} | {med['tailor'][0] / med['baseline'][0]:>10.2f} | "
        f"{med['tailor'][1] / med['baseline'][1]:>15.2f} |"
    )


if __name__ == "__main__":
    main()
