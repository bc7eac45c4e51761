"""Preference tuning (TRL DPO) on the tiny random model: in process, a run on a new adapter and
a run continuing a published adapter change only adapter weights and log the validation reward
accuracy; as a job it publishes an adapter whose card says what it learned from."""

from __future__ import annotations

import json

import torch

from tuning.config import TrainConfig, dpo_defaults, resolve_hardware
from tuning.preference import build_dpo_trainer, reward_metrics


def write_pair_version(folder, n_train: int = 8, n_validation: int = 4):
    """A dataset version folder holding examples and preference pairs (short chosen, long rejected)."""
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, n in (("train", n_train), ("validation", n_validation), ("test", 0)):
        lines = []
        for i in range(n):
            user = {"role": "user", "content": f"Question {split} {i}?"}
            lines.append({"example_id": 100 + i, "messages": [user, {"role": "assistant", "content": "An answer."}]})
            lines.append(
                {
                    "example_id": i,
                    "messages": [user, {"role": "assistant", "content": f"Short {i}."}],
                    "rejected": f"A very long and winding reply number {i} that goes on and on.",
                }
            )
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
        counts[split] = n
    (folder / "manifest.json").write_text(json.dumps({"id": 1, "content_hash": "t", "counts": counts}))
    return folder


def _config(**kw):
    base = dict(
        method="dpo",
        max_steps=2,
        batch_size=4,
        max_length=64,
        threads=1,
        device="cpu",
        learning_rate=1e-3,
        warmup_ratio=0.0,
        lora_r=4,
        lora_alpha=8,
        eval_steps=1,
        early_stopping_patience=0,
    )
    return TrainConfig(**{**base, **kw}).validate()


def _weights(model):
    adapter = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n and ".default." in n}
    other = {n: p.detach().clone() for n, p in model.named_parameters() if not ("lora_" in n and ".default." in n)}
    return adapter, other


def test_dpo_on_a_new_adapter_trains_only_lora_and_logs_reward_accuracy(tiny_model_dir, tmp_path):
    version = write_pair_version(tmp_path / "v")
    config = _config()
    trainer, plan = build_dpo_trainer(config, resolve_hardware(config), tiny_model_dir, version, tmp_path / "out")
    assert plan.train_examples == 8 and plan.validation_examples == 4  # the pairs, not the examples
    adapter, other = _weights(trainer.model)
    assert len(adapter) == 2 * 7 * 2
    trainer.train()
    params = dict(trainer.model.named_parameters())
    assert not [n for n, p in adapter.items() if torch.equal(p, params[n].detach())]
    assert not [n for n, p in other.items() if not torch.equal(p, params[n].detach())]
    rewards = reward_metrics(trainer.state.log_history, None)
    assert 0.0 <= rewards["reward_accuracy"] <= 1.0 and rewards["reward_margin"] is not None


def test_dpo_continues_a_published_adapter_against_a_frozen_copy_of_it(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    sft = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    sft.save_pretrained(tmp_path / "sft")
    start = {n: p.detach().clone() for n, p in sft.named_parameters() if "lora_" in n}
    version = write_pair_version(tmp_path / "v")
    config = _config()
    trainer, _ = build_dpo_trainer(
        config, resolve_hardware(config), tiny_model_dir, version, tmp_path / "out", start_adapter_dir=tmp_path / "sft"
    )
    params = dict(trainer.model.named_parameters())
    # it starts from the adapter's weights, and the reference is a copy of them
    assert all(torch.equal(p, params[n].detach()) for n, p in start.items())
    refs = {n: p.detach().clone() for n, p in params.items() if ".ref." in n}
    assert refs and all(torch.equal(p, params[n.replace(".ref.", ".default.")]) for n, p in refs.items())
    trainer.train()
    params = dict(trainer.model.named_parameters())
    assert any(not torch.equal(p, params[n].detach()) for n, p in start.items())  # the adapter moved
    assert all(torch.equal(p, params[n].detach()) for n, p in refs.items())  # the reference did not


def test_a_dpo_job_publishes_an_adapter_with_its_method_and_rewards(tiny_model_dir, tmp_path, tune_manager, wait_until):
    version = write_pair_version(tmp_path / "v", n_train=8, n_validation=4)
    job = tune_manager.submit(
        base_model="tiny",
        base_model_path=tiny_model_dir,
        dataset_version=1,
        dataset_path=version,
        dataset_hash="t",
        config=dpo_defaults(max_steps=2, batch_size=4, max_length=64, threads=1, lora_r=4, lora_alpha=8, eval_steps=1),
        family="pref",
    )
    done = tune_manager.wait(job.id, timeout=600)
    assert done.status == "succeeded", done.error
    card = tune_manager.registry.get(done.adapter_name)
    assert card.name == "pref-v1" and card.config["method"] == "dpo" and card.config["beta"] == 0.1
    assert card.metrics["method"] == "dpo" and 0.0 <= card.metrics["reward_accuracy"] <= 1.0
    assert card.metrics["train_examples"] == 8 and (card.path / "adapter_model.safetensors").is_file()
    assert not (card.path / "ref").exists()  # only the trained adapter is published
    log = (done.job_dir / "progress.jsonl").read_text(encoding="utf-8")
    assert '"reward_accuracy"' in log


def test_the_dpo_loss_carries_the_chosen_replies_sft_term_unless_turned_off(tmp_path):
    from tuning.preference import dpo_config
    from tuning.trainer import Plan

    plan = Plan(8, 4, 2, 2, 1)
    config = dpo_defaults(device="cpu", threads=1)
    args = dpo_config(config, resolve_hardware(config), plan, tmp_path)
    assert args.loss_type == ["sigmoid", "sft"] and args.loss_weights == [1.0, 1.0] and args.beta == 0.1
    plain = dpo_config(config.with_(sft_weight=0.0), resolve_hardware(config), plan, tmp_path)
    assert plain.loss_type == ["sigmoid"] and plain.loss_weights is None
