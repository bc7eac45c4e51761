"""Take a tuned assistant to other tools: an adapter as a PEFT folder or zip, or a merged
model (the LoRA folded into the base weights) as a plain Hugging Face safetensors folder.
A full fine-tuned checkpoint (kind "full") exports the same ways: its folder or zip, and as the
"merged" model it already is.

- The adapter folder is what PEFT loads on top of the same base model
  (`PeftModel.from_pretrained(base, folder)`); it is small (megabytes).
- The merged folder needs neither PEFT nor Tailor: `AutoModelForCausalLM.from_pretrained`
  loads it like any checkpoint, and its greedy answers are the adapter's (a test checks it).
  It is written from a fresh copy of the base weights, never the engine's: merging changes
  weights in place, and the running chat must keep answering as the base model.

Every output is built under a temporary name and renamed into place, so an interrupted
export never leaves a half-written folder or zip where the user will look."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from assistant.adapters import FULL, AdapterCatalog, AdapterInfo
from assistant.db import utcnow
from assistant.engine import require_safetensors
from assistant.errors import ModelError, ValidationError, write_failed
from assistant.hardware import pick_hardware
from assistant.workspace import publish_dir

Progress = Callable[[str], None]
_PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass
class ExportResult:
    path: Path
    kind: str  # "adapter-folder", "adapter-zip", "merged"
    files: int
    bytes: int
    seconds: float

    def summary(self) -> str:
        return f"{self.kind} -> {self.path} ({self.files} files, {self.bytes / 1e6:.1f} MB, {self.seconds:.1f} s)"


def _size(path: Path) -> tuple[int, int]:
    if path.is_file():
        return 1, path.stat().st_size
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _check_dest(dest: Path, overwrite: bool) -> Path:
    dest = Path(dest).expanduser().resolve()
    if dest.exists() and not overwrite:
        raise ValidationError(f"{dest} already exists; choose another destination or pass overwrite")
    if (
        dest.exists()
        and dest.is_dir()
        and any(dest.iterdir())
        and not ((dest / "config.json").is_file() or (dest / "adapter_config.json").is_file())
    ):
        # Replacing a folder deletes it: only ever replace an earlier export, not any folder.
        raise ValidationError(f"{dest} is a folder that is not an earlier export; refusing to replace it")
    return dest


def _adapter_files(info: AdapterInfo) -> list[Path]:
    """Every file of an adapter (or full checkpoint) folder; an error naming what is missing."""
    if info.kind == FULL:
        missing = [] if (info.path / "config.json").is_file() else ["config.json"]
        missing += [] if any(info.path.glob("*.safetensors")) else ["*.safetensors"]
    else:
        missing = [f for f in _PEFT_FILES if not (info.path / f).is_file()]
    if missing:
        raise ValidationError(f"adapter {info.name!r} is incomplete: {', '.join(missing)} missing in {info.path}")
    return sorted(p for p in info.path.rglob("*") if p.is_file() and not p.name.startswith("."))


def export_adapter(
    catalog: AdapterCatalog, name: str, dest: Path | str, fmt: str = "folder", overwrite: bool = False
) -> ExportResult:
    """Copy the adapter `name` (PEFT files plus Tailor's metadata) to `dest` as a folder, or
    as a zip whose entries sit under `<name>/` (fmt "zip")."""
    started = time.perf_counter()
    if fmt not in ("folder", "zip"):
        raise ValidationError(f"unknown adapter export format {fmt!r}; use folder or zip")
    info = catalog.get(name)
    files = _adapter_files(info)
    dest = _check_dest(Path(dest), overwrite)
    try:
        if fmt == "folder":
            with publish_dir(dest) as tmp:
                for f in files:
                    target = tmp / f.relative_to(info.path)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(f, target)
            kind = "adapter-folder"
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
            os.close(fd)
            try:
                # safetensors barely compress; deflate still shrinks the JSON and keeps zips portable
                with zipfile.ZipFile(tmp_name, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
                    for f in files:
                        zf.write(f, f"{info.name}/{f.relative_to(info.path).as_posix()}")
                os.replace(tmp_name, dest)
            except BaseException:
                Path(tmp_name).unlink(missing_ok=True)
                raise
            kind = "adapter-zip"
    except OSError as exc:  # full or read-only destination; the temporary is already removed
        raise write_failed(dest, exc) from exc
    n, size = _size(dest)
    return ExportResult(dest, kind, n, size, time.perf_counter() - started)


def export_merged(
    base_path: Path | str,
    catalog: AdapterCatalog,
    name: str,
    dest: Path | str,
    *,
    base_name: str | None = None,
    dtype: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> ExportResult:
    """Merge the LoRA adapter `name` into the base model at `base_path` and save the result as
    a safetensors folder (model, tokenizer, chat template, generation config) at `dest`.

    `dtype` is the saved precision; by default float32 on a CPU and the hardware's dtype on a
    GPU. Merging is done in that precision on the CPU-or-GPU the hardware offers."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    say = progress or (lambda _m: None)
    info = catalog.get(name)
    files = _adapter_files(info)
    require_safetensors(info.path, "adapter")
    if info.kind == FULL:  # already a whole model: copied as it is, nothing to merge
        return _export_checkpoint(info, files, _check_dest(Path(dest), overwrite), base_name, say, started)
    base_path = Path(base_path)
    require_safetensors(base_path, "model")
    dest = _check_dest(Path(dest), overwrite)
    hardware = pick_hardware(None, dtype)
    say(f"Loading the base model from {base_path} ({hardware.dtype_name})...")
    try:
        tokenizer = AutoTokenizer.from_pretrained(base_path)
        model = AutoModelForCausalLM.from_pretrained(base_path, dtype=hardware.dtype, use_safetensors=True)
    except Exception as exc:
        raise ModelError(f"Could not load the base model from {base_path}: {exc}") from exc
    say(f"Merging adapter {name!r} into it...")
    try:
        peft_model = PeftModel.from_pretrained(model, info.path, is_trainable=False)
    except Exception as exc:
        raise ModelError(
            f"Adapter {name!r} does not fit the base model {base_name or base_path}: {exc}. Was it "
            "trained on a different base model?"
        ) from exc
    with torch.no_grad():
        merged = peft_model.merge_and_unload()
    merged.eval()
    say(f"Saving the merged model to {dest}...")
    try:
        with publish_dir(dest) as tmp:
            merged.save_pretrained(tmp)  # transformers 5 always writes safetensors
            tokenizer.save_pretrained(tmp)
            (tmp / "tailor-export.json").write_text(
                json.dumps(
                    {
                        "kind": "merged",
                        "base_model": base_name or str(base_path),
                        "adapter": name,
                        "adapter_version": info.version,
                        "adapter_meta": info.meta,
                        "dtype": hardware.dtype_name,
                        "exported_at": utcnow(),
                    },
                    indent=2,
                )
            )
    except Exception as exc:
        # safetensors reports a full disk as SafetensorError("... (os error 28)"), not OSError
        if isinstance(exc, OSError) or "os error" in str(exc):
            raise write_failed(dest, exc) from exc
        raise
    if not any(dest.glob("*.safetensors")):
        raise ModelError(f"the merged model in {dest} has no safetensors weights")
    n, size = _size(dest)
    say(f"Merged model saved: {n} files, {size / 1e6:.0f} MB.")
    return ExportResult(dest, "merged", n, size, time.perf_counter() - started)


def _export_checkpoint(
    info: AdapterInfo, files: list[Path], dest: Path, base_name: str | None, say: Progress, started: float
) -> ExportResult:
    """A full fine-tuned checkpoint as a merged-model export: its files, and the export's metadata."""
    say(f"Copying the full checkpoint {info.name!r} to {dest}...")
    try:
        with publish_dir(dest) as tmp:
            for f in files:
                target = tmp / f.relative_to(info.path)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, target)
            (tmp / "tailor-export.json").write_text(
                json.dumps(
                    {
                        "kind": "merged",
                        "base_model": base_name or info.meta.get("base_model", ""),
                        "adapter": info.name,
                        "adapter_version": info.version,
                        "adapter_meta": info.meta,
                        "full_checkpoint": True,
                        "exported_at": utcnow(),
                    },
                    indent=2,
                )
            )
    except OSError as exc:
        raise write_failed(dest, exc) from exc
    n, size = _size(dest)
    say(f"Full checkpoint exported: {n} files, {size / 1e6:.0f} MB.")
    return ExportResult(dest, "merged", n, size, time.perf_counter() - started)
