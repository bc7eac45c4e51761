"""llama.cpp's model parameters, with the one setting this machine's CPU needs decided by a probe.

On Intel CPUs with AMX (Sapphire Rapids and later: `amx_int8` in /proc/cpuinfo), llama.cpp built
with `-march=native` (what `make setup` does) keeps quantised weights in its AMX "extra buffer"
and multiplies batches of two or more rows with AMX tiles. Built by GCC 12 (Debian 12's compiler)
that crashed the process with a segmentation fault in `llama_decode` on the first prompt: GCC's
`_tile_loadconfig` (amxtileintrin.h) tells the compiler it reads 8 bytes of the 64-byte tile
configuration, so dead-store elimination drops the stores of the tile shapes and `ldtilecfg` faults
on what was left on the stack (found on 7 Dec 2026 in the disassembly of llama-cpp-python
0.3.36's `ggml_backend_amx_mul_mat`). `make setup` now builds llama.cpp with GCC's dead-store
elimination off (`-fno-dse -fno-tree-dse`, the Makefile's LLAMACPP_CXXFLAGS), which keeps the
stores. With the buffers on, the default model reads prompts about 2x and decodes about 1.8x as
fast here (benchmarks/gguf_weights.py).

A build does not say whether it has the bug, and a crash takes the whole app down, so on AMX CPUs
a probe decides, per model file: a child process loads the model with the buffers off and on,
reads the same 64-token prompt each way, and passes if it survives and the logits agree. Agreeing
matters as much as surviving: on the tests' tiny model (32-wide layers) in q8_0 the AMX kernels
gave NaN logits, where the default model's agree with the plain kernels' (r = 0.999, and
the same KL to the f32 weights, 0.0034). The verdict is kept per llama.cpp build and model file
(path, size and time of each) in `~/.cache/tailor/llamacpp-amx.json`, so it costs a second or two
once per model and build. `python -m assistant.llamacpp_params` probes the embedded model afresh
and exits 1 when the buffers crash (what `make setup` uses to rebuild a stale build).
`TAILOR_LLAMACPP_EXTRA_BUFFERS=1`/`=0` skips the probe and turns the buffers on or off.

One more rule: torch's AMX kernels (bf16 products, bf16 attention) and llama.cpp's must not run
on the same thread. torch releases the tiles after its kernels, and llama.cpp configures a
thread's tiles once (a thread-local flag in `ggml_tile_config_init`), so its next product there
dies with SIGILL (measured: a bf16 linear layer, or bf16 scaled-dot-product attention, on the
main thread between two llama.cpp prompts read on it; capping oneDNN with ONEDNN_MAX_CPU_ISA
covered the first and not the second). On separate threads, each with its own OpenMP pool, both
run. So every llama.cpp computation of the engine, scoring included, runs on its scheduler thread
(assistant/llamacpp_engine.py), and raw `llama_cpp.Llama` objects (`open_llama`: benchmarks and
tests) must run on a thread that never runs torch in bf16.

Only this module and the engine, benchmarks and tests that open llama.cpp models use it."""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .settings import env_str

log = logging.getLogger(__name__)
_patch_lock = threading.Lock()
PROBE_TOKENS = 64  # a prompt long enough for the AMX kernels (they take batches of 2+ rows)
PROBE_TIMEOUT_S = 180.0
MIN_AGREEMENT = 0.99  # correlation of the two ways' logits: broken kernels give noise, not 0.98


def cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        return False
    return "amx_int8" in flags.split()


def use_extra_buffers(gguf: str | Path) -> bool:
    """Whether llama.cpp may keep this model's weights in its extra (repacked, AMX) buffers here
    (on an AMX CPU, only a model the probe passed)."""
    value = env_str("TAILOR_LLAMACPP_EXTRA_BUFFERS", "").lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return not cpu_has_amx() or amx_buffers_work(gguf)


_log_callback: Any = None  # the ctypes callback object, kept alive while llama.cpp may call it
# "lora for 'blk.0.attn_q.weight' cannot use buft 'AMX', fallback to CPU", or 'CPU_REPACK'
LORA_FALLBACK = (b"cannot use buft '", b"fallback to CPU")


