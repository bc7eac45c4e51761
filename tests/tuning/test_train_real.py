"""A short real training run on the embedded default model (SmolLM2-135M-Instruct), in
process: loss is logged, LoRA weights change, base weights do not, and the saved adapter
loads into the chat engine and answers."""

import pytest
import torch

from tuning.config import TrainConfig, resolve_hardware
from tuning.trainer import build_trainer


@pytest.mark.real
def test_short_real_training_changes_only_lora_and_loads_into_engine(real_model, real_engine, tmp_path, tune_helpers):
    version = tune_helpers.write_version(tmp_path / "v", n_train=8, n_validation=4)
    config = TrainConfig(
        max_steps=3, batch_size=4, max_length=128, eval_steps=2, threads=2, device="cpu", learning_rate=1e-3
    )
    hw = resolve_hardware(config)
    trainer, the_plan = build_trainer(config, hw, real_model.path, version, tmp_path / "out")
    model = trainer.model
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    base_before = {
        n: p.detach().clone()
        for n, p in model.named_parameters()
        if "lora_" not in n and ("q_proj" in n or "down_proj" in n)
    }
    assert lora_before and base_before
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)

    trainer.train()

    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    evals = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert evals and trainer.state.best_global_step in (2, 3)
    params = dict(model.named_parameters())
    changed = [n for n, before in lora_before.items() if not torch.equal(before, params[n].detach())]
    # lora_B starts at zero; after three updates every B (and A) has moved
    assert len(changed) == len(lora_before), f"{len(lora_before) - len(changed)} LoRA tensors did not change"
    for n, before in base_before.items():
        assert torch.equal(before, params[n].detach()), f"base weight {n} changed"

    adapter_dir = tmp_path / "adapter"
    model.save_pretrained(adapter_dir)
    assert (adapter_dir / "adapter_model.safetensors").is_file()
    real_engine.load_adapter("test-real-lora", adapter_dir, version="1")
    try:
        from assistant.engine import GenerationOptions

        result = real_engine.generate(
            [{"role": "user", "content": "My chain squeaks. What should I do?"}],
            GenerationOptions(temperature=0, max_new_tokens=12),
            adapter="test-real-lora",
        )
        assert result.error is None and result.text and result.adapter == "test-real-lora"
    finally:
        real_engine.unload_adapter("test-real-lora")
