"""Fixtures for the serving tests: an OpenAI client pointed at a running server. (The random
LoRA adapter these tests publish is `random_lora` in tests/conftest.py.)"""

from __future__ import annotations

import pytest


@pytest.fixture
def openai_for():
    import openai

    def make(server, key: str = "unused") -> openai.OpenAI:
        # max_retries=0: the tests look at 429/503 answers themselves
        return openai.OpenAI(base_url=server.url + "v1", api_key=key, max_retries=0, timeout=120)

    return make
