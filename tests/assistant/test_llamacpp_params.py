"""llama.cpp's extra weight buffers: on where the AMX probe (or the CPU) says they work, overridable."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from assistant import llamacpp_params as params


@pytest.mark.parametrize(
    ("env", "amx", "works", "expected"),
    [
        ("", True, False, False),  # an AMX CPU and a build whose AMX kernels crash
        ("", True, True, True),  # an AMX CPU and a build that passed the probe
        ("", False, False, True),  # no AMX: nothing to probe
        ("1", True, False, True),
        ("off", False, True, False),
        ("yes", True, False, True),
    ],
)
def test_extra_buffers_follow_the_cpu_the_probe_and_the_setting(monkeypatch, env, amx, works, expected):
    monkeypatch.setenv("TAILOR_LLAMACPP_EXTRA_BUFFERS", env)
    monkeypatch.setattr(params, "cpu_has_amx", lambda: amx)
    monkeypatch.setattr(params, "amx_buffers_work", lambda gguf: works)
    assert params.use_extra_buffers("model.gguf") is expected


def test_high_level_llama_gets_the_same_parameters_and_the_patch_is_undone(monkeypatch):
    llama_cpp = pytest.importorskip("llama_cpp")
    from llama_cpp import llama_cpp as low_level

    monkeypatch.setattr(params, "cpu_has_amx", lambda: True)
    monkeypatch.setattr(params, "amx_buffers_work", lambda gguf: False)
    monkeypatch.delenv("TAILOR_LLAMACPP_EXTRA_BUFFERS", raising=False)
    original = low_level.llama_model_default_params
    assert params.model_params(llama_cpp, "model.gguf").use_extra_bufts is False
    with params.safe_defaults("model.gguf"):
        assert low_level.llama_model_default_params().use_extra_bufts is False
    assert low_level.llama_model_default_params is original


def _child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_probe_that_crashes_or_disagrees_says_no_and_one_that_cannot_tell_says_so():
    crashed, why = params.probe(_child("import ctypes; ctypes.string_at(0)"))  # a segmentation fault
    assert crashed is False and "signal 11" in why
    assert params.probe(_child("import sys; print('r = 0.2'); sys.exit(3)")) == (False, "r = 0.2")
    assert params.probe(_child("print('r = 0.9999')")) == (True, "r = 0.9999")
    unknown, why = params.probe(_child("raise SystemExit('no llama_cpp here')"))
    assert unknown is None and "no llama_cpp here" in why


def test_the_verdict_is_kept_per_build_and_model_and_either_changing_probes_again(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(params, "_verdicts", {})
    first, second = tmp_path / "a.gguf", tmp_path / "b.gguf"
    first.write_bytes(b"GGUF a")
    second.write_bytes(b"GGUF b")
    (tmp_path / "libggml-cpu.so").write_bytes(b"lib")
    build = [f"{tmp_path / 'libggml-cpu.so'}:3:1"]
    monkeypatch.setattr(params, "library_key", lambda: build[0])
    probed: list[str] = []

    def fake_probe(command):
        probed.append(Path(command[-1]).name)
        return len(probed) != 2, f"probe {len(probed)}"

    monkeypatch.setattr(params, "probe", fake_probe)
    assert params.amx_buffers_work(first) is True
    assert params.amx_buffers_work(second) is False  # each model file is probed
    assert params.amx_buffers_work(first) is True and probed == ["a.gguf", "b.gguf"]
    monkeypatch.setattr(params, "_verdicts", {})  # a new process reads the cache file
    assert params.amx_buffers_work(second) is False and len(probed) == 2
    build[0] = f"{tmp_path / 'libggml-cpu.so'}:3:2"  # llama.cpp rebuilt
    assert params.amx_buffers_work(second) is True and probed[-1] == "b.gguf" and len(probed) == 3
    assert params.amx_buffers_work(tmp_path / "missing.gguf") is False and len(probed) == 3
    kept = params._read_cache()
    assert sorted(v["works"] for v in kept.values()) == [False, True, True]


def test_verdicts_for_files_that_are_gone_are_dropped(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    lib, model = tmp_path / "libggml-cpu.so", tmp_path / "m.gguf"
    lib.write_bytes(b"lib")
    model.write_bytes(b"GGUF")
    params._write_cache(f"{lib}:3:1|{model}:4:1", True, "kept")
    params._write_cache(f"{lib}:3:1|{tmp_path / 'gone.gguf'}:4:1", True, "a temporary model")
    params._write_cache(f"{lib}:3:1|{tmp_path / 'other.gguf'}:4:1", False, "its own verdict")
    assert [v["detail"] for v in params._read_cache().values()] == ["kept", "its own verdict"]


def test_the_probe_passes_on_the_installed_build_with_the_embedded_model():
    """The real thing: the installed llama.cpp reads a prompt with its extra buffers on (AMX tiles
    on an AMX CPU) and agrees with the plain kernels. `make setup` rebuilds a build that fails."""
    pytest.importorskip("llama_cpp")
    from assistant.models import find_embedded_gguf

    works, detail = params.probe(params.probe_command(find_embedded_gguf()))
    assert works is True, detail
    assert float(detail.rsplit("=", 1)[1]) >= params.MIN_AGREEMENT


def test_the_log_drops_the_expected_lora_buffer_warnings_and_passes_the_rest(monkeypatch):
    llama_cpp = pytest.importorskip("llama_cpp")
    from llama_cpp import _logger

    seen: list[bytes] = []
    monkeypatch.setattr(_logger, "llama_log_callback", lambda level, text, data: seen.append(text))
    monkeypatch.setattr(params, "_log_callback", None)
    monkeypatch.setattr(llama_cpp, "llama_log_set", lambda callback, data: None)
    params.route_llama_log(llama_cpp)
    params._log_callback(
        3,
        b"llama_adapter_lora_init_impl: lora for 'blk.0.attn_q.weight' cannot use buft 'AMX', fallback to CPU\n",
        None,
    )
    params._log_callback(
        3,
        b"llama_adapter_lora_init_impl: lora for 'blk.9.ffn_up.weight' cannot use buft 'CPU_REPACK', fallback to CPU\n",
        None,
    )
    params._log_callback(4, b"llama_model_load: error loading model\n", None)
    params._log_callback(3, b"load_tensors: cannot use buft 'CPU_REPACK' for this tensor\n", None)
    assert seen == [
        b"llama_model_load: error loading model\n",
        b"load_tensors: cannot use buft 'CPU_REPACK' for this tensor\n",
    ]
