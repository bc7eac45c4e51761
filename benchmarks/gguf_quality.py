"""What running the default model through llama.cpp costs in quality, per GGUF weight type.

    python benchmarks/gguf_quality.py [--items 36] [--tokens 48] [--types q4_1,q8_0,f16,f32]

The reference is the torch backend in fp32 (the weights the embedded Q4_1 file de-quantizes to,
which is also what training uses). On the demo's tuning pairs (every 5th pair: a fixed sample
that no setting in Tailor was tuned on), for each weight type:

- reference loss: mean cross-entropy (nats/token) of the pair's reference answer under the
  model, from llama.cpp's logits, beside the same figure from torch fp32;
- greedy agreement: how often Tailor's llama.cpp engine gives exactly the torch engine's greedy
  reply (chat defaults: repetition penalty 1.05), and how many leading characters they share.

`q4_1` is the embedded file as shipped; the others are made from it once with llama.cpp's
quantizer (re-quantizing from the same values), into the benchmark's cache folder."""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.tables import model_cache


def common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=36)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--types", default="q4_1,q8_0,f16,f32")
    args = ap.parse_args()

    import llama_cpp
    import numpy as np

    from assistant.backends import load_engine
    from assistant.engine import GenerationOptions
    from assistant.hardware import pick_hardware
    from assistant.llamacpp_params import open_llama
    from assistant.models import ResolvedModel, resolve_model
    from assistant.torch_engine import TorchEngine
    from demo.loader import demo_dir

    cache = model_cache()
    resolved = resolve_model(None, cache, progress=lambda m: print(m, file=sys.stderr))
    assert resolved.gguf is not None
    pairs = [json.loads(line) for line in (demo_dir() / "pairs.jsonl").read_text().splitlines() if line.strip()]
    items = pairs[::5][: args.items]
    torch_engine = TorchEngine.load(resolved, pick_hardware("cpu"))
    options = GenerationOptions(temperature=0, max_new_tokens=args.tokens)
    messages = [[{"role": "user", "content": p["prompt"]}] for p in items]
    reference = [torch_engine.generate(m, options).text for m in messages]
    torch_loss = [torch_engine.score(m, p["completion"])[0] for m, p in zip(messages, items)]

    files = {"q4_1": resolved.gguf}
    ftypes = {
        "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
        "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
        "f16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16,
        "f32": llama_cpp.LLAMA_FTYPE_ALL_F32,
    }
    rows = []
    for kind in args.types.split(","):
        if kind not in files:
            dst = cache / f"{resolved.name}.{kind}.gguf"
            if not dst.is_file():
                params = llama_cpp.llama_model_quantize_default_params()
                params.ftype = ftypes[kind]
                params.allow_requantize = True
                rc = llama_cpp.llama_model_quantize(
                    str(resolved.gguf).encode(), str(dst).encode(), ctypes.byref(params)
                )
                if rc != 0:
                    raise SystemExit(f"quantizing to {kind} failed ({rc})")
            files[kind] = dst
        path = files[kind]
        raw = open_llama(model_path=str(path), n_ctx=1024, logits_all=True, n_threads=os.cpu_count(), verbose=False)
        losses = []
        for m, p in zip(messages, items):
            prompt = torch_engine.encode(m)
            full = torch_engine.encode(
                m + [{"role": "assistant", "content": p["completion"]}], add_generation_prompt=False
            )
            raw.reset()
            raw.eval(full)
            logits = np.asarray(raw.scores[: len(full)], dtype=np.float64)
            pred = logits[len(prompt) - 1 : len(full) - 1]
            target = np.asarray(full[len(prompt) :])
            logz = np.log(np.exp(pred - pred.max(axis=1, keepdims=True)).sum(axis=1)) + pred.max(axis=1)
            losses.append(float(np.mean(logz - pred[np.arange(len(target)), target])))
        del raw
        engine = load_engine(
            ResolvedModel(resolved.name, resolved.path, "embedded", path),
            pick_hardware("cpu"),
            backend="llamacpp",
            parallel=8,
        )
        replies = [r.text for r in engine.generate_many([(m, options, None) for m in messages])]
        engine.close()
        same = sum(a == b for a, b in zip(replies, reference))
        prefix = statistics.mean(common_prefix(a, b) / max(len(b), 1) for a, b in zip(replies, reference))
        rows.append((kind, path.stat().st_size / 1e6, statistics.mean(losses), same, prefix))
        print(f"measured {kind}", file=sys.stderr, flush=True)

    print(
        f"\n{resolved.name}: {len(items)} demo pairs (every 5th), greedy, up to {args.tokens} new tokens, "
        f"repetition penalty {options.repetition_penalty}; reference = torch fp32 "
        f"(reference loss {statistics.mean(torch_loss):.3f} nats/token)\n"
    )
    print("| weights | file MB | reference loss | Δ vs fp32 | identical greedy replies | shared reply prefix |")
    print("|---|---|---|---|---|---|")
    base = statistics.mean(torch_loss)
    for kind, mb, loss, same, prefix in rows:
        print(f"| {kind} | {mb:.0f} | {loss:.3f} | {loss - base:+.3f} | {same}/{len(items)} | {prefix:.0%} |")


if __name__ == "__main__":
    main()
