"""Chat speed with a tuned adapter active: Tailor's two backends against their raw libraries.

    python benchmarks/chat.py [--model M] [--weights W] [--tokens 96] [--repeats 2] [--threads N] [--streams 1,4,8]

In one run, on the same prompts, the same weights and the same random LoRA adapter (r=16 on
all seven projections of the default model):

- `Tailor llamacpp`: Tailor's llama.cpp backend (batching scheduler, GGUF LoRA hot-swapped);
- `Tailor llamacpp, flash attention`: the same with TAILOR_FLASH_ATTENTION=on (faster on long
  cold prompts; the default is off so that replies depend far less on their batch, see
  benchmarks/batch_invariance.py);
- `Tailor torch`: Tailor's torch backend (transformers + PEFT, one request at a time);
- `plain generate`: transformers' `generate` on the same PEFT model, called directly;
- `raw llama-cpp-python`: `llama_cpp.Llama` on the same GGUF with the same GGUF LoRA.

For each: time to first token (TTFT) on short chat prompts, single-stream decode tokens/s, TTFT
of a ~500-token prompt with retrieved passages (prefill: six passages shown whole, as with
TAILOR_EVIDENCE_SENTENCES=0; evidence selection would cut them to ~200 tokens), and aggregate
tokens/s with 1, 4 and 8 concurrent streams (with the TTFT at each). `--weights` picks the GGUF
weights llama.cpp runs (TAILOR_GGUF_WEIGHTS: auto, embedded, f32, f16, q8_0); both llama.cpp rows
use the same file. The raw libraries and the torch backend answer one
request at a time, so their concurrent streams queue behind a lock, as a server built on them
would. Greedy decoding, no repetition penalty; medians. Ratios at the end, and the load average
before and after (other processes on the machine slow everything; compare within one run).

Every prompt is read cold: the llama.cpp backend's prompt cache is emptied before each call, as
the raw library is reset, so prefill costs compare. A last line measures the prefill prompt
again with the cache kept: what a reply whose prompt was just read (by its answer choice, say)
waits for its first token."""

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
from benchmarks.tables import model_cache

PROMPTS = [
    "Explain how to fix a flat bicycle tyre, step by step.",
    "Write a short story about a lighthouse keeper who loves cycling.",
    "What should I check before a long bike ride? Give a detailed list.",
    "Describe the parts of a bicycle drivetrain and what each one does.",
]
PASSAGE = (
    "Lantern Bay Bikes is open 9:00-18:00 Monday to Friday and 10:00-16:00 on Saturdays. A basic "
    "service costs 45 euros and includes gear and brake adjustment; a full service costs 95 euros. "
)