def route_llama_log(llama_cpp) -> None:
    """llama.cpp's log as llama-cpp-python prints it, less one expected warning: with extra
    buffers on, every adapter load warned once per LoRA tensor (210 lines for the default model's
    seven projections) that it "cannot use buft 'AMX', fallback to CPU" (on Intel CPUs with
    AMX), or 'CPU_REPACK' (weights repacked for AVX2/AVX-512 or ARM kernels, e.g. a Q4_0 model
    on an AMD EPYC). LoRA tensors are f32, which those kernels do not take; they run on the
    CPU buffer, as without extra buffers."""
    global _log_callback
    if _log_callback is None:
        try:
            from llama_cpp import _logger

            forward: Any = _logger.llama_log_callback
        except (ImportError, AttributeError):
            forward = None

        def callback(level: int, text: bytes | None, data: Any) -> None:
            if text and all(part in text for part in LORA_FALLBACK):
                return
            if forward is not None:
                forward(level, text, data)
            elif text:
                sys.stderr.write(text.decode("utf-8", "replace"))

        _log_callback = llama_cpp.llama_log_callback(callback)
    llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))


def model_params(llama_cpp, gguf: str | Path):
    """`llama_model_default_params()` with the extra buffers set for this CPU and model."""
    params = llama_cpp.llama_model_default_params()
    params.use_extra_bufts = use_extra_buffers(gguf)
    return params


# ---- the probe --------------------------------------------------------------------------------


