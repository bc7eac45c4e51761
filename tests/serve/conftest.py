"""Fixtures for the serving tests: a tiny LoRA adapter published into a workspace, and an
OpenAI client pointed at a running server."""

from __future__ import annotations

from pathlib import Path

import pytest


def publish_lora(adapters_dir: Path, name: str, model_dir: Path, seed: int = 1) -> Path:
    """A LoRA adapter with random (non-zero) weights on `model_dir`, saved in PEFT's format
    where the chat finds adapters (`<workspace>/adapters/<name>/`). PEFT's default init makes B
    zero (the adapter would answer exactly like the base), so `init_lora_weights=False`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from assistant.workspace import publish_dir

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    torch.manual_seed(seed)
    peft_model = get_peft_model(
        model,
        LoraConfig(
            r=4,
            lora_alpha=16,
            init_lora_weights=False,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"],
        ),
    )
    with publish_dir(Path(adapters_dir) / name) as tmp:
        peft_model.save_pretrained(tmp)
        (tmp / "tailor.json").write_text('{"note": "test adapter"}')
    return Path(adapters_dir) / name


@pytest.fixture
def make_adapter():
    return publish_lora


@pytest.fixture
def openai_for():
    import openai

    def make(server, key: str = "unused") -> openai.OpenAI:
        # max_retries=0: the tests look at 429/503 answers themselves
        return openai.OpenAI(base_url=server.url + "v1", api_key=key, max_retries=0, timeout=120)

    return make
