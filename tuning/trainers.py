"""The trainer a config asks for: TRL SFT on the examples (tuning/trainer.py) or DPO on the
preference pairs (tuning/preference.py). The worker and the estimate's probe both build theirs
here, so the probe measures exactly the run the worker would do."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .config import ResolvedHardware, TrainConfig


def build_for(
    config: TrainConfig,
    hw: ResolvedHardware,
    base_model_path: Path,
    version_dir: Path,
    output_dir: Path,
    callbacks: Sequence = (),
    *,
    extra_train: Sequence[Path] = (),
    start_adapter_dir: Path | None = None,
):
    """(trainer, plan) for `config.method`: `extra_train` (grounding examples) applies to SFT,
    `start_adapter_dir` (the adapter to continue) to DPO."""
    if config.method == "dpo":
        from .preference import build_dpo_trainer

        return build_dpo_trainer(
            config, hw, base_model_path, version_dir, output_dir, callbacks, start_adapter_dir=start_adapter_dir
        )
    from .trainer import build_trainer

    return build_trainer(config, hw, base_model_path, version_dir, output_dir, callbacks, extra_train=extra_train)
