"""Training throughput: Tailor's configuration against TRL's defaults, and against the machine.

    .venv/bin/python benchmarks/train.py [--steps 6] [--baseline-steps 3] [--threads N] [--examples 64]
    .venv/bin/python benchmarks/train.py --quality DATASET_VERSION_DIR ADAPTER_DIR

The second form compares base and tuned replies on a dataset version's held-out test split
(greedy, 80 new tokens): the share that open with "Ahoy, rider!", the share with the demo's
sign-off, and the mean embedding cosine (all-MiniLM-L6-v2) between reply and reference.

In one run, on the same model (the embedded SmolLM2-135M-Instruct unless --model) and the
same data (the Lantern Bay demo pairs), with the same LoRA adapter config:

1. the machine's fp32 matmul peak: a 2048x2048 @ 2048x2048 torch.matmul, best of several;
2. Tailor: `tuning.trainer.build_trainer` with the default TrainConfig (fp32 on a CPU, no
   gradient checkpointing, group-by-length batches, completion-only loss);
3. TRL's `SFTTrainer` with a default `SFTConfig` plus only `use_cpu=True` (without it TRL
   refuses to start on a CPU). Bounding the run also needs `max_steps`, and `output_dir` /
   `report_to="none"` / `save_strategy="no"` keep it from writing files; nothing else is set,
   so it trains in TRL's defaults: bf16 autocast, gradient checkpointing, batch 8, max_length
   1024.

Tailor's dtype comes from the hardware: fp32 on a CPU without bf16 matrix instructions,
bf16 autocast (fp32 weights) on one that has them (AVX512-BF16 / AMX), so the share of the
*fp32* peak can be high on such a CPU.

Tokens/s counts the tokens the model processed (TRL's `num_tokens`: non-padding tokens) over
the optimizer steps after the first (warm-up), excluding evaluation and saving. The share of
peak assumes ~4 x N FLOPs per token for LoRA training (forward 2N, backward through the
activations 2N; the frozen weights get no weight gradients), N = the parameters in matmuls
(the blocks plus the tied LM head); attention's own sequence-length term is small at ~100
tokens and left out, so the share is a slight underestimate.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

PAIRS = Path(__file__).resolve().parents[1] / "demo" / "lantern_bay" / "pairs.jsonl"


def matmul_peak(threads: int, n: int = 2048, reps: int = 5) -> float:
    """Best fp32 GFLOP/s of a big square matmul with `threads` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)  # warm-up
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def write_version(folder: Path, n: int) -> Path:
    pairs = [json.loads(line) for line in PAIRS.read_text(encoding="utf-8").splitlines() if line.strip()][:n]
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train.jsonl", "w", encoding="utf-8") as fh:
        for i, p in enumerate(pairs, 1):
            fh.write(
                json.dumps(
                    {
                        "example_id": i,
                        "label": None,
                        "tags": [],
                        "messages": [
                            {"role": "user", "content": p["prompt"]},
                            {"role": "assistant", "content": p["completion"]},
                        ],
                    }
                )
                + "\n"
            )
    (folder / "validation.jsonl").write_text("")
    return folder


