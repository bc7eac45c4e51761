"""TRL SFTTrainer + PEFT LoRA from a TrainConfig and a dataset version folder.

A dataset version line is `{"example_id", "messages": [...], "label", "tags"}` whose last
message is the assistant's answer and whose earlier messages are the exact prompt (system
prompt and retrieved passages already rendered in). It becomes TRL's conversational
prompt-completion form, `prompt = messages[:-1]`, `completion = [messages[-1]]`, so the
loss is on the answer only (`completion_only_loss`). SmolLM2's chat template has no
`{% generation %}` markers, which is what TRL's `assistant_only_loss` would need.

This module and tuning/preference.py (DPO) are the only ones, with the worker and the
benchmark, that import trl."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.errors import ValidationError

from .config import ResolvedHardware, TrainConfig

SPLIT_FILES = {"train": "train.jsonl", "validation": "validation.jsonl"}


def to_prompt_completion(record: dict, where: str = "") -> dict:
    messages = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(messages, list) or len(messages) < 2:
        raise ValidationError(f"{where}: a dataset line needs 'messages' with a prompt and an answer")
    for m in messages:
        if (
            not isinstance(m, dict)
            or m.get("role") not in ("system", "user", "assistant")
            or not isinstance(m.get("content"), str)
        ):
            raise ValidationError(f"{where}: every message needs a role (system/user/assistant) and text content")
    if messages[-1]["role"] != "assistant":
        raise ValidationError(f"{where}: the last message must be the assistant's answer")
    if not messages[-1]["content"].strip():
        raise ValidationError(f"{where}: the assistant's answer is empty")
    return {
        "prompt": [{"role": m["role"], "content": m["content"]} for m in messages[:-1]],
        "completion": [{"role": "assistant", "content": messages[-1]["content"]}],
    }


def read_split(version_dir: Path, split: str) -> list[dict]:
    path = Path(version_dir) / SPLIT_FILES[split]
    if not path.is_file():
        if split == "train":
            raise ValidationError(f"dataset version folder {version_dir} has no {path.name}")
        return []
    return read_lines(path)


def version_records(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, record) for each line of a dataset version file; a line that is not JSON is an error."""
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield f"{path.name} line {n}", json.loads(line)
            except ValueError as exc:
                raise ValidationError(f"{path.name} line {n} is not JSON: {exc}") from exc


def is_pair(record) -> bool:
    """A preference pair's line (it has a "rejected" reply): DPO's, not SFT's."""
    return isinstance(record, dict) and "rejected" in record


def read_lines(path: Path) -> list[dict]:
    """A file of dataset version lines as prompt-completion rows (preference pairs, the
    lines with a "rejected" reply, are DPO's: tuning/preference.py)."""
    return [to_prompt_completion(r, where) for where, r in version_records(Path(path)) if not is_pair(r)]


def training_rows(version_dir: Path, extra_train: Sequence[Path] = ()) -> list[dict]:
    """The rows a run trains on: the version's train split, then the lines of each of
    `extra_train` (the job's grounding examples: this run's training data only)."""
    rows = read_split(version_dir, "train")
    for path in extra_train:
        rows += read_lines(Path(path))
    return rows


@dataclass
class Plan:
    """How long a run is, in optimizer steps, known before the model is loaded."""

    train_examples: int
    validation_examples: int
    steps_per_epoch: int
    total_steps: int
    eval_steps: int | None  # None: no validation split, so no evaluation / early stopping


def plan(config: TrainConfig, train_examples: int, validation_examples: int, world_size: int = 1) -> Plan:
    if train_examples < 1:
        raise ValidationError("the dataset version has no training examples")
    per_step = config.batch_size * config.gradient_accumulation_steps * world_size
    steps_per_epoch = max(1, math.ceil(train_examples / per_step))
    total = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    eval_steps = None
    if validation_examples > 0:
        # ~5 evaluations per run: enough points for a curve and for early stopping, few
        # enough that evaluation (a forward pass over the validation split) stays a small cost.
        eval_steps = config.eval_steps or max(1, round(total / 5))
        eval_steps = min(eval_steps, total)
    return Plan(train_examples, validation_examples, steps_per_epoch, total, eval_steps)


def lora_config(config: TrainConfig):
    from peft import LoraConfig

    targets = config.target_modules
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules="all-linear" if list(targets) == ["all-linear"] else list(targets),
        bias="none",
        task_type="CAUSAL_LM",
    )