def bench_level(call, prompts: list, streams: int, n: int) -> tuple[float, float]:
    """`streams` requests at once; returns (aggregate tokens/s, median TTFT in s)."""
    results: list[tuple[float, int]] = [(0.0, 0)] * streams
    start = time.perf_counter()

    def one(i: int) -> None:
        results[i] = call(prompts[i % len(prompts)], n, start)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return sum(r[1] for r in results) / wall, statistics.median(r[0] for r in results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model setting (default: embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--weights", default="auto", help="GGUF weights for llama.cpp (TAILOR_GGUF_WEIGHTS)")
    ap.add_argument("--tokens", type=int, default=96, help="new tokens per reply (the end-of-turn token still ends it)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="threads for every backend (default: all cores)")
    ap.add_argument("--streams", default="1,4,8", help="concurrency levels")
    args = ap.parse_args()
    levels = [int(x) for x in args.streams.split(",")]
    threads = args.threads or os.cpu_count() or 1
    load_before = os.getloadavg()

    import torch

    torch.set_num_threads(threads)
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from assistant.backends import load_engine
    from assistant.engine import GenerationOptions
    from assistant.gguf_lora import ensure_lora_gguf
    from assistant.hardware import pick_hardware
    from assistant.llamacpp_params import open_llama
    from assistant.models import resolve_model
    from assistant.prompting import Passage, build_messages
    from assistant.torch_engine import TorchEngine

    cache = model_cache()
    resolved = resolve_model(args.model, cache, progress=lambda m: print(m, file=sys.stderr))
    adapter_dir = cache / f"bench-lora-{resolved.name.replace('/', '--')}"
    if not (adapter_dir / "adapter_model.safetensors").is_file():
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(resolved.path)
        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        config = LoraConfig(r=16, lora_alpha=32, target_modules=targets, init_lora_weights=False)
        peft_model = get_peft_model(base, config)
        for name, p in peft_model.named_parameters():  # small random deltas: a plausible tuned adapter
            if "lora_" in name:
                p.data.mul_(0.05)
        peft_model.save_pretrained(adapter_dir)
    lora_gguf = ensure_lora_gguf(adapter_dir, Path(resolved.path))

    hardware = pick_hardware("cpu")

    def llamacpp_engine(flash_attention: bool):
        engine = load_engine(
            resolved,
            hardware,
            backend="llamacpp",
            threads=threads,
            parallel=max(levels),
            weights=args.weights,
            models_dir=cache,
            flash_attention=flash_attention,
        )
        engine.load_adapter("bench", adapter_dir)
        return engine

    llama_engine, flash_engine = llamacpp_engine(False), llamacpp_engine(True)
    torch_engine = TorchEngine.load(resolved, hardware)
    torch_engine.load_adapter("bench", adapter_dir)
    gguf = llama_engine.gguf  # type: ignore[attr-defined]  # a LlamaCppEngine
    raw = open_llama(
        model_path=str(gguf), lora_path=str(lora_gguf), n_ctx=2048, n_threads=threads, n_batch=512, verbose=False
    )
    # Every backend gets the same prompts: chat messages for Tailor's engines, the same
    # messages' token ids (Tailor's chat template) for the raw libraries.
    passages = [Passage(id=i, text=PASSAGE, source=f"doc{i}.md", score=0.9) for i in range(6)]
    prompts = [[{"role": "user", "content": p}] for p in PROMPTS]
    evidence = os.environ.get("TAILOR_EVIDENCE_SENTENCES")
    os.environ["TAILOR_EVIDENCE_SENTENCES"] = "0"  # passages whole: the ~500-token prompt of the target
    long_prompt = build_messages([], "When does the shop open on Saturdays?", "", passages)
    if evidence is None:
        del os.environ["TAILOR_EVIDENCE_SENTENCES"]
    else:
        os.environ["TAILOR_EVIDENCE_SENTENCES"] = evidence
    ids_of = {id(m): torch_engine.encode(m) for m in prompts + [long_prompt]}
    one_at_a_time = threading.Lock()
    eos = {torch_engine.tokenizer.eos_token_id}
    peft_model = torch_engine.model

    def tailor_call(engine, cold=True):
        def call(messages, n, start):
            if cold and hasattr(engine, "forget_prompts"):
                engine.forget_prompts()  # the streams no request is using
            options = GenerationOptions(temperature=0, max_new_tokens=n, repetition_penalty=1.0)
            res = engine.generate(messages, options, adapter="bench")
            # TTFT as the client sees it: waiting for a batch slot or the lock counts
            ended = time.perf_counter()
            return ended - res.latency_s + (res.ttft_s or 0.0) - start, res.completion_tokens

        return call

    def plain_call(messages, n, start):
        ids = ids_of[id(messages)]
        with one_at_a_time:
            peft_model.set_adapter("bench")
            x = torch.tensor([ids])
            seen: list[float] = []

            class Timer:  # a streamer that notes when the first new token arrives
                def put(self, value):
                    seen.append(time.perf_counter())

                def end(self):
                    pass

            with torch.inference_mode():
                out = peft_model.generate(
                    input_ids=x,
                    attention_mask=torch.ones_like(x),
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    max_new_tokens=n,
                    streamer=Timer(),
                    pad_token_id=torch_engine.tokenizer.pad_token_id,
                )
            return seen[1] - start, out.shape[1] - x.shape[1]  # seen[0] is the prompt

    def raw_call(messages, n, start):
        ids = ids_of[id(messages)]
        with one_at_a_time:
            raw.reset()
            count, first = 0, None
            for token in raw.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
                if first is None:
                    first = time.perf_counter()
                count += 1
                if token in eos or count >= n:
                    break
            return (first or time.perf_counter()) - start, count

    backends = [
        ("Tailor llamacpp", tailor_call(llama_engine)),
        ("Tailor llamacpp, flash attention", tailor_call(flash_engine)),
        ("Tailor torch", tailor_call(torch_engine)),
        ("plain generate", plain_call),
        ("raw llama-cpp-python", raw_call),
    ]
    for _, call in backends:  # warm up: first calls allocate buffers
        call(prompts[0], 4, time.perf_counter())

    rows = {}
    for name, call in backends:
        ttfts, rates, prefill = [], [], []
        for _ in range(args.repeats):
            for messages in prompts:
                t0 = time.perf_counter()
                ttft, produced = call(messages, args.tokens, t0)
                total = time.perf_counter() - t0
                ttfts.append(ttft)
                rates.append((produced - 1) / max(total - ttft, 1e-9))
            t0 = time.perf_counter()
            prefill.append(call(long_prompt, 1, t0)[0])
        agg = {s: bench_level(call, prompts, s, args.tokens) for s in levels}
        rows[name] = dict(
            ttft=statistics.median(ttfts), rate=statistics.median(rates), prefill=statistics.median(prefill), agg=agg
        )
        print(f"measured {name}", file=sys.stderr, flush=True)
    load_after = os.getloadavg()

    print(
        f"\nmodel {resolved.name}, GGUF {gguf.name} (--weights {args.weights}), adapter r=16 on 7 projections, "
        f"{threads} threads, "
        f"{args.tokens} new tokens, {len(PROMPTS)} prompts x {args.repeats} repeats, "
        f"prefill prompt {len(ids_of[id(long_prompt)])} tokens; "
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; OpenMP: "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
        f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', '(unset)')}; Tailor's llama.cpp engine: "
        f"{llama_engine.describe()}\n"
    )
    head = ["backend", "TTFT ms", "decode tok/s", "prefill TTFT ms"] + [f"{s} streams tok/s (TTFT ms)" for s in levels]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for name, r in rows.items():
        cells = [name, f"{r['ttft'] * 1000:.0f}", f"{r['rate']:.1f}", f"{r['prefill'] * 1000:.0f}"]
        cells += [f"{r['agg'][s][0]:.1f} ({r['agg'][s][1] * 1000:.0f})" for s in levels]
        print("| " + " | ".join(cells) + " |")
    ll, tt, raw_row = rows["Tailor llamacpp"], rows["Tailor torch"], rows["raw llama-cpp-python"]
    top = max(levels)
    print("\nratios (targets in brackets):")
    print(f"- decode, Tailor llamacpp / raw llama-cpp-python: {ll['rate'] / raw_row['rate']:.2f} [>= 0.9]")
    print(f"- decode, Tailor llamacpp / Tailor torch: {ll['rate'] / tt['rate']:.2f} [>= 4]")
    print(f"- aggregate, Tailor llamacpp {top} streams / 1 stream: {ll['agg'][top][0] / ll['agg'][1][0]:.2f} [>= 3]")
    print(f"- TTFT, Tailor llamacpp {top} streams / 1 stream: {ll['agg'][top][1] / ll['agg'][1][1]:.2f} [<= 2]")
    print(f"- prefill TTFT, Tailor llamacpp / Tailor torch: {ll['prefill'] / tt['prefill']:.2f} [<= 1]")
    fa = rows["Tailor llamacpp, flash attention"]
    print(
        f"- with flash attention: prefill TTFT / Tailor torch {fa['prefill'] / tt['prefill']:.2f}, "
        f"decode / raw {fa['rate'] / raw_row['rate']:.2f}, {top} streams / 1 stream "
        f"{fa['agg'][top][0] / fa['agg'][1][0]:.2f}, "
        f"TTFT {top} streams / 1 stream {fa['agg'][top][1] / fa['agg'][1][1]:.2f}"
    )
    warm = tailor_call(llama_engine, cold=False)
    warm(long_prompt, 1, time.perf_counter())
    cached = statistics.median(warm(long_prompt, 1, time.perf_counter())[0] for _ in range(max(3, args.repeats)))
    print(
        f"- prefill TTFT with the prompt in llama.cpp's cache: {cached * 1000:.0f} ms "
        f"({cached / ll['prefill']:.2f}x the cold {ll['prefill'] * 1000:.0f} ms)"
    )
    llama_engine.close()
    flash_engine.close()


if __name__ == "__main__":
    main()