class StepTimer:
    """Times optimizer steps (callback) and reads the token counter after each."""

    def __init__(self, trainer):
        from transformers import TrainerCallback

        self.times: list[float] = []
        self.tokens: list[int] = []
        timer = self

        class CB(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                timer._t = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                timer.times.append(time.perf_counter() - timer._t)
                timer.tokens.append(int(trainer._total_train_tokens))

        trainer.add_callback(CB())

    def tokens_per_s(self) -> tuple[float, int]:
        """Throughput over steps 2..n (step 1 pays one-off costs)."""
        if len(self.times) < 2:
            return self.tokens[-1] / self.times[-1], self.tokens[-1]
        toks = self.tokens[-1] - self.tokens[0]
        return toks / sum(self.times[1:]), toks


def count_matmul_params(model) -> int:
    embed = model.get_input_embeddings().weight.numel()
    total = sum(p.numel() for p in model.parameters())
    # the tied LM head is a matmul with the embedding matrix; the lookup itself is not
    return total if model.config.tie_word_embeddings else total - embed


def run_tailor(model_path: Path, version: Path, steps: int, threads: int, out: Path):
    from tuning.config import TrainConfig, resolve_hardware
    from tuning.trainer import build_trainer

    config = TrainConfig(max_steps=steps, threads=threads, device="cpu")
    hw = resolve_hardware(config)
    trainer, _ = build_trainer(config, hw, model_path, version, out / "tailor")
    trainer.args.report_to = []
    trainer.args.save_strategy = "no"
    timer = StepTimer(trainer)
    trainer.train()
    return timer.tokens_per_s(), config.batch_size, hw


def run_trl_default(model_path: Path, version: Path, steps: int, out: Path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from tuning.config import TrainConfig
    from tuning.trainer import lora_config, read_split

    args = SFTConfig(use_cpu=True, max_steps=steps, output_dir=str(out / "trl"), report_to="none", save_strategy="no")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(read_split(version, "train")),
        processing_class=tokenizer,
        peft_config=lora_config(TrainConfig()),
    )
    timer = StepTimer(trainer)
    trainer.train()
    return timer.tokens_per_s(), args


def quality(version_dir: Path, adapter_dir: Path, models_dir: Path, threads: int) -> int:
    from assistant.embeddings import get_embedder
    from assistant.engine import GenerationOptions
    from assistant.hardware import pick_hardware
    from assistant.models import resolve_model
    from assistant.torch_engine import TorchEngine

    torch.set_num_threads(threads)
    tests = [json.loads(line) for line in (version_dir / "test.jsonl").read_text().splitlines() if line.strip()]
    engine = TorchEngine.load(resolve_model(None, models_dir), pick_hardware("cpu"))
    engine.load_adapter("tuned", adapter_dir)
    embedder = get_embedder()
    refs = embedder.encode([t["messages"][-1]["content"] for t in tests])
    options = GenerationOptions(temperature=0, max_new_tokens=80)
    print(f"{len(tests)} held-out prompts from {version_dir}")
    print(f"{'model':<8} {'starts Ahoy, rider!':>20} {'has sign-off':>13} {'cosine to reference':>20}")
    for arm in ("base", "tuned"):
        replies = [
            engine.generate(t["messages"][:-1], options, adapter=None if arm == "base" else "tuned").text for t in tests
        ]
        cosine = float((embedder.encode(replies) * refs).sum(1).mean())
        ahoy = sum(r.startswith("Ahoy, rider!") for r in replies)
        sign = sum("Fair winds and smooth roads" in r for r in replies)
        print(f"{arm:<8} {ahoy:>12}/{len(tests):<7} {sign:>6}/{len(tests):<6} {cosine:>20.3f}", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps for Tailor's configuration")
    parser.add_argument(
        "--baseline-steps", type=int, default=3, help="optimizer steps for TRL's defaults (each is slow on a CPU)"
    )
    parser.add_argument("--examples", type=int, default=64, help="demo pairs used")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--model", default=None, help="model id or folder (default: the embedded model)")
    parser.add_argument(
        "--quality",
        nargs=2,
        metavar=("VERSION_DIR", "ADAPTER_DIR"),
        help="compare base and tuned replies on the version's test split instead",
    )
    args = parser.parse_args()

    from assistant.models import resolve_model
    from assistant.workspace import Workspace
    from tuning.config import default_threads

    threads = args.threads or default_threads(serving=False)
    torch.set_num_threads(threads)
    if args.quality:
        models_dir = Path(
            os.environ.get("TAILOR_TEST_MODEL_CACHE")
            or Workspace(os.environ.get("TAILOR_HOME", "workspace")).models_dir
        )
        return quality(Path(args.quality[0]), Path(args.quality[1]), models_dir, threads)
    with tempfile.TemporaryDirectory(prefix="tailor-bench-train-") as tmp:
        tmp = Path(tmp)
        models_dir = Path(
            os.environ.get("TAILOR_TEST_MODEL_CACHE")
            or Workspace(os.environ.get("TAILOR_HOME", "workspace")).models_dir
        )
        resolved = resolve_model(args.model, models_dir, progress=lambda m: print(m, file=sys.stderr))
        version = write_version(tmp / "version", args.examples)
        from transformers import AutoConfig, AutoModelForCausalLM

        with torch.device("meta"):
            meta_model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(resolved.path))
        n_params = count_matmul_params(meta_model)
        peak = matmul_peak(threads)
        print(
            f"model {resolved.name} ({n_params / 1e6:.0f}M params in matmuls), {args.examples} demo pairs, "
            f"{threads} threads, fp32 matmul peak {peak:.0f} GFLOP/s",
            flush=True,
        )

        (tailor_tps, tailor_tokens), batch, hw = run_tailor(resolved.path, version, args.steps, threads, tmp)
        print(f"  Tailor: {tailor_tps:.1f} tokens/s", flush=True)
        (trl_tps, trl_tokens), trl_args = run_trl_default(resolved.path, version, args.baseline_steps, tmp)
        print(f"  TRL defaults: {trl_tps:.1f} tokens/s", flush=True)

    def share(tps):
        return 4 * n_params * tps / 1e9 / peak

    rows = [
        (
            f"Tailor ({'bf16 autocast' if hw.bf16 else hw.dtype}, grad ckpt={hw.gradient_checkpointing}, "
            f"grouped by length, batch {batch})",
            tailor_tps,
            tailor_tokens,
            1.0,
            share(tailor_tps),
        ),
        (
            f"TRL SFTConfig defaults + use_cpu (bf16={trl_args.bf16}, grad ckpt="
            f"{trl_args.gradient_checkpointing}, batch {trl_args.per_device_train_batch_size})",
            trl_tps,
            trl_tokens,
            trl_tps / tailor_tps,
            share(trl_tps),
        ),
    ]
    print()
    print(f"{'configuration':<72} {'tokens/s':>9} {'tokens':>7} {'vs Tailor':>9} {'of peak':>8}")
    for name, tps, toks, ratio, frac in rows:
        print(f"{name:<72} {tps:>9.1f} {toks:>7d} {ratio:>8.2f}x {frac:>7.1%}")
    print(
        f"\nTailor trains {tailor_tps / trl_tps:.1f}x faster than TRL's defaults and reaches "
        f"{share(tailor_tps):.0%} of this machine's measured fp32 matmul peak ({peak:.0f} GFLOP/s, "
        f"{threads} threads)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