def library_key() -> str | None:
    """Which llama.cpp build is installed: its CPU library's path, size and time (None without one)."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    libs = sorted(Path(list(spec.submodule_search_locations)[0], "lib").glob("libggml-cpu*"))
    if not libs:
        return None
    return _file_key(libs[0])


def _file_key(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tailor" / "llamacpp-amx.json"


def _read_cache() -> dict:
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _still_there(key: str) -> bool:
    """Whether the files a cache key names (a build, and a model) still exist."""
    return all(Path(part.rsplit(":", 2)[0]).exists() for part in key.split("|"))


def _write_cache(key: str, works: bool, detail: str) -> None:
    # Verdicts for files that are gone are dropped (test runs probe many temporary models)
    data = {k: v for k, v in _read_cache().items() if _still_there(k)}
    data[key] = {"works": works, "detail": detail}
    path = cache_file()
    try:  # a read-only home only costs a probe per process
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as fh:
            json.dump(data, fh, indent=1)
        os.replace(fh.name, path)
    except OSError as exc:
        log.debug("could not keep the AMX probe's verdict in %s: %s", path, exc)


def probe_command(gguf: Path) -> list[str]:
    return [sys.executable, "-c", "import sys; from assistant.llamacpp_params import _probe_child; "
            "sys.exit(_probe_child(sys.argv[1]))", str(gguf)]  # fmt: skip


def probe(command: list[str]) -> tuple[bool | None, str]:
    """Run the probe in a child process: (True, detail) when the extra buffers work, (False, detail)
    when the child crashed or disagreed, (None, why) when it could not tell (a timeout, an error)."""
    root = str(Path(__file__).resolve().parents[1])  # `assistant` importable without an install
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        return None, f"the probe did not finish in {PROBE_TIMEOUT_S:.0f} s"
    last = (done.stdout.strip().splitlines() or [""])[-1]
    if done.returncode < 0:
        return False, f"the probe crashed (signal {-done.returncode})"
    if done.returncode == 0:
        return True, last
    if done.returncode == 3:
        return False, last
    return None, f"the probe failed (exit {done.returncode}): {(done.stderr.strip().splitlines() or [''])[-1]}"


_verdicts: dict[str, bool] = {}  # this process's verdicts, by build and model key
_verdicts_lock = threading.Lock()


def amx_buffers_work(gguf: str | Path) -> bool:
    """The probe's verdict for the installed build and this model file, from this process, the
    cache file, or a fresh probe."""
    build, path = library_key(), Path(gguf)
    if build is None or not path.is_file():
        return False
    key = f"{build}|{_file_key(path)}"
    with _verdicts_lock:  # one probe per model even when several engines load at once
        if key not in _verdicts:
            _verdicts[key] = _decide(key, path)
        return _verdicts[key]


def _decide(key: str, gguf: Path) -> bool:
    known = _read_cache().get(key)
    if isinstance(known, dict) and isinstance(known.get("works"), bool):
        return known["works"]
    works, detail = probe(probe_command(gguf))
    if works is None:
        log.warning("llama.cpp's AMX buffers stay off for %s: %s", gguf.name, detail)
        return False
    _write_cache(key, works, detail)
    if works:
        log.info("llama.cpp's AMX kernels work for %s in this build (%s)", gguf.name, detail)
    else:
        log.warning(
            "llama.cpp's AMX kernels fail for %s in this build (%s): they stay off for it, and its "
            "prompts read about half as fast. If they crashed, `make setup` rebuilds llama.cpp; see "
            "assistant/llamacpp_params.py.",
            gguf.name,
            detail,
        )
    return works


def _probe_child(gguf: str) -> int:
    """In the child: read one prompt with the extra buffers off, then on; 0 if both agree, 3 if
    they do not (a crash ends the process with a signal)."""
    import llama_cpp

    quiet = llama_cpp.llama_log_callback(lambda level, text, data: None)
    llama_cpp.llama_log_set(quiet, None)
    llama_cpp.llama_backend_init()
    logits = []
    for extra in (False, True):
        mparams = llama_cpp.llama_model_default_params()
        mparams.use_extra_bufts = extra
        model = llama_cpp.llama_model_load_from_file(gguf.encode(), mparams)
        if not model:
            print(f"llama.cpp could not load {gguf}")
            return 2
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = 2 * PROBE_TOKENS
        cparams.n_threads = cparams.n_threads_batch = 1
        cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        ctx = llama_cpp.llama_init_from_model(model, cparams)
        n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
        tokens = [(i * 37 + 11) % n_vocab for i in range(PROBE_TOKENS)]  # any ids: the products matter
        batch = llama_cpp.llama_batch_init(PROBE_TOKENS, 0, 1)
        batch.n_tokens = PROBE_TOKENS
        for i, token in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, i, 1
            batch.seq_id[i][0], batch.logits[i] = 0, i == PROBE_TOKENS - 1
        if llama_cpp.llama_decode(ctx, batch) != 0:
            print("llama_decode failed")
            return 2
        row = llama_cpp.llama_get_logits_ith(ctx, -1)
        logits.append([float(row[i]) for i in range(n_vocab)])
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)
        llama_cpp.llama_model_free(model)
    agreement = _correlation(*logits)
    print(f"logits with and without the extra buffers agree to r = {agreement:.5f}")
    return 0 if agreement >= MIN_AGREEMENT else 3


def _correlation(a: list[float], b: list[float]) -> float:
    n = len(a)
    mean_a, mean_b = sum(a) / n, sum(b) / n
    cov = sum((x - mean_a) * (y - mean_b) for x, y in zip(a, b))
    var_a = sum((x - mean_a) ** 2 for x in a)
    var_b = sum((y - mean_b) ** 2 for y in b)
    if not var_a or not var_b or cov != cov:  # flat or NaN logits: not a working kernel
        return 0.0
    return cov / (var_a * var_b) ** 0.5


# ---- the high-level class ---------------------------------------------------------------------


@contextlib.contextmanager
def safe_defaults(gguf: str | Path) -> Iterator[None]:
    """While inside, `llama_cpp.Llama(...)` (the high-level class, which has no argument for
    it) loads models with `model_params`: for the benchmarks' and tests' raw llama.cpp runs."""
    from llama_cpp import llama_cpp as low_level  # the module Llama.__init__ reads the defaults from

    extra = use_extra_buffers(gguf)  # before the lock: a first call may run the probe
    with _patch_lock:
        original = low_level.llama_model_default_params

        def patched():
            params = original()
            params.use_extra_bufts = extra
            return params

        low_level.llama_model_default_params = patched
        try:
            yield
        finally:
            low_level.llama_model_default_params = original


def open_llama(**kwargs):
    """`llama_cpp.Llama(**kwargs)` loaded with this CPU's safe model parameters."""
    import llama_cpp

    with safe_defaults(kwargs["model_path"]):
        return llama_cpp.Llama(**kwargs)


def main(argv: list[str] | None = None) -> int:
    """`python -m assistant.llamacpp_params`: probe afresh, keep the verdict, say it; exit 1 when
    this build's AMX kernels crash (`make setup` then rebuilds llama.cpp)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not cpu_has_amx():
        print("llama.cpp extra buffers: on (this CPU has no AMX; nothing to probe)")
        return 0
    key = library_key()
    if key is None:
        print("llama.cpp extra buffers: llama-cpp-python is not installed")
        return 0
    from .errors import ModelError
    from .models import find_embedded_gguf

    try:
        gguf = find_embedded_gguf()
    except ModelError as exc:
        print(f"llama.cpp extra buffers: no model to probe with ({exc})")
        return 0
    works, detail = probe(probe_command(gguf))
    if works is None:
        print(f"llama.cpp extra buffers: could not probe ({detail}); they stay off")
        return 0
    _write_cache(f"{key}|{_file_key(gguf)}", works, detail)
    print(f"llama.cpp AMX buffers: {'work' if works else 'CRASH'} in this build ({detail})")
    return 0 if works else 1


if __name__ == "__main__":
    sys.exit(main())
