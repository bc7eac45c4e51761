"""Where the chat finds adapters: published LoRA folders in the workspace, and full
fine-tuned checkpoints beside them (offered under their names like adapters; the chat loads
each as a second model, assistant/second_model.py).

The contract with the tuning package (which trains and registers adapters) is the folder,
not its database tables, so the core imports nothing from tuning:

    adapters/<name>/adapter_config.json, adapter_model.safetensors   (PEFT's format)
    adapters/<name>/config.json, *.safetensors, tokenizer files      (a full checkpoint: kind "full")
    adapters/<name>/tailor.json   metadata written at publish time (optional for adapters)
    adapters/ACTIVE               the name the chat uses by default (absent: the base model)

Folders are published by renaming a finished temporary folder into place, so a folder
that exists under its final name is complete."""

from __future__ import annotations

import builtins
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import NotFoundError, ValidationError
from .workspace import write_atomic

BASE = "base"  # the name under which the base model (no adapter) is offered
FULL = "full"  # the kind of a full fine-tuned checkpoint (LoRA adapters are kind "lora")
# fullmatch, not match with "$": "$" also matches before a trailing newline ("x\n" passed)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_adapter_name(name: str) -> str:
    if name == BASE or not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValidationError(f"invalid adapter name {name!r}: use 1-64 letters, digits, '.', '_' or '-', not {BASE!r}")
    return name


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    path: Path
    version: str  # changes whenever the folder is re-published
    meta: dict = field(default_factory=dict)
    kind: str = "lora"  # "lora" (PEFT adapter) or FULL (a whole model folder)


def folder_kind(folder: Path) -> str | None:
    """ "lora", FULL, or None when the folder is neither a PEFT adapter nor a model checkpoint."""
    if (folder / "adapter_config.json").is_file():
        return "lora"
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return FULL
    return None


class AdapterCatalog:
    def __init__(self, adapters_dir: Path):
        self.dir = Path(adapters_dir)

    def list(self) -> list[AdapterInfo]:
        found: list[AdapterInfo] = []
        if not self.dir.is_dir():
            return found
        for folder in sorted(self.dir.iterdir()):
            kind = None if folder.name.startswith(".") else folder_kind(folder)
            if kind is None:
                continue
            meta = {}
            try:
                meta = json.loads((folder / "tailor.json").read_text())
            except (OSError, ValueError):
                pass
            marker = folder / ("adapter_config.json" if kind == "lora" else "config.json")
            found.append(AdapterInfo(folder.name, folder, str(marker.stat().st_mtime_ns), meta, kind))
        return found

    def names(self) -> builtins.list[str]:  # `list` is the method above in this class
        return [a.name for a in self.list()]

    def get(self, name: str) -> AdapterInfo:
        for info in self.list():
            if info.name == name:
                return info
        raise NotFoundError(f"adapter {name!r} does not exist (known: {', '.join(self.names()) or 'none'})")

    def active(self) -> str | None:
        try:
            name = (self.dir / "ACTIVE").read_text().strip()
        except OSError:
            return None
        return name if name and _NAME.fullmatch(name) and folder_kind(self.dir / name) else None

    def set_active(self, name: str | None) -> None:
        if name in (None, "", BASE):
            (self.dir / "ACTIVE").unlink(missing_ok=True)
            return
        self.get(name)
        write_atomic(self.dir / "ACTIVE", name + "\n")
