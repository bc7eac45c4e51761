"""Preference tuning: TRL's DPOTrainer + PEFT LoRA on a dataset version's preference pairs.

A pair's version line is an example line with a "rejected" reply (tuning/versions.py): its
messages are the exact prompt (system prompt and passages rendered in, as for SFT) and the
chosen reply. It becomes TRL's conversational preference form: `prompt = messages[:-1]`,
`chosen = [messages[-1]]`, `rejected = [{"role": "assistant", "content": rejected}]`.

Why DPO, and not KTO or ORPO: Tailor's pairs are real pairs (an edit against its original,
a 👍 reply against a 👎 one to the same prompt), which is what DPO needs and uses best. KTO
learns from single ratings, but a handful of unpaired 👍/👎 replies, most of them on
different prompts, is a weak and noisy signal for a small model, and ORPO replaces the SFT
step we already have. Single 👍 replies are better used as SFT examples; single 👎 replies
wait for a counterpart.

Where it starts: on the base (a fresh LoRA, the reference is the base with the adapter
off), or on a published SFT adapter (`start_adapter`): its weights are trained further and a
frozen copy of them is the reference (TRL adds it as the "ref" adapter), so DPO moves the
tuned voice, not the base. Either way the result is one LoRA adapter on the base model,
published and converted like any other.

The loss is DPO's plus, by default, the chosen reply's SFT loss (`sft_weight`, RPO): after plain
DPO on the demo's pairs every reply looped on the sign-off (README "Preference tuning").

Validation: on the version's validation pairs, TRL's DPO loss (early stopping watches it),
the reward accuracy (how often the chosen reply's implicit reward beats the rejected one's)
and the reward margin.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from assistant.errors import ValidationError

from .config import ResolvedHardware, TrainConfig
from .trainer import (
    SPLIT_FILES,
    Plan,
    is_pair,
    load_base_model,
    lora_config,
    plan,
    to_prompt_completion,
    trainer_arguments,
    version_records,
)


def to_preference_row(record: dict, where: str = "") -> dict:
    """A pair's version line as TRL's conversational prompt/chosen/rejected row."""
    row = to_prompt_completion(record, where)
    rejected = record.get("rejected")
    if not isinstance(rejected, str) or not rejected.strip():
        raise ValidationError(f"{where}: a preference pair needs a non-empty 'rejected' reply")
    return {
        "prompt": row["prompt"],
        "chosen": row["completion"],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def read_pairs(path: Path) -> list[dict]:
    """The preference pairs of a dataset version file (lines with a "rejected" reply)."""
    return [to_preference_row(r, where) for where, r in version_records(Path(path)) if is_pair(r)]


def pair_rows(version_dir: Path, split: str) -> list[dict]:
    path = Path(version_dir) / SPLIT_FILES[split]
    if not path.is_file():
        if split == "train":
            raise ValidationError(f"dataset version folder {version_dir} has no {path.name}")
        return []
    return read_pairs(path)


def dpo_config(config: TrainConfig, hw: ResolvedHardware, the_plan: Plan, output_dir: Path):
    from trl import DPOConfig

    return DPOConfig(
        **trainer_arguments(config, hw, the_plan, output_dir),
        beta=config.beta,
        # the DPO paper's loss, plus (RPO) the chosen reply's SFT loss, which keeps the chosen
        # replies likely while the pair's margin grows
        loss_type=["sigmoid", "sft"] if config.sft_weight > 0 else ["sigmoid"],
        loss_weights=[1.0, config.sft_weight] if config.sft_weight > 0 else None,
        # The reference's log-probabilities once, before training: the reference never
        # changes, and recomputing it every epoch is a third of a step's compute.
        precompute_ref_log_probs=True,
    )


def load_start_adapter(model, adapter_dir: Path):
    """The base model with a published adapter's weights, trainable (DPO continues from them)."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ValidationError(f"the adapter to start from is missing its files at {adapter_dir}")
    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)


def build_dpo_trainer(
    config: TrainConfig,
    hw: ResolvedHardware,
    base_model_path: Path,
    version_dir: Path,
    output_dir: Path,
    callbacks: Sequence = (),
    start_adapter_dir: Path | None = None,
    model=None,
    tokenizer=None,
):
    """Return (trainer, plan) for a DPO run on the version's preference pairs, on a new LoRA
    or continuing `start_adapter_dir`'s. `model`/`tokenizer` may be passed in (tests)."""
    from datasets import Dataset
    from transformers import EarlyStoppingCallback
    from trl import DPOTrainer

    train_rows = pair_rows(version_dir, "train")
    if not train_rows:
        raise ValidationError(
            "the dataset version has no preference pairs in its train split: edit replies in the chat, rate two "
            "replies to one prompt 👍 and 👎, or import pairs (prompt/chosen/rejected) first"
        )
    eval_rows = pair_rows(version_dir, "validation")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    the_plan = plan(config, len(train_rows), len(eval_rows), world)
    if model is None or tokenizer is None:
        model, tokenizer = load_base_model(base_model_path, hw)
    peft_config = None
    if start_adapter_dir is not None:
        model = load_start_adapter(model, start_adapter_dir)
    else:
        peft_config = lora_config(config)
    callbacks = list(callbacks)
    if the_plan.eval_steps is not None and config.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(config.early_stopping_patience, config.early_stopping_threshold))
    trainer = DPOTrainer(
        model=model,
        args=dpo_config(config, hw, the_plan, output_dir),
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    return trainer, the_plan


def reward_metrics(log_history: list[dict], step: int | None) -> dict:
    """The validation reward accuracy and margin at `step` (the published checkpoint's), or at
    the last evaluation when `step` is None; {} without evaluations."""
    evals = [h for h in log_history if "eval_rewards/accuracies" in h]
    if not evals:
        return {}
    at = next((h for h in evals if h.get("step") == step), evals[-1])
    return {
        "reward_accuracy": at.get("eval_rewards/accuracies"),
        "reward_margin": at.get("eval_rewards/margins"),
        "reward_chosen": at.get("eval_rewards/chosen"),
        "reward_rejected": at.get("eval_rewards/rejected"),
    }
