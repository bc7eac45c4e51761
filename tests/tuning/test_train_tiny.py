"""A short real TRL training run, in process, on the tiny random model: the fast copy of the
check in test_train_real.py (a loss is logged, every LoRA weight changes, no base weight does),
so a break in how TRL/PEFT train our adapters shows up in `make test-fast` too."""

import torch

from tuning.config import TrainConfig, resolve_hardware
from tuning.trainer import build_trainer


def test_a_tiny_training_run_changes_every_lora_weight_and_no_base_weight(tiny_model_dir, tmp_path, tune_helpers):
    version = tune_helpers.write_version(tmp_path / "v", n_train=4, n_validation=0)
    # Two optimizer steps, not one: LoRA's B starts at zero, so at the first step the gradient of
    # every A is exactly zero and only B moves; the second step moves A too. No warm-up: with
    # one warm-up step the first step's learning rate would be 0.
    config = TrainConfig(
        max_steps=2,
        batch_size=4,
        max_length=64,
        threads=1,
        device="cpu",
        learning_rate=1e-3,
        warmup_ratio=0.0,
        lora_r=4,
        lora_alpha=8,
    )
    trainer, the_plan = build_trainer(config, resolve_hardware(config), tiny_model_dir, version, tmp_path / "out")
    assert the_plan.total_steps == 2 and the_plan.eval_steps is None
    model = trainer.model
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    base_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    # the tiny model's 2 layers x 7 linear layers, each with an A and a B
    assert len(lora_before) == 2 * 7 * 2 and base_before
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)

    trainer.train()

    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses))), trainer.state.log_history
    assert trainer.state.global_step == 2
    params = dict(model.named_parameters())
    unchanged = [n for n, before in lora_before.items() if torch.equal(before, params[n].detach())]
    assert not unchanged, f"{len(unchanged)} of {len(lora_before)} LoRA tensors did not change: {unchanged}"
    changed = [n for n, before in base_before.items() if not torch.equal(before, params[n].detach())]
    assert not changed, f"base weights changed: {changed}"
