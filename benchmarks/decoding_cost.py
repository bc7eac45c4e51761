"""What the decoding options for answers read from sources cost per token, on both backends.

    .venv/bin/python benchmarks/decoding_cost.py [--model M] [--tokens 64] [--repeats 5] [--threads 1]

In one run, on the same retrieval prompt (demo sources, as `build_messages` shows them), greedy
with the chat's repetition penalty: decode ms/token for today's default (the penalty counts
the prompt), the penalty kept to the reply (`TAILOR_PENALIZE_SOURCES=off`), and a copy bias of
1 (`TAILOR_COPY_BIAS=1`, a logit-bias entry per distinct source token). The settings alternate
within each repeat so that load on the machine hits them alike; medians, ratios to the default,
and the load average before and after. The figure is decode time per generated token (time to
the first token left out), so replies of different lengths compare."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.tables import model_cache, table  # noqa: E402

SOURCES = [
    (
        "opening_hours.md",
        "Day: Thursday; Shop: 08:30–20:00; Workshop: 08:30–19:30. Every Thursday we stay open until 20:00.",
    ),
    ("rentals.md", "Bike: Tidewalker 8 city bike; Half day (up to 4 hours): €19; Full day: €31; 3 days: €79."),
    ("contact.md", "Channel: Workshop line; Details: (0491) 555 0177 (calls and text messages)."),
]
QUESTION = "What time do you close on a Thursday, and how much is a full day on a Tidewalker 8?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    load_before = os.getloadavg()[0]

    import torch

    torch.set_num_threads(args.threads)
    from assistant.backends import load_engine
    from assistant.engine import GenerationOptions
    from assistant.hardware import pick_hardware
    from assistant.models import resolve_model
    from assistant.prompting import Passage, build_messages
    from assistant.torch_engine import TorchEngine

    cache = model_cache()
    resolved = resolve_model(args.model, cache, progress=lambda m: print(m, file=sys.stderr))
    hardware = pick_hardware("cpu")
    engines = {
        "llamacpp": load_engine(resolved, hardware, backend="llamacpp", threads=args.threads, parallel=1),
        "torch": TorchEngine.load(resolved, hardware),
    }
    passages = [Passage(i + 1, src, text) for i, (src, text) in enumerate(SOURCES)]
    messages = build_messages([], QUESTION, "", passages)
    source_text = "\n".join(text for _, text in SOURCES)
    default = GenerationOptions(temperature=0, max_new_tokens=args.tokens, repetition_penalty=1.05)
    settings = {
        "default (penalty counts the prompt)": default,
        "penalty on the reply only": replace(default, penalize_prompt=False),
        "copy bias 1, penalty on the reply only": replace(
            default, penalize_prompt=False, copy_bias=1.0, copy_source=source_text
        ),
    }
    ms: dict[tuple[str, str], list[float]] = {(b, s): [] for b in engines for s in settings}
    for engine in engines.values():
        engine.generate(messages, default)  # warm-up: weights paged in, caches built
    for _ in range(args.repeats):
        for backend, engine in engines.items():
            for name, options in settings.items():
                res = engine.generate(messages, options)
                decode_s = res.latency_s - (res.ttft_s or 0.0)
                if res.completion_tokens > 1:
                    ms[(backend, name)].append(1000 * decode_s / (res.completion_tokens - 1))
    for engine in engines.values():
        engine.close()
    rows = []
    for backend in engines:
        base = statistics.median(ms[(backend, "default (penalty counts the prompt)")])
        for name in settings:
            m = statistics.median(ms[(backend, name)])
            rows.append([backend, name, f"{m:.2f}", f"{m / base:.3f}x"])
    table(
        f"Decode ms/token, greedy, up to {args.tokens} tokens, {args.repeats} repeats, {args.threads} thread(s); "
        f"load average {load_before:.2f} -> {os.getloadavg()[0]:.2f}",
        ["backend", "setting", "ms/token (median)", "vs default"],
        rows,
    )


if __name__ == "__main__":
    main()
