"""TrainConfig defaults, validation, files, hardware choices and the TRL arguments they become."""

import json

import pytest

from assistant.errors import ValidationError
from tuning.config import ALL_LINEAR, TrainConfig, default_threads, resolve_hardware
from tuning.trainer import lora_config, plan, read_split, sft_config, to_prompt_completion


def test_defaults_are_valid_and_documented_choices():
    c = TrainConfig().validate()
    assert (c.lora_r, c.lora_alpha, c.lora_dropout) == (16, 32, 0.05)
    assert c.target_modules == list(ALL_LINEAR)
    assert c.early_stopping_patience >= 1


@pytest.mark.parametrize(
    "bad",
    [
        {"lora_r": 0},
        {"learning_rate": 2},
        {"epochs": 0},
        {"batch_size": 0},
        {"lora_dropout": 1.0},
        {"dtype": "int8"},
        {"max_length": 4},
        {"lr_scheduler": "zigzag"},
        {"threads": 0},
    ],
)
def test_bad_values_are_refused(bad):
    with pytest.raises(ValidationError):
        TrainConfig.from_dict(bad)


def test_unknown_keys_are_named():
    with pytest.raises(ValidationError, match="learning_rat"):
        TrainConfig.from_dict({"learning_rat": 1e-4})


def test_from_json_and_toml_files(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"epochs": 2, "lora_r": 8, "target_modules": "q_proj, v_proj"}))
    c = TrainConfig.from_file(tmp_path / "c.json")
    assert (c.epochs, c.lora_r, c.target_modules) == (2, 8, ["q_proj", "v_proj"])
    (tmp_path / "c.toml").write_text("learning_rate = 1e-4\nbatch_size = 2\n")
    c = TrainConfig.from_file(tmp_path / "c.toml")
    assert (c.learning_rate, c.batch_size) == (1e-4, 2)
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ValidationError, match="not valid"):
        TrainConfig.from_file(tmp_path / "bad.json")
    with pytest.raises(ValidationError, match="cannot read"):
        TrainConfig.from_file(tmp_path / "missing.json")


def test_cpu_dtype_follows_the_cpu_and_no_checkpointing_and_thread_budget():
    from tuning.config import cpu_has_fast_bf16

    hw = resolve_hardware(TrainConfig(device="cpu"), num_parameters=135_000_000, default_thread_count=3)
    # bf16 autocast only with bf16 matrix instructions; the weights stay fp32 either way
    assert hw.dtype == ("bfloat16" if cpu_has_fast_bf16() else "float32") and hw.weights_dtype == "float32"
    assert not hw.gradient_checkpointing and hw.threads == 3
    forced = resolve_hardware(TrainConfig(device="cpu", dtype="float32"))
    assert forced.dtype == "float32" and not forced.bf16
    assert resolve_hardware(TrainConfig(device="cpu", threads=5)).threads == 5
    assert default_threads(serving=True) == max(1, default_threads(serving=False) - 1)


def test_sft_arguments_on_cpu(tmp_path):
    from tuning.config import ResolvedHardware

    hw = ResolvedHardware("cpu", "float32", 1, False)
    p = plan(TrainConfig(), train_examples=146, validation_examples=18)
    assert p.steps_per_epoch == 37 and p.total_steps == 37 and p.eval_steps == 7
    args = sft_config(TrainConfig(), hw, p, tmp_path)
    assert args.use_cpu and not args.bf16 and not args.fp16  # never TRL's default bf16 on a CPU
    assert not args.gradient_checkpointing and not args.packing and not args.padding_free
    assert args.completion_only_loss is True and args.train_sampling_strategy == "group_by_length"
    assert args.load_best_model_at_end and args.metric_for_best_model == "eval_loss"
    assert args.save_steps == args.eval_steps == 7 and not args.save_only_model
    assert "tensorboard" in args.report_to
    lora = lora_config(TrainConfig())
    assert lora.r == 16 and set(lora.target_modules) == set(ALL_LINEAR)


def test_plan_without_validation_turns_evaluation_off(tmp_path):
    from tuning.config import ResolvedHardware

    p = plan(TrainConfig(max_steps=3), train_examples=10, validation_examples=0)
    assert p.total_steps == 3 and p.eval_steps is None
    args = sft_config(TrainConfig(), ResolvedHardware("cpu", "float32", 1, False), p, tmp_path)
    assert args.eval_strategy == "no" and not args.load_best_model_at_end
    with pytest.raises(ValidationError, match="no training examples"):
        plan(TrainConfig(), 0, 5)


def test_dataset_lines_become_prompt_completion(tune_version_dir):
    rows = read_split(tune_version_dir, "train")
    assert len(rows) == 24
    assert rows[0]["prompt"][-1]["role"] == "user"
    assert rows[0]["completion"] == [{"role": "assistant", "content": rows[0]["completion"][0]["content"]}]
    assert rows[0]["completion"][0]["content"].startswith("Ahoy, rider!")
    system = {
        "example_id": 1,
        "messages": [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": "A"},
        ],
    }
    assert to_prompt_completion(system)["prompt"] == system["messages"][:2]
    with pytest.raises(ValidationError, match="last message"):
        to_prompt_completion({"messages": [{"role": "assistant", "content": "A"}, {"role": "user", "content": "Q"}]})
    (tune_version_dir / "train.jsonl").write_text('{"messages": [}\n')
    with pytest.raises(ValidationError, match="line 1"):
        read_split(tune_version_dir, "train")