def trainer_arguments(config: TrainConfig, hw: ResolvedHardware, the_plan: Plan, output_dir: Path) -> dict:
    """The TrainingArguments both trainers share (SFT here, DPO in tuning/preference.py):
    hardware, optimisation, evaluation with early stopping, checkpoints, logging."""
    evaluate = the_plan.eval_steps is not None
    # Checkpoints go with evaluations (load_best_model_at_end needs them aligned); without a
    # validation split, save every ~1/5 of the run so a resume loses little.
    save_steps = the_plan.eval_steps or max(1, round(the_plan.total_steps / 5))
    return dict(
        output_dir=str(output_dir),
        # hardware: never TRL's default bf16 on a CPU (no bf16 kernels: 10-300x slower matmuls)
        use_cpu=hw.device == "cpu",
        bf16=hw.bf16,
        fp16=hw.fp16,
        gradient_checkpointing=hw.gradient_checkpointing,
        max_length=config.max_length,
        dataloader_num_workers=0,
        dataset_num_proc=None,
        # optimisation
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=the_plan.total_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=max(config.batch_size, 8),
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        warmup_steps=config.warmup_ratio,
        lr_scheduler_type=config.lr_scheduler,
        weight_decay=config.weight_decay,
        seed=config.seed,
        data_seed=config.seed,
        # evaluation, early stopping, checkpoints
        eval_strategy="steps" if evaluate else "no",
        eval_steps=the_plan.eval_steps,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=config.save_total_limit,
        load_best_model_at_end=evaluate,
        metric_for_best_model="eval_loss" if evaluate else None,
        greater_is_better=False if evaluate else None,
        save_only_model=False,  # keep optimizer + scheduler state: resume continues exactly
        # logging
        logging_steps=config.logging_steps,
        logging_first_step=True,
        report_to=["tensorboard"],
        disable_tqdm=True,
    )


def sft_config(config: TrainConfig, hw: ResolvedHardware, the_plan: Plan, output_dir: Path):
    from trl import SFTConfig

    return SFTConfig(
        **trainer_arguments(config, hw, the_plan, output_dir),
        completion_only_loss=True,
        packing=False,
        padding_free=False,  # needs FlashAttention; group by length instead
        train_sampling_strategy="group_by_length",
    )


def load_base_model(base_model_path: Path, hw: ResolvedHardware):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model_path)
    if tokenizer.chat_template is None:
        raise ValidationError(f"the base model at {base_model_path} has no chat template; use an instruct model")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base_model_path, dtype=getattr(torch, hw.weights_dtype))
    return model, tokenizer


def build_trainer(
    config: TrainConfig,
    hw: ResolvedHardware,
    base_model_path: Path,
    version_dir: Path,
    output_dir: Path,
    callbacks=(),
    model=None,
    tokenizer=None,
    extra_train: Sequence[Path] = (),
):
    """Return (trainer, plan). `model`/`tokenizer` may be passed in (tests, benchmark) to skip loading.
    `extra_train`: files of more training lines for this run only (the job's grounding examples)."""
    from datasets import Dataset
    from transformers import EarlyStoppingCallback
    from trl import SFTTrainer

    train_rows = training_rows(version_dir, extra_train)
    eval_rows = read_split(version_dir, "validation")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    the_plan = plan(config, len(train_rows), len(eval_rows), world)
    if model is None or tokenizer is None:
        if config.finetune == "full":
            from .full_model import check_memory

            check_memory(config, hw, base_model_path)  # before gigabytes are committed
        model, tokenizer = load_base_model(base_model_path, hw)
    args = sft_config(config, hw, the_plan, output_dir)
    callbacks = list(callbacks)
    if the_plan.eval_steps is not None and config.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(config.early_stopping_patience, config.early_stopping_threshold))
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        # full fine-tuning (tuning/full_model.py) trains the model itself: no adapter
        peft_config=lora_config(config) if config.finetune == "lora" else None,
        callbacks=callbacks,
    )
    return trainer, the_plan


def last_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete `checkpoint-N` folder (Trainer's own naming)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    best = None
    for folder in output_dir.glob("checkpoint-*"):
        try:
            step = int(folder.name.split("-", 1)[1])
        except ValueError:
            continue
        if (folder / "trainer_state.json").is_file() and (best is None or step > best[0]):
            best = (step, folder)
    return best[1] if best else None
