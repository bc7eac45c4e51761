"""llama.cpp's extra weight buffers: off on AMX CPUs (they crashed decoding), overridable."""

from __future__ import annotations

import pytest

from assistant import llamacpp_params as params


@pytest.mark.parametrize(
    ("env", "amx", "expected"),
    [("", True, False), ("", False, True), ("1", True, True), ("off", False, False), ("yes", True, True)],
)
def test_extra_buffers_follow_the_cpu_and_the_setting(monkeypatch, env, amx, expected):
    monkeypatch.setenv("TAILOR_LLAMACPP_EXTRA_BUFFERS", env)
    monkeypatch.setattr(params, "cpu_has_amx", lambda: amx)
    assert params.use_extra_buffers() is expected


def test_high_level_llama_gets_the_same_parameters_and_the_patch_is_undone(monkeypatch):
    llama_cpp = pytest.importorskip("llama_cpp")
    from llama_cpp import llama_cpp as low_level

    monkeypatch.setattr(params, "cpu_has_amx", lambda: True)
    monkeypatch.delenv("TAILOR_LLAMACPP_EXTRA_BUFFERS", raising=False)
    original = low_level.llama_model_default_params
    assert params.model_params(llama_cpp).use_extra_bufts is False
    with params.safe_defaults():
        assert low_level.llama_model_default_params().use_extra_bufts is False
    assert low_level.llama_model_default_params is original
