"""llama.cpp's model parameters, with the one setting this machine's CPU needs changed.

On Intel CPUs with AMX (Sapphire Rapids and later: `amx_int8` in /proc/cpuinfo), llama.cpp
built with `-march=native` (what `make setup` does) keeps quantised weights in its AMX "extra
buffer" and crashed the process with a segmentation fault in `llama_decode` as soon as a batch
was large enough for the AMX kernels: measured on 2 Dec 2026 with llama-cpp-python 0.3.36, the
embedded Q4_1 default model and a q8_0 conversion both crashed on a 128-token prompt, and both
ran with the extra buffers off (44-48 tokens/s decoding on one thread). A crash takes the whole
app down, so on such CPUs the extra buffers are off; `TAILOR_LLAMACPP_EXTRA_BUFFERS=1` turns
them back on (for a llama.cpp build where the bug is fixed), `=0` turns them off anywhere.

Only this module and the engine, benchmarks and tests that open llama.cpp models use it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from .settings import env_str

_patch_lock = threading.Lock()


def cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        return False
    return "amx_int8" in flags.split()


def use_extra_buffers() -> bool:
    """Whether llama.cpp may keep weights in its extra (repacked, AMX) buffers here."""
    value = env_str("TAILOR_LLAMACPP_EXTRA_BUFFERS", "").lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return not cpu_has_amx()


def model_params(llama_cpp):
    """`llama_model_default_params()` with the extra buffers set for this CPU."""
    params = llama_cpp.llama_model_default_params()
    params.use_extra_bufts = use_extra_buffers()
    return params


@contextlib.contextmanager
def safe_defaults() -> Iterator[None]:
    """While inside, `llama_cpp.Llama(...)` (the high-level class, which has no argument for
    it) loads models with `model_params`: for the benchmarks' and tests' raw llama.cpp runs."""
    from llama_cpp import llama_cpp as low_level  # the module Llama.__init__ reads the defaults from

    with _patch_lock:
        original = low_level.llama_model_default_params

        def patched():
            params = original()
            params.use_extra_bufts = use_extra_buffers()
            return params

        low_level.llama_model_default_params = patched
        try:
            yield
        finally:
            low_level.llama_model_default_params = original


def open_llama(**kwargs):
    """`llama_cpp.Llama(**kwargs)` loaded with this CPU's safe model parameters."""
    import llama_cpp

    with safe_defaults():
        return llama_cpp.Llama(**kwargs)
