"""Full fine-tuning: every weight of a copy of the base model is trained (TRL SFT without a
LoRA), and the result is published as a whole checkpoint (safetensors) in the adapter
registry's folder, which the chat loads as a second model (assistant.adapters: kind "full").

Why it is offered beside LoRA: on a small model (the default 135M) it is affordable on a CPU
and may learn a voice with fewer steps; why it is not the default: it needs ~4x the base
model's memory to train, and each result is the size of the whole model (540 MB in fp32 for
the default, against ~19 MB for an adapter).

The memory check runs before anything heavy (when the job is queued, and in the worker before
the model loads), from the parameter count in the safetensors headers:

    weights + gradients           2 x params x bytes per weight (4 in fp32, 2 in bf16)
    AdamW's two moments           2 x params x bytes per weight (kept in the weights' dtype)
    logits and their gradient     ~3 x batch x max_length x vocabulary x 4 bytes (fp32 loss)
    activations                   ~ batch x max_length x hidden x layers x 34 bytes (fp32, no checkpointing;
                                  17 under bf16 autocast)
    the process itself            ~0.8 GB (Python, torch, tokenizer, datasets)"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from assistant.errors import ValidationError
from assistant.hardware import available_memory, gigabytes
from assistant.models import count_parameters

from .config import ResolvedHardware, TrainConfig

PROCESS_OVERHEAD = 800e6  # bytes: Python, torch and the tokenizer before any weight
CHECKPOINT_KIND = "full"  # tailor.json "kind" of a published full checkpoint


@dataclass(frozen=True)
class MemoryNeed:
    parameters: int
    weights_bytes: float  # weights + gradients + optimizer state
    activations_bytes: float  # logits, activations, process
    available_bytes: int | None

    @property
    def total_bytes(self) -> float:
        return self.weights_bytes + self.activations_bytes

    @property
    def fits(self) -> bool:
        return self.available_bytes is None or self.total_bytes <= self.available_bytes

    def describe(self) -> str:
        free = f"{gigabytes(self.available_bytes)} free" if self.available_bytes is not None else "free memory unknown"
        return (
            f"full fine-tuning of {self.parameters / 1e6:.0f}M parameters needs about {gigabytes(self.total_bytes)} "
            f"({gigabytes(self.weights_bytes)} for weights, gradients and optimizer state, "
            f"{gigabytes(self.activations_bytes)} for activations); {free}"
        )


def _model_shape(base_model_path: Path) -> tuple[int, int, int]:
    """(vocabulary, hidden size, layers) from config.json (0s where it does not say)."""
    try:
        cfg = json.loads((Path(base_model_path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0, 0, 0
    cfg = cfg.get("text_config", cfg)
    return int(cfg.get("vocab_size") or 0), int(cfg.get("hidden_size") or 0), int(cfg.get("num_hidden_layers") or 0)


def memory_need(config: TrainConfig, hw: ResolvedHardware, base_model_path: Path) -> MemoryNeed:
    params = count_parameters(Path(base_model_path))
    if params == 0:
        raise ValidationError(f"the base model at {base_model_path} has no safetensors weights to fine-tune")
    per_weight = 2 if hw.weights_dtype in ("bfloat16", "float16") else 4
    weights = params * per_weight * 4  # weights, gradients, AdamW's exp_avg and exp_avg_sq
    vocab, hidden, layers = _model_shape(base_model_path)
    tokens = config.batch_size * config.max_length
    # bytes of activations per token, hidden unit and layer: ~34 in fp32 compute, half under
    # bf16/fp16 autocast, a few with gradient checkpointing (only each layer's input is kept)
    activation_factor = 4 if hw.gradient_checkpointing else 17 if hw.dtype in ("bfloat16", "float16") else 34
    activations = 3 * tokens * vocab * 4 + tokens * hidden * layers * activation_factor + PROCESS_OVERHEAD
    return MemoryNeed(params, float(weights), float(activations), available_memory(hw.device))


def check_memory(config: TrainConfig, hw: ResolvedHardware, base_model_path: Path) -> MemoryNeed:
    """The memory a full fine-tune needs; a clear ValidationError when it does not fit."""
    need = memory_need(config, hw, base_model_path)
    if not need.fits:
        raise ValidationError(
            f"Not enough memory: {need.describe()}. Train a LoRA adapter instead (the default: a "
            "fraction of this), lower batch_size or max_length, or use a machine with more memory or a GPU."
        )
    return need


def save_checkpoint(model, tokenizer, folder: Path) -> None:
    """The trained model as a loadable folder: config, safetensors weights, tokenizer with its
    chat template, generation config. The registry adds tailor.json (kind "full")."""
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    if not any(Path(folder).glob("*.safetensors")):
        raise ValidationError(f"the full checkpoint in {folder} has no safetensors weights")
