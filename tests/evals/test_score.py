"""ChatEngine.score: the loss of a reference reply, checked against transformers' own loss."""

import math

import pytest
import torch

from assistant.errors import ValidationError

from .conftest import EVAL_LORA

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}]


def test_score_matches_the_models_own_masked_loss(eval_engine):
    engine = eval_engine
    reply = "The capital of France is Paris."
    loss, n = engine.score(MSGS, reply)
    prompt = engine.encode(MSGS)
    full = engine.encode(MSGS + [{"role": "assistant", "content": reply}], add_generation_prompt=False)
    assert n == len(full) - len(prompt) > 0
    ids = torch.tensor([full])
    labels = ids.clone()
    labels[0, : len(prompt)] = -100  # transformers ignores these positions in its loss
    with torch.inference_mode(), engine._use(None):
        expected = engine.model(input_ids=ids, labels=labels).loss.item()
    assert loss == pytest.approx(expected, rel=1e-5)
    assert math.isfinite(loss) and loss > 0


def test_score_under_an_adapter_differs_and_base_is_unchanged(eval_engine, tiny_model_dir, tmp_path, random_lora):
    reply = "Paris."
    base_before, _ = eval_engine.score(MSGS, reply)
    random_lora(tiny_model_dir, tmp_path / "lora", **EVAL_LORA)
    # left loaded: ChatEngine.unload_adapter of the last adapter breaks base generation (reported)
    eval_engine.load_adapter("score-lora", tmp_path / "lora")
    tuned, _ = eval_engine.score(MSGS, reply, adapter="score-lora")
    base_after, _ = eval_engine.score(MSGS, reply)
    assert tuned != pytest.approx(base_before, rel=1e-4)
    assert base_after == pytest.approx(base_before, rel=1e-6)


def test_score_rejects_bad_input(eval_engine):
    with pytest.raises(ValidationError):
        eval_engine.score(MSGS, "   ")
    with pytest.raises(ValidationError):
        eval_engine.score(MSGS, "x", adapter="not-loaded")


def test_score_keeps_long_prompts_inside_the_context(eval_engine):
    long = [{"role": "user", "content": "bikes and questions " * 400}]
    loss, n = eval_engine.score(long, "A short answer.")
    assert math.isfinite(loss) and n > 0
